"""The Relax rewrites of ``wasmforge/compiler/frontend.py`` on graphs imported by TVM's ONNX
frontend, run on the host against numpy."""
from __future__ import annotations

import numpy as np
import pytest

from wasmforge.compiler import frontend


def imported(exponent: float, shape=(2, 3, 8)):
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper
    from tvm.relax.frontend.onnx import from_onnx

    graph = helper.make_graph(
        [helper.make_node("Pow", ["x", "e"], ["y"])], "pow",
        [helper.make_tensor_value_info("x", T.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", T.FLOAT, list(shape))],
        [numpy_helper.from_array(np.array(exponent, np.float32), "e")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return from_onnx(model, keep_params_in_input=False)


def run(mod, x):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("exponent", [0.75, 0.5, 0.25, 2.0, 3.0])
def test_constant_powers_become_roots_and_products(exponent):
    x = np.random.default_rng(1).uniform(0.01, 4, (2, 3, 8)).astype(np.float32)
    x[0, 0, :2] = [0.0, -1.0]                                  # powf's zero and NaN agree
    mod = frontend.constant_powers(imported(exponent))
    assert ("R.power" in mod.script()) == (exponent not in frontend.POWERS)
    with np.errstate(invalid="ignore"):
        want = np.power(x, np.float32(exponent))
    np.testing.assert_allclose(run(mod, x), want, rtol=2e-6, atol=0)


def test_erf_becomes_fast_erf_within_its_bound():
    import math

    from onnx import TensorProto as T
    from onnx import helper
    from tvm.relax.frontend.onnx import from_onnx

    graph = helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "erf",
                              [helper.make_tensor_value_info("x", T.FLOAT, [4001])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [4001])])
    mod = frontend.fast_erf(from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    assert "R.erf" not in mod.script() and "fast_erf" in mod.script()
    x = np.linspace(-6, 6, 4001).astype(np.float32)
    want = np.array([math.erf(float(v)) for v in x])
    assert np.abs(run(mod, x) - want).max() < 4.5e-7
