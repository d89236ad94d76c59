"""The parallel default schedule of kernels with no product (wasmforge/compiler/spatial.py):
which kernels it takes, and pools, concatenations, layout transforms and softmax scheduled
by it, compiled for the host and run against numpy."""
from __future__ import annotations

import numpy as np
import pytest

from wasmforge.compiler import spatial


def kernel(inputs, out):
    import tvm
    from tvm import te

    return tvm.IRModule({"main": te.create_prim_func([*inputs, out])})


def parallel_loops(mod) -> int:
    return mod.script().count("T.parallel(")


def run(mod, arrays, out_shape):
    import tvm

    f = tvm.compile(mod, target="llvm")
    got = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
    f(*[tvm.runtime.tensor(a) for a in arrays], got)
    return got.numpy()


def test_products_and_small_kernels_are_not_taken():
    from tvm import te, topi

    a, b = te.placeholder((64, 64), name="a"), te.placeholder((64, 64), name="b")
    assert spatial.default_candidate(kernel([a, b], topi.nn.matmul(a, b))) is None     # a product
    small = te.placeholder((1, 8, 8, 8), name="s")
    assert spatial.default_candidate(kernel([small], topi.nn.relu(small))) is None     # 512 elements
    x = te.placeholder((1, 16, 32, 32), name="x")
    assert spatial.default_candidate(kernel([x], topi.nn.relu(x))) is not None


def max_pool(x):
    from tvm import topi

    return topi.nn.pool2d(x, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), "max", layout="NCHW")


@pytest.mark.parametrize("name", ["max_pool", "concatenate", "layout_transform", "softmax"])
def test_scheduled_kernels_match_numpy(name):
    from tvm import te, topi

    rng = np.random.default_rng(7)
    x = te.placeholder((1, 16, 48, 48), name="x")
    xv = rng.standard_normal((1, 16, 48, 48)).astype(np.float32)
    if name == "max_pool":
        inputs, out = [x], max_pool(x)
        padded = np.pad(xv, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
        want = np.max([padded[:, :, i:i + 48:2, j:j + 48:2] for i in range(3) for j in range(3)], axis=0)
        arrays = [xv]
    elif name == "concatenate":
        y = te.placeholder((1, 8, 48, 48), name="y")
        yv = rng.standard_normal((1, 8, 48, 48)).astype(np.float32)
        inputs, out, arrays = [x, y], topi.concatenate([x, y], axis=1), [xv, yv]
        want = np.concatenate([xv, yv], axis=1)
    elif name == "layout_transform":     # NCHW -> NCHW8c
        inputs, out, arrays = [x], topi.layout_transform(x, "NCHW", "NCHW8c"), [xv]
        want = xv.reshape(1, 2, 8, 48, 48).transpose(0, 1, 3, 4, 2)
    else:
        inputs, out, arrays = [x], topi.nn.softmax(x, axis=-1), [xv]
        e = np.exp(xv - xv.max(axis=-1, keepdims=True))
        want = e / e.sum(axis=-1, keepdims=True)
    mod = kernel(inputs, out)
    cand, schedule = spatial.default_candidate(mod)
    scheduled = schedule(mod, cand).mod
    assert parallel_loops(scheduled) >= 1
    np.testing.assert_allclose(run(scheduled, arrays, want.shape), want, rtol=1e-5, atol=1e-6)
