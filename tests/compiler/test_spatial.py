"""The parallel default schedule of kernels with no product (wasmforge/compiler/spatial.py):
which kernels it takes, and element-wise chains, concatenations, layout transforms, a pool
and softmax scheduled by it, compiled for the host and run against numpy."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import run_on_host as run

from wasmforge.compiler import spatial


def kernel(inputs, out):
    import tvm
    from tvm import te

    return tvm.IRModule({"main": te.create_prim_func([*inputs, out])})


def test_products_and_small_kernels_are_not_taken():
    from tvm import te, topi

    a, b = te.placeholder((256, 512), name="a"), te.placeholder((512, 512), name="b")
    assert spatial.default_candidate(kernel([a, b], topi.nn.matmul(a, b))) is None     # a product
    small = te.placeholder((1, 4, 16, 16), name="s")
    assert spatial.default_candidate(kernel([small], topi.nn.relu(small))) is None     # 1024 elements
    x = te.placeholder((1, 32, 64, 64), name="x")
    assert spatial.default_candidate(kernel([x], topi.nn.relu(x)))[0] == {"vectorize": True}
    assert spatial.default_candidate(kernel([x], topi.nn.softmax(x)))[0] == {"vectorize": False}
    # a layer norm's variance reads the mean too, but not along its reduction: not a product
    rows, g, b = te.placeholder((1, 128, 256), name="rows"), te.placeholder((256,), name="g"), \
        te.placeholder((256,), name="b")
    assert spatial.default_candidate(kernel([rows, g, b], topi.nn.layer_norm(rows, g, b, axis=[-1])))[0] == \
        {"vectorize": False}


def test_a_nest_that_takes_no_whole_vectors_runs_parallel_with_scalar_inner_loops():
    from tvm import te, tirx, topi

    odd = te.placeholder((1, 32, 31, 30), name="odd")    # images of 31 x 30: no whole vectors
    mod = kernel([odd], topi.nn.relu(odd))
    cand, schedule = spatial.default_candidate(mod)
    sch = schedule(mod, cand)
    kinds = [sch.get(lp).kind for lp in sch.get_loops(sch.get_sblock("compute"))]
    assert tirx.ForKind.PARALLEL in kinds and tirx.ForKind.VECTORIZED not in kinds
    xv = np.random.default_rng(3).standard_normal((1, 32, 31, 30)).astype(np.float32)
    np.testing.assert_allclose(run(sch.mod, [xv], xv.shape), np.maximum(xv, 0))


@pytest.mark.parametrize("name", ["elementwise", "concatenate", "layout_transform", "max_pool", "softmax",
                                  "fast_softmax", "shuffle", "small_images"])
def test_scheduled_kernels_match_numpy(name):
    from tvm import te, topi

    rng = np.random.default_rng(7)
    shape = (1, 32, 14, 14) if name in ("shuffle", "small_images") else (1, 32, 64, 64)
    x = te.placeholder(shape, name="x")
    xv = rng.standard_normal(shape).astype(np.float32)
    if name == "elementwise":      # a batch norm's scale and shift, then ReLU
        s = te.placeholder((1, 32, 1, 1), name="s")
        sv = rng.standard_normal((1, 32, 1, 1)).astype(np.float32)
        inputs, out, arrays = [x, s], topi.nn.relu(topi.add(topi.multiply(x, s), s)), [xv, sv]
        want = np.maximum(xv * sv + sv, 0)
    elif name == "concatenate":
        y = te.placeholder((1, 8, 64, 64), name="y")
        yv = rng.standard_normal((1, 8, 64, 64)).astype(np.float32)
        inputs, out, arrays = [x, y], topi.concatenate([x, y], axis=1), [xv, yv]
        want = np.concatenate([xv, yv], axis=1)
    elif name == "layout_transform":   # NCHW -> NCHW8c
        inputs, out, arrays = [x], topi.layout_transform(x, "NCHW", "NCHW8c"), [xv]
        want = xv.reshape(1, 4, 8, 64, 64).transpose(0, 1, 3, 4, 2)
    elif name == "max_pool":           # 3x3, stride 2, padded
        inputs, arrays = [x], [xv]
        out = topi.nn.pool2d(x, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), "max", layout="NCHW")
        padded = np.pad(xv, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
        want = np.max([padded[:, :, i:i + 64:2, j:j + 64:2] for i in range(3) for j in range(3)], axis=0)
    elif name == "shuffle":            # ShuffleNet's channel shuffle: reshape, transpose, reshape
        inputs, arrays = [x], [xv]
        out = topi.reshape(topi.transpose(topi.reshape(x, (1, 4, 8, 14, 14)), (0, 2, 1, 3, 4)), shape)
        want = xv.reshape(1, 4, 8, 14, 14).transpose(0, 2, 1, 3, 4).reshape(shape)
    elif name == "small_images":       # rows of 14: the image's rows and columns fused, 196
        inputs, out, arrays = [x], topi.nn.relu(x), [xv]
        want = np.maximum(xv, 0)
    else:                              # TVM's softmax, and ours with a polynomial exp
        from wasmforge.compiler import softmax

        out = topi.nn.softmax(x, axis=-1) if name == "softmax" else softmax.softmax(x, -1)
        inputs, arrays = [x], [xv]
        e = np.exp(xv - xv.max(axis=-1, keepdims=True))
        want = e / e.sum(axis=-1, keepdims=True)
    mod = kernel(inputs, out)
    cand, schedule = spatial.default_candidate(mod)
    scheduled = schedule(mod, cand).mod
    assert scheduled.script().count("T.parallel(") >= 1
    assert "T.vectorized(" in scheduled.script()   # a pool's along its columns; a softmax's exp and division
    blocks = [ln for ln in scheduled.script().splitlines() if "T.sblock(" in ln and '"root"' not in ln]
    if name == "fast_softmax":         # x - max inlined into the exp; no call of expf left
        assert len(blocks) == 4 and "T.exp(" not in scheduled.script(), blocks
    if name == "shuffle":              # one copy, not three passes
        assert len(blocks) == 1, blocks
    np.testing.assert_allclose(run(scheduled, arrays, want.shape), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, stride, kind, layout", [
    ((1, 512, 13, 13), 1, "max", "NCHW"),       # Inception's: columns that take no whole vectors
    ((1, 128, 53, 53), 2, "max", "NCHW"),       # 27 columns (SqueezeNet: 55 x 55 unpadded): the window innermost
    ((1, 64, 56, 56), 2, "max", "NCHW"),
    ((1, 4, 28, 28, 16), 2, "max", "NCHW16c"),  # the window inside, the channel block innermost
    ((1, 32, 28, 28), 1, "avg", "NCHW"),
])
def test_a_pools_window_goes_inside_its_columns(shape, stride, kind, layout):
    from tvm import te, topi

    x = te.placeholder(shape, name="x")
    xv = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    out = topi.nn.pool2d(x, (3, 3), (stride, stride), (1, 1), (1, 1, 1, 1), kind, layout=layout,
                         count_include_pad=False)
    mod = kernel([x], out)
    want = run(mod, [xv], [int(d) for d in out.shape])           # TVM's own loops, unscheduled
    cand, schedule = spatial.default_candidate(mod)
    scheduled = schedule(mod, cand).mod
    update = "pool_" + ("max" if kind == "max" else "sum") + "_update"
    assert update in scheduled.script()
    np.testing.assert_allclose(run(scheduled, [xv], want.shape), want, rtol=1e-6, atol=1e-6)
    # the window inside the columns, but innermost (3 wide) in a strided pool whose columns take no whole vectors
    from tvm import s_tir

    sch = s_tir.Schedule(scheduled)
    innermost = int(sch.get(sch.get_loops(sch.get_sblock(update))[-1]).extent)
    assert (innermost == 3) == (int(out.shape[3]) % 4 != 0 and layout == "NCHW" and stride > 1), innermost
