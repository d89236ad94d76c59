"""Blocked convolution layout for the relax_build stage: NCHW[b]c activations, OIHW[b]i[b]o weights.

With NCHW, a convolution can vectorize only along the image width: stride-2 and 1x1
convolutions then load strided or short vectors. In the blocked layout the innermost axis
of the output, and of the weights, is ``b`` consecutive output channels, so each input value
is broadcast once and multiplied into whole weight vectors, and the ``b`` x ``b`` weight block
one step of the reduction reads is contiguous (TVM's x86 NCHWc layout). The weights are re-laid at build
time (FoldConstant folds their ``layout_transform``), so no inference pays for it.

``ConvertLayout`` re-lays every convolution that qualifies (see ``blockable``) and carries the
layout through the elementwise ops, pools and adds between them; a layout transform appears
only where a graph enters or leaves a run of blocked ops. The blocked convolution is lowered
by ``conv2d_nchwc`` below: one reduction axis per loop the schedule may want to split
(input-channel block, position in the block, kernel rows and columns), with no index
division for MetaSchedule to see through.
"""
from __future__ import annotations

import re

OP = "relax.nn.conv2d"
_BLOCKED = re.compile(r"NCHW(\d+)c")


def layouts(block: int) -> list[str]:
    """ConvertLayout's desired layouts (data, weight, output) for a channel block."""
    return [f"NCHW{block}c", f"OIHW{block}i{block}o", f"NCHW{block}c"] if block else ["NCHW", "OIHW", "NCHW"]


def blockable(in_channels: int, out_channels: int, groups: int, block: int) -> bool:
    """Whether a convolution can take the blocked layout: whole blocks of input and output
    channels, no groups (a group boundary inside a block would mix groups)."""
    return block > 0 and groups == 1 and in_channels % block == 0 and out_channels % block == 0


def _choose(block: int):
    def choose(call) -> dict:
        if call.op.name != OP:
            return {}
        in_ch = int(call.args[0].ty.shape[1])
        out_ch = int(call.args[1].ty.shape[0])
        ok = (call.attrs.data_layout == "NCHW" and call.attrs.kernel_layout == "OIHW"
              and blockable(in_ch, out_ch, int(call.attrs.groups), block))
        # a convolution left out must say NCHW explicitly: with no entry, ConvertLayout would
        # try to keep its producer's blocked layout and fail
        return {OP: layouts(block if ok else 0)}
    return choose


def conv2d_nchwc(data, kernel, strides, padding, dilation):
    """data [n, C/b, h, w, b] (x) kernel [O/b', C/b, kh, kw, b, b'] -> [n, O/b', oh, ow, b']."""
    from tvm import te, topi

    n, in_chunks, ih, iw, in_block = (int(x) for x in data.shape)
    out_chunks, _, kh, kw, _, out_block = (int(x) for x in kernel.shape)
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilation)
    pt, pl, pb, pr = (int(p) for p in padding)
    oh = (ih + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (iw + pl + pr - (kw - 1) * dw - 1) // sw + 1
    if pt or pl or pb or pr:
        data = topi.nn.pad(data, (0, 0, pt, pl, 0), (0, 0, pb, pr, 0), name="data_pad")
    rc = te.reduce_axis((0, in_chunks), name="rc")
    rh = te.reduce_axis((0, kh), name="rh")
    rw = te.reduce_axis((0, kw), name="rw")
    rb = te.reduce_axis((0, in_block), name="rb")
    return te.compute(
        (n, out_chunks, oh, ow, out_block),
        lambda b, oc, y, x, ob: te.sum(
            data[b, rc, y * sh + rh * dh, x * sw + rw * dw, rb] * kernel[oc, rc, rh, rw, rb, ob],
            axis=[rc, rh, rw, rb]),
        name="conv2d_NCHWc")


def legalize_conv2d(bb, call):
    """LegalizeOps entry for conv2d: the blocked layout here, anything else as TVM does."""
    import tvm

    a = call.attrs
    m = _BLOCKED.fullmatch(str(a.data_layout))
    if not (m and str(a.out_layout) == str(a.data_layout) and str(a.kernel_layout) == f"OIHW{m.group(1)}i{m.group(1)}o"):
        return tvm.ir.Op.get(OP).get_attr("FLegalize")(bb, call)
    return bb.call_te(conv2d_nchwc, call.args[0], call.args[1], a.strides, a.padding, a.dilation,
                      primfunc_name_hint="conv2d_NCHWc")


def passes(block: int) -> list:
    """Re-lay the convolutions (nothing when ``block`` is 0): to run before LegalizeOps, with
    ``legalize_conv2d`` given to LegalizeOps."""
    if not block:
        return []
    from tvm import relax

    t = relax.transform
    return [t.ConvertLayout({OP: layouts(block)}, _choose(block)), t.Normalize()]


def pass_names(block: int) -> list[str]:
    return [f"ConvertLayout(NCHW{block}c)", "Normalize"] if block else []
