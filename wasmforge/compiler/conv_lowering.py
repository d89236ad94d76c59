"""How the relax_build stage lowers convolutions: a blocked layout, and Winograd for 3x3.

**Blocked layout**: NCHW[b]c activations, OIHW[b]i[b]o weights (a first convolution with
fewer than ``b`` input channels reads NCHW[c]c, all its channels as one block; channel counts
that ``b`` does not divide take blocks of b/2 or b/4, ``channel_blocks``). With NCHW,
a convolution can vectorize only along the image width: stride-2 and 1x1 convolutions then
load strided or short vectors. In the blocked layout the innermost axis of the output, and
of the weights, is ``b`` consecutive output channels, so each input value is broadcast
once and multiplied into whole weight vectors, and the ``b`` x ``b`` weight block one step
of the reduction reads is contiguous (TVM's x86 NCHWc layout). ``ConvertLayout`` re-lays
every convolution that qualifies (``channel_blocks``) and carries the layout through the
elementwise ops, pools and adds between them; a layout transform appears only where a run
of blocked ops begins or ends. ``conv2d_nchwc`` computes it with one reduction axis per
loop a schedule may want to split, and no index division for MetaSchedule to see through.

**Winograd** F(4x4, 3x3) for 3x3 stride-1 convolutions (``winograd_ok``): 36 multiplies per
4x4 output tile and input channel instead of 144. They stay NCHW and are lowered to TOPI's
``conv2d_winograd_nchw`` compute with separable transforms (``conv2d_winograd``). The weight
transform G w G^T (``winograd_weight``) is its own kernel, and it runs in the module, not at
build time: its 6x6 result is four times the 3x3 filter, and stored in the module it would
double ResNet-50's size. Its argument goes through ``stop_lift_params``, which FoldConstant
cannot see through; the executor stage runs such a kernel, whose inputs are all constants,
once per instance (``executor.extract``: a once-call), into memory no other tensor shares.

Blocked weights are re-laid at build time (FoldConstant): the same bytes in another order.
"""
from __future__ import annotations

import re

OP = "relax.nn.conv2d"
DEPTHWISE_BLOCK = "depthwise_conv2d_NCHWc"
_BLOCKED = re.compile(r"NCHW(\d+)c")
WINOGRAD_TILE = 4            # F(4x4, 3x3): alpha = 6
WINOGRAD_MIN_CHANNELS = 16   # below this the transforms cost more than the multiplies saved


def layouts(block: int, in_block: int | None = None, depthwise: bool = False) -> list[str]:
    """ConvertLayout's desired layouts (data, weight, output) for a channel block; the input
    channels' block is ``in_block`` when it differs (``channel_blocks``). A depthwise
    convolution's weights have one input channel: ``OIHW1i<b>o``."""
    if not block:
        return ["NCHW", "OIHW", "NCHW"]
    ib = in_block or block
    return [f"NCHW{ib}c", f"OIHW{1 if depthwise else ib}i{block}o", f"NCHW{block}c"]


def is_depthwise(in_channels: int, out_channels: int, groups: int) -> bool:
    """One group per channel, one output channel per input channel."""
    return groups > 1 and groups == in_channels == out_channels


def channel_blocks(in_channels: int, out_channels: int, groups: int, block: int) -> tuple[int, int] | None:
    """The (input, output) channel blocks a convolution takes, or None to stay NCHW.

    Whole blocks of ``block`` channels where they divide; else blocks of ``block`` / 2 or / 4
    (at least 4: one vector), e.g. a classifier's 1000 output channels in blocks of 8. A
    convolution with fewer input channels than a block (a network's first, on RGB) takes them
    all as one block, NCHW<in>c. Every tensor takes the largest block that divides its
    channels, so a tensor's producer and its readers agree on it (TVM cannot re-block 16c as
    8c); a grouped convolution stays NCHW where that block would cross a group, and a
    depthwise one (``is_depthwise``) takes the same block for its input and output. Depthwise
    with a channel multiplier stays NCHW."""
    if block <= 0 or groups < 1 or in_channels % groups or out_channels % groups:
        return None
    sizes = [b for b in (block, block // 2, block // 4) if b >= 4]
    if is_depthwise(in_channels, out_channels, groups):
        fit = [b for b in sizes if in_channels % b == 0]
        return (fit[0], fit[0]) if fit else None
    if groups > 1 and in_channels // groups == 1:
        return None
    outs = [b for b in sizes if out_channels % b == 0]
    ins = [in_channels] if groups == 1 and in_channels < block else [b for b in sizes if in_channels % b == 0]
    if not ins or not outs:
        return None
    # every tensor takes the largest block that divides its channels, whoever makes or reads
    # it; in a grouped convolution, that block must not cross a group
    if (in_channels // groups) % ins[0] or (out_channels // groups) % outs[0]:
        return None
    return ins[0], outs[0]


def winograd_ok(kernel: tuple[int, int], strides, dilation, groups: int, in_channels: int,
                out_channels: int) -> bool:
    return (tuple(kernel) == (3, 3) and all(int(s) == 1 for s in strides) and all(int(d) == 1 for d in dilation)
            and groups == 1 and min(in_channels, out_channels) >= WINOGRAD_MIN_CHANNELS)


def _shape(expr) -> list[int]:
    return [int(x) for x in list(expr.ty.shape)]


def _winograd_call(call) -> bool:
    a = call.attrs
    w = _shape(call.args[1])
    return winograd_ok((w[2], w[3]), a.strides, a.dilation, int(a.groups), w[1] * int(a.groups), w[0])


def _choose(block: int, winograd: bool):
    def choose(call) -> dict:
        if call.op.name != OP:
            return {}
        a = call.attrs
        in_ch, out_ch = _shape(call.args[0])[1], _shape(call.args[1])[0]
        plain = a.data_layout == "NCHW" and a.kernel_layout == "OIHW" and not (winograd and _winograd_call(call))
        if plain and (blocks := channel_blocks(in_ch, out_ch, int(a.groups), block)):
            return {OP: layouts(blocks[1], in_block=blocks[0], depthwise=is_depthwise(in_ch, out_ch, int(a.groups)))}
        # a convolution left out must say NCHW explicitly: with no entry, ConvertLayout would
        # try to keep its producer's blocked layout and fail
        return {OP: layouts(0)}
    return choose


def _padded_size(data, kernel_hw, strides, padding, dilation):
    """(possibly padded data, oh, ow) of a blocked convolution's input [n, C/b, h, w, b]."""
    from tvm import topi

    ih, iw = (int(x) for x in data.shape[2:4])
    (kh, kw), (sh, sw), (dh, dw) = kernel_hw, (int(s) for s in strides), (int(d) for d in dilation)
    pt, pl, pb, pr = (int(p) for p in padding)
    oh = (ih + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (iw + pl + pr - (kw - 1) * dw - 1) // sw + 1
    if pt or pl or pb or pr:
        data = topi.nn.pad(data, (0, 0, pt, pl, 0), (0, 0, pb, pr, 0), name="data_pad")
    return data, oh, ow


def depthwise_conv2d_nchwc(data, kernel, strides, padding, dilation):
    """Depthwise: data [n, C/b, h, w, b] (x) kernel [C/b, 1, kh, kw, 1, b] -> [n, C/b, oh, ow, b];
    each of a block's ``b`` lanes is one channel, so the lanes are the vector."""
    from tvm import te

    n, chunks, _, _, lanes = (int(x) for x in data.shape)
    kh, kw = (int(x) for x in kernel.shape[2:4])
    (sh, sw), (dh, dw) = (int(s) for s in strides), (int(d) for d in dilation)
    data, oh, ow = _padded_size(data, (kh, kw), strides, padding, dilation)
    rh = te.reduce_axis((0, kh), name="rh")
    rw = te.reduce_axis((0, kw), name="rw")
    return te.compute(
        (n, chunks, oh, ow, lanes),
        lambda b, c, y, x, j: te.sum(data[b, c, y * sh + rh * dh, x * sw + rw * dw, j] * kernel[c, 0, rh, rw, 0, j],
                                     axis=[rh, rw]),
        name=DEPTHWISE_BLOCK)


def conv2d_nchwc(data, kernel, strides, padding, dilation, groups: int = 1):
    """data [n, C/b, h, w, b] (x) kernel [O/b', C/g/b, kh, kw, b, b'] -> [n, O/b', oh, ow, b'];
    with ``groups`` > 1, output block ``oc`` reads its group's input blocks only."""
    from tvm import te

    n, in_block = int(data.shape[0]), int(data.shape[4])
    out_chunks, group_in_chunks, kh, kw, _, out_block = (int(x) for x in kernel.shape)
    (sh, sw), (dh, dw) = (int(s) for s in strides), (int(d) for d in dilation)
    data, oh, ow = _padded_size(data, (kh, kw), strides, padding, dilation)
    rc = te.reduce_axis((0, group_in_chunks), name="rc")
    rh = te.reduce_axis((0, kh), name="rh")
    rw = te.reduce_axis((0, kw), name="rw")
    rb = te.reduce_axis((0, in_block), name="rb")
    group_out_chunks = out_chunks // groups

    def in_chunk(oc):   # input block rc of output block oc's group
        return rc if groups == 1 else oc // group_out_chunks * group_in_chunks + rc

    return te.compute(
        (n, out_chunks, oh, ow, out_block),
        lambda b, oc, y, x, ob: te.sum(
            data[b, in_chunk(oc), y * sh + rh * dh, x * sw + rw * dw, rb] * kernel[oc, rc, rh, rw, rb, ob],
            axis=[rc, rh, rw, rb]),
        name="conv2d_NCHWc")


def winograd_weight(weight_hwio, tile: int = WINOGRAD_TILE):
    """3x3 weights laid HWIO -> G w G^T, laid [alpha, alpha, I, O] as TOPI's pre-computed
    Winograd compute reads them. It runs in the module, once per instance: the nine terms
    are written out, so the kernel has no reduction, and along O, its innermost axis, every
    load and store is contiguous (the weights come HWIO for that): the default schedules
    vectorize it and split it across cores."""
    from tvm import te
    from tvm.topi.nn.winograd_util import winograd_transform_matrices

    _, _, g = winograd_transform_matrices(tile, 3, "float32")
    in_ch, out_ch = int(weight_hwio.shape[2]), int(weight_hwio.shape[3])
    alpha = tile + 2

    def value(e, v, i, o):
        terms = [weight_hwio[rh, rw, i, o] * g[e, rh] * g[v, rw] for rh in range(3) for rw in range(3)]
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total

    return te.compute((alpha, alpha, in_ch, out_ch), value, name="winograd_weight")


def winograd_pad_after(in_hw: tuple[int, int], padding, tile: int = WINOGRAD_TILE) -> tuple[int, int]:
    """The bottom and right padding the Winograd compute reads: every output tile reads
    tile + 2 input rows and columns, the last, partial tile too, so the input is padded to
    whole tiles (TOPI pads only by the convolution's padding, and its last partial tile read
    past the padded input: NaNs natively, a wrong inception_v1 in wasm)."""
    pt, pl, pb, pr = (int(p) for p in padding)
    oh, ow = in_hw[0] + pt + pb - 2, in_hw[1] + pl + pr - 2
    return pb + (-oh) % tile, pr + (-ow) % tile


def conv2d_winograd(data, weight_t, strides, padding, dilation, tile: int = WINOGRAD_TILE):
    """TOPI's ``_conv2d_winograd_nchw_impl`` (pre-computed weights [alpha, alpha, I, O]), with
    two changes: the input is padded to whole tiles (``winograd_pad_after``), and both
    transforms are separable, one matrix at a time.

    TOPI computes each transformed value as one sum over the whole 6x6 tile, ``B^T d B`` as
    ``sum over a, b of d[a, b] B[a, e] B[b, n]``: with B's zeros folded, 22 x 22 = 484
    multiply-adds per tile and channel (the inverse: 18 x 18 = 324). Here ``B^T d`` comes
    first (``data_pack_rows``, 6 columns of 22) and then ``(B^T d) B`` (``data_pack``, 6 rows
    of 22): 264, and 180 for the inverse (``inverse_rows`` then ``inverse``). In wasm, on
    ResNet-50's four Winograd shapes with the same GEMM schedule, the kernel took 0.58-0.96
    of TOPI's time (``docs/perf-journal.md``, separable Winograd transforms). The blocks carry no MetaSchedule
    ``schedule_rule``: its Winograd rules expect TOPI's one-sum blocks; ``microkernel``'s grid
    schedules these."""
    from tvm import te, topi
    from tvm.topi.nn.winograd_util import winograd_transform_matrices

    assert all(int(s) == 1 for s in strides) and all(int(d) == 1 for d in dilation)
    n, ci, h, w = (int(x) for x in data.shape)
    alpha, _, _, co = (int(x) for x in weight_t.shape)
    assert alpha == tile + 2
    pt, pl, pb, pr = (int(p) for p in padding)
    oh, ow = h + pt + pb - 2, w + pl + pr - 2
    nh, nw = -(-oh // tile), -(-ow // tile)
    tiles = n * nh * nw
    data_pad = topi.nn.pad(data, (0, 0, pt, pl), (0, 0, *winograd_pad_after((h, w), padding, tile)), name="data_pad")
    a_m, b_m, _ = winograd_transform_matrices(tile, 3, "float32")
    input_tile = te.compute(
        (ci, tiles, alpha, alpha),
        lambda c, p, eps, nu: data_pad[p // (nh * nw), c, ((p // nw) % nh) * tile + eps, (p % nw) * tile + nu],
        name="input_tile")

    def axis(name, extent=alpha):
        return te.reduce_axis((0, extent), name)

    r = axis("r_a")
    rows = te.compute((alpha, alpha, ci, tiles),         # [eps, column, c, p]: B^T d
                      lambda eps, col, c, p: te.sum(input_tile[c, p, r, col] * b_m[r, eps], axis=[r]),
                      name="data_pack_rows")
    r = axis("r_b")
    data_pack = te.compute((alpha, alpha, ci, tiles),    # (B^T d) B
                           lambda eps, nu, c, p: te.sum(rows[eps, r, c, p] * b_m[r, nu], axis=[r]),
                           name="data_pack")
    rc = axis("ci", ci)
    bgemm = te.compute(
        (alpha, alpha, co, tiles),
        lambda eps, nu, o, p: te.sum(data_pack[eps, nu, rc, p] * weight_t[eps, nu, rc, o], axis=[rc]),
        name="bgemm", attrs={"layout_free_placeholders": [weight_t]})
    r = axis("r_a")
    inv_rows = te.compute((tile, alpha, co, tiles),      # [vh, column, o, p]: A^T m
                          lambda vh, col, o, p: te.sum(bgemm[r, col, o, p] * a_m[r, vh], axis=[r]),
                          name="inverse_rows")
    r = axis("r_b")
    inverse = te.compute((co, tiles, tile, tile),        # (A^T m) A
                         lambda o, p, vh, vw: te.sum(inv_rows[vh, r, o, p] * a_m[r, vw], axis=[r]),
                         name="inverse")
    return te.compute(
        (n, co, oh, ow),
        lambda b, o, y, x: inverse[o, b * nh * nw + (y // tile) * nw + (x // tile), y % tile, x % tile],
        name="conv2d_winograd")


def legalizer(winograd: bool):
    """The LegalizeOps entry for conv2d: blocked convolutions and Winograd here, anything
    else as TVM does."""
    def legalize(bb, call):
        import tvm

        a = call.attrs
        bi, bo = _BLOCKED.fullmatch(str(a.data_layout)), _BLOCKED.fullmatch(str(a.out_layout))
        groups = int(a.groups)
        if bi and bo and str(a.kernel_layout) == f"OIHW{bi.group(1)}i{bo.group(1)}o":
            if groups == 1:
                return bb.call_te(conv2d_nchwc, call.args[0], call.args[1], a.strides, a.padding, a.dilation,
                                  primfunc_name_hint="conv2d_NCHWc")
            return bb.call_te(conv2d_nchwc, call.args[0], call.args[1], a.strides, a.padding, a.dilation, groups,
                              primfunc_name_hint="conv2d_NCHWc")
        if bi and bo and bi.group(1) == bo.group(1) and str(a.kernel_layout) == f"OIHW1i{bo.group(1)}o":
            return bb.call_te(depthwise_conv2d_nchwc, call.args[0], call.args[1], a.strides, a.padding,
                              a.dilation, primfunc_name_hint=DEPTHWISE_BLOCK)
        if (winograd and str(a.data_layout) == "NCHW" and str(a.kernel_layout) == "OIHW" and str(a.out_layout) == "NCHW"
                and _winograd_call(call) and call.args[0].ty.dtype == "float32"):
            from tvm import relax, topi

            # HWIO at build time (FoldConstant), then hidden from FoldConstant: the transform
            # runs once per instance (module docstring)
            hwio = bb.emit_te(topi.transpose, call.args[1], [2, 3, 1, 0], primfunc_name_hint="weight_hwio")
            kept = bb.emit(relax.op.builtin.stop_lift_params(hwio))
            w = bb.emit_te(winograd_weight, kept, primfunc_name_hint="winograd_weight")
            return bb.call_te(conv2d_winograd, call.args[0], w, a.strides, a.padding, a.dilation,
                              primfunc_name_hint="conv2d_winograd")
        return tvm.ir.Op.get(OP).get_attr("FLegalize")(bb, call)
    return legalize


def remove_inference_dropout():
    """Dropout is the identity at inference; its (output, mask) tuple would stop
    ConvertLayout (which cannot carry a layout through a tuple), so uses of its output read
    its input instead, and DeadCodeElimination drops it."""
    import tvm
    from tvm import relax

    dropout = tvm.ir.Op.get("relax.nn.dropout")

    @relax.expr_functor.mutator
    class Bypass(relax.PyExprMutator):
        def visit_tuple_getitem_(self, op):
            tup = op.tuple_value
            if isinstance(tup, relax.Var):
                tup = self.lookup_binding(tup)
            if op.index == 0 and isinstance(tup, relax.Call) and tup.op.same_as(dropout):
                return self.visit_expr(tup.args[0])
            return super().visit_tuple_getitem_(op)

    @tvm.transform.module_pass(opt_level=0, name="RemoveInferenceDropout")
    def run(mod, ctx):
        for gv, f in list(mod.functions.items()):
            if isinstance(f, relax.Function):
                mod[gv] = Bypass(mod).visit_expr(f)
        return mod

    return run


def passes(block: int, winograd: bool) -> list:
    """Re-lay the convolutions (nothing when ``block`` is 0): to run before LegalizeOps, with
    ``legalizer(winograd)`` given to LegalizeOps."""
    if not block:
        return []
    from tvm import relax

    t = relax.transform
    return [remove_inference_dropout(), t.DeadCodeElimination(),
            t.ConvertLayout({OP: layouts(block)}, _choose(block, winograd)), t.Normalize()]


def pass_names(block: int, winograd: bool) -> list[str]:
    return (["RemoveInferenceDropout", "DeadCodeElimination", f"ConvertLayout(NCHW{block}c or /2, /4, grouped, depthwise{', not Winograd' if winograd else ''})",
             "Normalize"] if block else []) + \
        [f"LegalizeOps(conv_lowering, winograd={'F(%dx%d,3x3)' % (WINOGRAD_TILE, WINOGRAD_TILE) if winograd else 'off'})"]
