"""How convolutions are lowered (wasmforge/compiler/conv_lowering.py): the blocked kernel and the
Winograd weight transform against numpy, and a model mixing blocked, Winograd and plain
convolutions built through the real graph and validated against onnxruntime."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wasmforge.compiler import conv_lowering


@pytest.mark.parametrize("in_ch, out_ch, groups, block, want", [
    (64, 128, 1, 16, (16, 16)), (24, 24, 1, 8, (8, 8)),
    (3, 64, 1, 16, (3, 16)), (1, 16, 1, 16, (1, 16)),        # a first convolution: one input block
    (512, 1000, 1, 16, (16, 8)), (64, 24, 1, 16, (16, 8)),   # 16 does not divide: 8, or 4
    (24, 64, 1, 16, (8, 16)), (3, 36, 1, 16, (3, 4)), (20, 20, 1, 16, (4, 4)),
    (64, 30, 1, 16, None), (30, 64, 1, 16, None),            # not even blocks of 4
    (64, 64, 1, 0, None),                                    # blocking off
    (64, 128, 2, 16, (16, 16)), (96, 256, 2, 16, (16, 16)),  # grouped: blocks within a group
    (48, 96, 2, 16, None),      # 24 per group: the producer's 16c would cross a group
    (24, 48, 3, 16, (8, 16)), (3, 63, 3, 16, None), (60, 60, 3, 16, (4, 4)),
    (64, 272, 4, 16, None),     # 68 per group: the 16c of 272 channels would cross a group
    (32, 32, 32, 16, (16, 16)), (24, 24, 24, 16, (8, 8)),  # depthwise
    (16, 32, 16, 16, None), (6, 6, 6, 16, None)])          # with a multiplier; not blocks of 4
def test_channel_blocks(in_ch, out_ch, groups, block, want):
    assert conv_lowering.channel_blocks(in_ch, out_ch, groups, block) == want


def reference_conv(x, w, stride, pads, dilation, groups=1):
    """NCHW x OIHW (I: the channels of a group), written out with numpy: the definition, not
    a library."""
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = stride, pads, dilation
    x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    n, c, h, wd = x.shape
    o, gi, kh, kw = w.shape
    go = o // groups
    oh, ow = (h - (kh - 1) * dh - 1) // sh + 1, (wd - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                patch = x[:, g * gi:(g + 1) * gi, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                          j * dw: j * dw + sw * (ow - 1) + 1: sw]
                out[:, g * go:(g + 1) * go] += np.einsum("nchw,oc->nohw", patch, w[g * go:(g + 1) * go, :, i, j])
    return out


def blocked(x, b):
    """NCHW -> NCHW[b]c."""
    n, c, h, w = x.shape
    return x.reshape(n, c // b, b, h, w).transpose(0, 1, 3, 4, 2).copy()


def run_te(compute, arrays, *args):
    """``compute`` on placeholders shaped as ``arrays``, compiled for the host; its output."""
    import tvm
    from tvm import te

    ph = [te.placeholder(a.shape, name=f"a{i}") for i, a in enumerate(arrays)]
    out = compute(*ph, *args)
    f = tvm.compile(te.create_prim_func([*ph, out]), target="llvm")
    got = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], np.float32))
    f(*[tvm.runtime.tensor(a) for a in arrays], got)
    return got.numpy()


@pytest.mark.parametrize("groups, c, o, b", [(2, 16, 24, 4), (3, 24, 12, 4), (4, 32, 32, 8)])
def test_grouped_blocked_kernel_matches_the_definition(groups, c, o, b):
    rng = np.random.default_rng(groups)
    x = rng.standard_normal((1, c, 7, 7)).astype(np.float32)
    w = rng.standard_normal((o, c // groups, 3, 3)).astype(np.float32)
    wb = w.reshape(o // b, b, c // groups // b, b, 3, 3).transpose(0, 2, 4, 5, 3, 1).copy()   # OIHW[b]i[b]o
    got = run_te(conv_lowering.conv2d_nchwc, [blocked(x, b), wb], (1, 1), (1, 1, 1, 1), (1, 1), groups)
    want = reference_conv(x, w, (1, 1), (1, 1, 1, 1), (1, 1), groups)
    np.testing.assert_allclose(got.transpose(0, 1, 4, 2, 3).reshape(want.shape), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride, pads, dilation", [((1, 1), (1, 1, 1, 1), (1, 1)), ((2, 2), (1, 1, 1, 1), (1, 1)),
                                                     ((1, 1), (2, 2, 2, 2), (2, 2))])
def test_depthwise_blocked_kernel_matches_the_definition(stride, pads, dilation):
    c, b = 16, 8
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, c, 9, 9)).astype(np.float32)
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    wb = w.reshape(c // b, b, 1, 3, 3).transpose(0, 2, 3, 4, 1)[:, :, :, :, None, :].copy()   # OIHW1i[b]o
    got = run_te(conv_lowering.depthwise_conv2d_nchwc, [blocked(x, b), wb], stride, pads, dilation)
    want = reference_conv(x, w, stride, pads, dilation, groups=c)
    np.testing.assert_allclose(got.transpose(0, 1, 4, 2, 3).reshape(want.shape), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride, pads", [((1, 1), (1, 1, 1, 1)), ((2, 2), (0, 1, 2, 0))])
def test_depthwise_schedule_pads_in_parallel_and_matches_the_definition(stride, pads):
    """The depthwise tile with its padded input copied in a parallel loop, the channel
    block's lanes vectorized (``tiles.parallel_padding``), compiled for the host and run."""
    import tvm
    from tvm import te, tirx

    from wasmforge.compiler import depthwise

    c, b = 16, 8
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, c, 10, 10)).astype(np.float32)
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    xb, wb = blocked(x, b), w.reshape(c // b, b, 1, 3, 3).transpose(0, 2, 3, 4, 1)[:, :, :, :, None, :].copy()
    data, kernel = te.placeholder(xb.shape, name="data"), te.placeholder(wb.shape, name="kernel")
    out = conv_lowering.depthwise_conv2d_nchwc(data, kernel, stride, pads, (1, 1))
    mod = tvm.IRModule({"main": te.create_prim_func([data, kernel, out])})
    sch = depthwise.schedule(mod, depthwise.candidate(depthwise.extents(mod)))
    pad_loops = [sch.get(lp) for lp in sch.get_loops(sch.get_sblock("data_pad"))]
    assert [lp.kind for lp in pad_loops] == [tirx.ForKind.PARALLEL, tirx.ForKind.SERIAL, tirx.ForKind.VECTORIZED]
    f = tvm.compile(sch.mod, target="llvm")
    got = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], np.float32))
    f(tvm.runtime.tensor(xb), tvm.runtime.tensor(wb), got)
    want = reference_conv(x, w, stride, pads, (1, 1), groups=c)
    np.testing.assert_allclose(got.numpy().transpose(0, 1, 4, 2, 3).reshape(want.shape), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride, pads, dilation", [((1, 1), (1, 1, 1, 1), (1, 1)),
                                                     ((2, 2), (0, 1, 2, 0), (1, 1)),
                                                     ((1, 2), (2, 2, 2, 2), (2, 2))])
def test_blocked_kernel_matches_the_definition(stride, pads, dilation):
    import tvm
    from tvm import te

    b, c, o, h = 4, 8, 12, 9
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, c, h, h)).astype(np.float32)
    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    xb = x.reshape(1, c // b, b, h, h).transpose(0, 1, 3, 4, 2).copy()        # NCHW4c
    wb = w.reshape(o // b, b, c // b, b, 3, 3).transpose(0, 2, 4, 5, 3, 1).copy()   # OIHW4i4o
    data = te.placeholder(xb.shape, name="data")
    kernel = te.placeholder(wb.shape, name="kernel")
    out = conv_lowering.conv2d_nchwc(data, kernel, stride, pads, dilation)
    f = tvm.compile(te.create_prim_func([data, kernel, out]), target="llvm")
    got = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], np.float32))
    f(tvm.runtime.tensor(xb), tvm.runtime.tensor(wb), got)
    want = reference_conv(x, w, stride, pads, dilation)
    n, oc, oh, ow = want.shape
    got = got.numpy().transpose(0, 1, 4, 2, 3).reshape(n, oc, oh, ow)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_pointwise_tiles_take_whole_rows():
    from wasmforge.compiler import pointwise

    # ShuffleNet's images: 7 rows of 7 (49 pixels, the last vector partial), 2 rows of 14, one of 28
    assert [pointwise.image_rows(n, n) for n in (7, 14, 28, 56)] == [7, 2, 1, 1]
    assert pointwise.image_rows(13, 13) is None            # 13 pixels too few, 169 too many
    ext = {"block": "group_conv2d_nchw", "out": 32, "height": 2, "width": 8, "depth": 8}
    assert pointwise.candidate(ext) == {"block": "group_conv2d_nchw", "rows": 4, "cols": 8}   # one row's vector
    assert pointwise.candidate({**ext, "height": 14, "width": 14})["image_rows"] == 2


@pytest.mark.parametrize("hw, groups", [((7, 7), 4), ((14, 14), 2), ((2, 8), 4), ((4, 12), 1)])
def test_pointwise_schedule_matches_the_definition(hw, groups):
    """The NCHW 1x1 tile, with a ReLU epilogue, on whole rows (49 pixels: a partial last
    vector; 2 rows of 14) and on one row's vector, compiled for the host and run."""
    import tvm
    from tvm import te, topi

    from wasmforge.compiler import pointwise

    c, o = 24, 16
    rng = np.random.default_rng(len(hw) + hw[0])
    x = rng.standard_normal((1, c, *hw)).astype(np.float32)
    w = rng.standard_normal((o, c // groups, 1, 1)).astype(np.float32)
    data, kernel = te.placeholder(x.shape, name="data"), te.placeholder(w.shape, name="kernel")
    conv = topi.nn.group_conv2d_nchw(data, kernel, 1, 0, 1, groups) if groups > 1 else \
        topi.nn.conv2d_nchw(data, kernel, 1, 0, 1)
    out = topi.nn.relu(conv)
    mod = tvm.IRModule({"main": te.create_prim_func([data, kernel, out])})
    cand = pointwise.candidate(pointwise.extents(mod))
    assert ("image_rows" in cand) == (hw[0] * hw[1] >= 24), cand
    f = tvm.compile(pointwise.schedule(mod, cand).mod, target="llvm")
    got = tvm.runtime.tensor(np.zeros((1, o, *hw), np.float32))
    f(tvm.runtime.tensor(x), tvm.runtime.tensor(w), got)
    want = np.maximum(reference_conv(x, w, (1, 1), (0, 0, 0, 0), (1, 1), groups), 0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("hw, pads", [(8, (1, 1, 1, 1)), (7, (1, 1, 1, 1)), (27, (1, 1, 1, 1)), (9, (0, 0, 0, 0))])
def test_winograd_matches_the_definition(hw, pads):
    """F(4x4, 3x3) with the weight transform as the build does it, on sizes that are and are
    not whole tiles (27x27 read past TOPI's padded input until winograd_pad_after: NaNs here,
    a wrong inception_v1 in wasm)."""
    import tvm
    from tvm import te

    c, o = 16, 20
    rng = np.random.default_rng(hw)
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    w_hwio = np.ascontiguousarray(w.transpose(2, 3, 1, 0))   # as the build lays them
    wp = te.placeholder(w_hwio.shape, name="w")
    wt = conv_lowering.winograd_weight(wp)
    f = tvm.compile(te.create_prim_func([wp, wt]), target="llvm")
    wt_np = tvm.runtime.tensor(np.zeros([int(d) for d in wt.shape], np.float32))
    f(tvm.runtime.tensor(w_hwio), wt_np)
    data = te.placeholder(x.shape, name="data")
    wtp = te.placeholder(wt_np.shape, name="wt")
    out = conv_lowering.conv2d_winograd(data, wtp, (1, 1), pads, (1, 1))
    g = tvm.compile(te.create_prim_func([data, wtp, out]), target="llvm")
    got = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], np.float32))
    g(tvm.runtime.tensor(x), wt_np, got)
    want = reference_conv(x, w, (1, 1), pads, (1, 1))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-3 * np.abs(want).max())


@pytest.mark.parametrize("in_hw, pads, want", [
    ((27, 27), (1, 1, 1, 1), (2, 2)), ((28, 28), (1, 1, 1, 1), (1, 1)), ((14, 7), (1, 1, 1, 1), (3, 2)),
    ((9, 9), (0, 0, 0, 0), (1, 1))])
def test_winograd_input_is_padded_to_whole_tiles(in_hw, pads, want):
    pb, pr = conv_lowering.winograd_pad_after(in_hw, pads)
    assert (pb, pr) == want
    oh, ow = in_hw[0] + pads[0] + pads[2] - 2, in_hw[1] + pads[1] + pads[3] - 2
    # the last tile's input rows (tile + 2 of them) end inside the padded input
    assert (-(-oh // 4) - 1) * 4 + 6 <= in_hw[0] + pads[0] + pb
    assert (-(-ow // 4) - 1) * 4 + 6 <= in_hw[1] + pads[1] + pr


@pytest.mark.parametrize("kernel, strides, dilation, groups, in_ch, out_ch, ok", [
    ((3, 3), (1, 1), (1, 1), 1, 64, 64, True), ((3, 3), (2, 2), (1, 1), 1, 64, 64, False),
    ((1, 1), (1, 1), (1, 1), 1, 64, 64, False), ((3, 3), (1, 1), (2, 2), 1, 64, 64, False),
    ((3, 3), (1, 1), (1, 1), 2, 64, 64, False), ((3, 3), (1, 1), (1, 1), 1, 3, 64, False)])
def test_winograd_ok(kernel, strides, dilation, groups, in_ch, out_ch, ok):
    assert conv_lowering.winograd_ok(kernel, strides, dilation, groups, in_ch, out_ch) is ok


def save_classifier(path, name: str, nodes, inits, side: int) -> str:
    """Save a graph of x[1, 3, side, side] -> y[1, 10] (opset 17) at ``path``."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper

    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, side, side])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def make_mixed_onnx(path):
    """stem 3->16 (blocked NCHW3c -> NCHW16c: its 3 channels are one block), 16->32 stride 2 + BN + ReLU (blocked), 1x1
    32->32 + residual (blocked), a grouped dilated conv (blocked, 16 channels a group) and a
    3x3 32->24 conv (Winograd), global pool, gemm, softmax."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(3)

    def w(name, *shape, scale=None):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        return numpy_helper.from_array(rng.normal(0, scale or (2 / fan_in) ** 0.5, shape).astype(np.float32), name)

    inits = [w("W0", 16, 3, 3, 3), w("W1", 32, 16, 3, 3), w("W2", 32, 32, 1, 1), w("W3", 32, 16, 3, 3),
             w("W4", 24, 32, 3, 3), w("G", 10, 24), w("C", 10, scale=0.1),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 32).astype(np.float32), "bn_s"),
             numpy_helper.from_array(rng.normal(0, 0.1, 32).astype(np.float32), "bn_b"),
             numpy_helper.from_array(rng.normal(0, 0.1, 32).astype(np.float32), "bn_m"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 32).astype(np.float32), "bn_v")]
    nodes = [
        helper.make_node("Conv", ["x", "W0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "W1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"]),
        helper.make_node("Relu", ["b1"], ["r1"]),
        helper.make_node("Conv", ["r1", "W2"], ["c2"]),
        helper.make_node("Add", ["c2", "r1"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("Conv", ["r2", "W3"], ["c3"], pads=[2, 2, 2, 2], group=2, dilations=[2, 2]),
        helper.make_node("Conv", ["c3", "W4"], ["c4"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c4"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "G", "C"], ["l"], transB=1),
        helper.make_node("Softmax", ["l"], ["y"], axis=1),
    ]
    return save_classifier(path, "mixed", nodes, inits, side=16)


def test_blocked_and_plain_convolutions_validate_against_onnxruntime(doit, tmp_path):
    make_mixed_onnx(tmp_path / "decls" / "mixed.onnx")
    doit.declare("mixed.toml", 'name = "mixed"\nonnx = "mixed.onnx"\n')
    doit.declare("flat.toml", 'name = "flat"\nonnx = "mixed.onnx"\nconv_block = 0\nwinograd = false\n')
    doit("build:mixed", "build:flat")

    def kernels(name):
        return json.load(open(doit.path(name, "executor", "plan.json")))["kernels"]

    blocked = [k for k in kernels("mixed") if "conv2d_NCHWc" in k]
    winograd = [k for k in kernels("mixed") if "conv2d_winograd" in k]
    plain = [k for k in kernels("mixed") if "conv2d" in k and "NCHWc" not in k and "winograd" not in k]
    assert (len(blocked), len(winograd), len(plain)) == (4, 1, 0), kernels("mixed")
    assert not any("NCHWc" in k or "winograd" in k for k in kernels("flat"))
    # no tuning log: every blocked and Winograd convolution took a default grid schedule
    # (microkernel.apply_default_schedules); of the flat build's plain ones, the 1x1 took a
    # register tile (compiler/pointwise.py), the 3x3 ones nothing
    defaults = {}
    for name in ("mixed", "flat"):
        with open(doit.path(name, "relax_build", "stage.json")) as f:
            defaults[name] = set(json.load(f)["result"]["default_schedules"])
    assert defaults["mixed"] == set(blocked + winograd), defaults
    assert len(defaults["flat"]) == 1 and defaults["flat"] <= set(kernels("flat")), defaults
    for name in ("mixed", "flat"):
        report = json.load(open(doit.path(name, "report.json")))
        assert report["passed"] is True, report
        assert all(r["outputs"]["y"]["top1_equal"] for r in report["inputs"])
    # the weights were re-laid at build time, not stored twice, and Winograd's 6x6 transformed
    # weights are made in the module, once: the blocked build carries the flat one's bytes
    plans = {n: json.load(open(doit.path(n, "executor", "plan.json"))) for n in ("mixed", "flat")}
    assert plans["mixed"]["weights_bytes"] == plans["flat"]["weights_bytes"]
    assert plans["mixed"]["once_calls"] == 1 and plans["mixed"]["calls"][0]["kernel"].startswith("winograd_weight")
    assert plans["mixed"]["persistent_bytes"] == 36 * 24 * 32 * 4
    assert plans["flat"]["once_calls"] == 0


def make_mobile_onnx(path):
    """A MobileNet's pieces: ReLU6 as Clip, depthwise 3x3 convolutions (stride 1 and 2, on
    16 and 24 channels: blocks of 16 and 8), a grouped convolution (2 groups of 16), a
    grouped 1x1 one that stays NCHW (4 groups of 8), an inverted residual, global pool, gemm."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(4)
    inits, nodes = [], []

    def conv(x, out, cin, cout, k=1, stride=1, groups=1, relu6=True):
        w = rng.normal(0, (2 / (cin // groups * k * k)) ** 0.5, (cout, cin // groups, k, k)).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, out + "_w"),
                      numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), out + "_b")])
        nodes.append(helper.make_node("Conv", [x, out + "_w", out + "_b"], [out + ("_c" if relu6 else "")],
                                      pads=[k // 2] * 4, strides=[stride] * 2, group=groups))
        if relu6:
            nodes.append(helper.make_node("Clip", [out + "_c", "zero", "six"], [out]))
        return out

    inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"),
              numpy_helper.from_array(np.array(6, np.float32), "six")]
    x = conv("x", "stem", 3, 16, k=3, stride=2)
    x = conv(x, "dw1", 16, 16, k=3, groups=16)
    x = conv(x, "pw1", 16, 32, relu6=False)
    x = conv(x, "gr", 32, 32, k=3, groups=2)
    x = conv(x, "pw2", 32, 24, groups=4)      # 8 channels a group: stays NCHW (16c would cross groups)
    h = conv(x, "dw2", 24, 24, k=3, groups=24)
    h = conv(h, "pw3", 24, 24, relu6=False)
    nodes.append(helper.make_node("Add", [x, h], ["res"]))
    x = conv("res", "dw3", 24, 24, k=3, stride=2, groups=24)
    nodes += [helper.make_node("GlobalAveragePool", [x], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "G"], ["y"], transB=1)]
    inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (10, 24)).astype(np.float32), "G"))
    return save_classifier(path, "mobile", nodes, inits, side=32)


def test_depthwise_grouped_and_relu6_take_default_schedules_and_validate(doit, tmp_path):
    """Depthwise and grouped convolutions are blocked and register-tiled by rule
    (``compiler/depthwise.py``, ``microkernel``), a grouped 1x1 left NCHW too
    (``compiler/pointwise.py``), ReLU6 fuses into them (no kernel of its own), and the module
    agrees with onnxruntime on 1 and 2 threads."""
    make_mobile_onnx(tmp_path / "decls" / "mobile.onnx")
    doit.declare("mobile.toml", 'name = "mobile"\nonnx = "mobile.onnx"\n')
    doit("build:mobile")
    kernels = json.load(open(doit.path("mobile", "executor", "plan.json")))["kernels"]
    with open(doit.path("mobile", "relax_build", "stage.json")) as f:
        defaults = set(json.load(f)["result"]["default_schedules"])
    depthwise = [k for k in kernels if "depthwise_conv2d_NCHWc" in k]
    blocked = [k for k in kernels if "conv2d_NCHWc" in k and k not in depthwise]
    plain = [k for k in kernels if "conv2d" in k and "NCHWc" not in k]
    assert len(set(depthwise)) == 3 and len(set(blocked)) == 4 and len(set(plain)) == 1, kernels
    assert set(depthwise + blocked + plain) <= defaults
    assert all("maximum" in k and "minimum" in k for k in depthwise), depthwise   # ReLU6 fused
    assert not [k for k in kernels if k.startswith(("maximum", "minimum", "fused_maximum"))], kernels
    assert len([k for k in kernels if "layout_transform" in k]) <= 4, kernels   # in, out; around the NCHW one
    for report in ("report.json", "report.threads.json"):
        assert json.load(open(doit.path("mobile", report)))["passed"] is True
