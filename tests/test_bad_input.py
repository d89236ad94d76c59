"""Bad input: each gives an error naming the file and the problem, a non-zero exit, and no
artifact a later run could mistake for a finished one."""
from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import make_tiny_onnx


def assert_failed_cleanly(doit, res, model, *needles):
    assert res.returncode != 0
    text = res.stdout + res.stderr
    for n in needles:
        assert n in text, text
    assert "Traceback" not in text, text
    assert not os.path.exists(doit.path(model, f"{model}.wasm"))
    assert not os.path.exists(doit.path(model, "report.json"))


def test_missing_model_file(doit):
    doit.declare("gone.toml", 'name = "gone"\nonnx = "nowhere/gone.onnx"\n')
    res = doit("build:gone", check=False)
    assert_failed_cleanly(doit, res, "gone", "nowhere/gone.onnx", "model file not found")
    assert not os.path.exists(doit.path("gone", "import", "model.json"))


def test_truncated_onnx(doit, tmp_path):
    good = make_tiny_onnx(tmp_path / "good.onnx")
    with open(tmp_path / "decls" / "cut.onnx", "wb") as f:
        f.write(open(good, "rb").read()[:300])
    doit.declare("cut.toml", 'name = "cut"\nonnx = "cut.onnx"\n')
    res = doit("build:cut", check=False)
    assert_failed_cleanly(doit, res, "cut", "cut.onnx", "not a valid ONNX file")
    assert not os.path.exists(doit.path("cut", "import", "model.json"))
    assert not os.path.exists(doit.path("cut", "import", "stage.json"))


def test_operator_tvm_cannot_import(doit, tmp_path):
    make_tiny_onnx(tmp_path / "decls" / "celu.onnx", op="Celu")
    doit.declare("celu.toml", 'name = "celu"\nonnx = "celu.onnx"\n')
    res = doit("build:celu", check=False)
    assert_failed_cleanly(doit, res, "celu", "celu.onnx", "TVM cannot import operator 'Celu'")


def test_dynamic_input_shape_is_refused(doit, tmp_path):
    make_tiny_onnx(tmp_path / "decls" / "dyn.onnx", dynamic_batch=True)
    doit.declare("dyn.toml", 'name = "dyn"\nonnx = "dyn.onnx"\n')
    res = doit("build:dyn", check=False)
    assert_failed_cleanly(doit, res, "dyn", "dyn.onnx", "input 'x' has a dynamic dimension 'N'",
                          "inputs=")


def test_missing_tool_says_how_to_install(doit, tmp_path):
    make_tiny_onnx(tmp_path / "decls" / "t.onnx")
    doit.declare("t.toml", 'name = "t"\nonnx = "t.onnx"\n')
    res = doit("build:t", check=False, WASMFORGE_WASM_OPT=str(tmp_path / "no-such-wasm-opt"))
    assert_failed_cleanly(doit, res, "t", "wasm-opt", "no-such-wasm-opt", "apt-get install")


def test_relaxed_simd_builds_and_validates_or_says_which_wasm_opt_cannot_read_it(doit, tmp_path):
    """A '+relaxed-simd' variant: LLVM emits f32x4.relaxed_madd. A wasm-opt that can read it
    gives a module that validates; Debian 12's binaryen 108 cannot, and the error says so."""
    make_tiny_onnx(tmp_path / "decls" / "rx.onnx")
    doit.declare("rx.toml", 'name = "rx"\nonnx = "rx.onnx"\nmattr = ["+simd128", "+relaxed-simd"]\n')
    res = doit("build:rx", check=False)
    if res.returncode == 0:
        import json
        assert json.load(open(doit.path("rx", "report.json")))["passed"] is True
    else:
        assert_failed_cleanly(doit, res, "rx", "linked.wasm", "cannot read relaxed SIMD",
                              "WASMFORGE_WASM_OPT", "without '+relaxed-simd'")


def test_failed_validation_publishes_nothing(doit, tmp_path):
    """A tolerance no float32 build can meet: the report says why, no module is published."""
    make_tiny_onnx(tmp_path / "decls" / "strict.onnx")
    doit.declare("strict.py", "from wasmforge.dsl import model, Tolerance\n"
                              "model('strict', onnx='strict.onnx', tolerance=Tolerance(atol=0.0, rtol=0.0))\n")
    # a leftover from an earlier, passing build must not survive a failing one
    os.makedirs(doit.path("strict"), exist_ok=True)
    open(doit.path("strict", "strict.wasm"), "wb").write(b"\0asm stale")
    res = doit("build:strict", check=False)
    assert res.returncode != 0
    assert "validation failed" in res.stderr
    assert not os.path.exists(doit.path("strict", "strict.wasm"))
    import json
    report = json.load(open(doit.path("strict", "report.json")))
    assert report["passed"] is False and report["module"] is None


@pytest.fixture(scope="module")
def tiny_module(tiny_build):
    return tiny_build.path("tiny", "tiny.wasm")


@pytest.mark.parametrize("x, msg", [
    (np.zeros((1, 3, 8, 9), np.float32), "must have shape (1, 3, 8, 8), got (1, 3, 8, 9)"),
    (np.zeros((1, 3, 8, 8), np.float64), "must have dtype float32, got float64"),
    ({"z": np.zeros((1, 3, 8, 8), np.float32)}, "inputs missing ['x'], unknown ['z']"),
])
def test_wrong_input_rejected_before_touching_the_module(tiny_module, x, msg):
    from wasmforge.engines.host import ModelInputError, WasmModel

    m = WasmModel(tiny_module)
    ptr, size = m._in[0]
    before = m._memory.read(m.store, ptr, ptr + size)
    with pytest.raises(ModelInputError) as e:
        m.run(x)
    assert msg in str(e.value) and tiny_module in str(e.value)
    assert m._memory.read(m.store, ptr, ptr + size) == before


def test_an_opset_newer_than_any_runtime_knows_is_refused_at_import(doit, tmp_path):
    import onnx

    path = make_tiny_onnx(tmp_path / "decls" / "future.onnx")
    model = onnx.load(path)
    model.opset_import[0].version = 99
    onnx.save(model, path)
    doit.declare("future.toml", 'name = "future"\nonnx = "future.onnx"\n')
    res = doit("build:future", check=False)
    newest = onnx.defs.onnx_opset_version()
    assert_failed_cleanly(doit, res, "future", "future.onnx", "ONNX opset 99",
                          f"the newest is opset {newest}", "[stage import]")
    assert not os.path.exists(doit.path("future", "import", "stage.json"))


def test_an_operator_of_another_domain_is_refused_at_import(doit, tmp_path):
    import onnx
    from onnx import helper

    path = make_tiny_onnx(tmp_path / "decls" / "custom.onnx")
    model = onnx.load(path)
    model.graph.node[1].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    onnx.save(model, path)
    doit.declare("custom.toml", 'name = "custom"\nonnx = "custom.onnx"\n')
    res = doit("build:custom", check=False)
    assert_failed_cleanly(doit, res, "custom", "custom.onnx", "'Relu' of domain 'com.example'",
                          "[stage import]")


def relu_onnx(path, side: int):
    import onnx
    from onnx import TensorProto as T
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", T.FLOAT, [1, side, side])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, side, side])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.parametrize("side, problem, stage", [
    (100000, "input 'x' ([1, 100000, 100000] float32) is 40,000,000,000 bytes", "import"),
    (25000, "the model needs 7,500,000,000 bytes of memory", "executor"),   # each tensor fits, not all of them
])
def test_memory_beyond_wasm32_is_refused(doit, tmp_path, side, problem, stage):
    relu_onnx(tmp_path / "decls" / "huge.onnx", side)
    doit.declare("huge.toml", 'name = "huge"\nonnx = "huge.onnx"\n')
    res = doit("build:huge", check=False)
    assert_failed_cleanly(doit, res, "huge", problem, "4 GiB", f"[stage {stage}]")
    assert not os.path.exists(doit.path("huge", stage, "stage.json"))
    assert not os.path.exists(doit.path("huge", "executor", "executor.c"))
