"""A tiny ONNX model through every stage of the real graph: TVM, clang, wasm-ld, wasm-opt,
wasmtime, compared with onnxruntime."""
from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
from conftest import make_tiny_onnx, ran

from wasmforge.engines import wasmbin
from wasmforge.engines.host import WasmModel

STAGES = ["import", "relax_build", "emit", "executor", "link", "opt", "validate"]
THREADS_STAGES = ["link_threads", "opt_threads", "validate_threads"]


def test_tiny_model_from_toml_builds_validates_and_runs(doit, tmp_path):
    onnx_path = make_tiny_onnx(tmp_path / "decls" / "tiny.onnx")
    doit.declare("tiny.toml", 'name = "tiny"\nonnx = "tiny.onnx"\nseeds = [5, 6]\n')

    listing = doit("list", "--all").stdout
    for stage in STAGES + THREADS_STAGES + ["build"]:
        assert f"{stage}:tiny" in listing, listing

    doit("build:tiny")
    report = json.load(open(doit.path("tiny", "report.json")))
    assert report["passed"] is True
    assert [r["seed"] for r in report["inputs"]] == [5, 6]
    for r in report["inputs"]:
        out = r["outputs"]["y"]
        assert out["top1_equal"] and out["top5_overlap"] == 5
        assert out["max_abs_error"] <= out["allowed_abs_error"]
    # the runtime brings its own allocator and formatting: the module imports nothing at all
    assert all(i.startswith("wasi_snapshot_preview1.") for i in report["imports"]), report["imports"]
    assert set(report["stage_seconds"]) >= set(STAGES)

    # the threads variant, validated on 2 threads; it imports only its shared memory
    mt = json.load(open(doit.path("tiny", "report.threads.json")))
    assert mt["passed"] is True and mt["threads"] == 2
    assert mt["imports"] == ["env.memory"]
    assert all(r["outputs"]["y"]["identical_to_tiny.wasm"] for r in mt["inputs"])   # bit for bit
    assert set(mt["stage_seconds"]) >= {"import", "emit", "link_threads", "opt_threads", "validate"}
    assert not set(mt["stage_seconds"]) & {"link", "opt"}
    assert os.path.isfile(doit.path("tiny", "tiny.threads.wasm"))
    assert report["sizes"]["before_wasm_opt"] > 0 and report["sizes"]["after_wasm_opt"] > 0

    wasm = doit.path("tiny", "tiny.wasm")
    data = open(wasm, "rb").read()
    meta = wasmbin.metadata(data)
    assert meta["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "y", "shape": [1, 10], "dtype": "float32"}]
    import hashlib
    assert meta["source"]["sha256"] == hashlib.sha256(open(onnx_path, "rb").read()).hexdigest()
    assert meta["build"]["target"]["mtriple"] == "wasm32-unknown-unknown-wasm"
    assert meta["opt"]["level"] == "-O3"
    exports = {e["name"] for e in wasmbin.exports(data)}
    assert {"_initialize", "wasmforge_run", "wasmforge_input_ptr", "wasmforge_output_ptr",
            "wasmforge_last_error", "memory"} <= exports

    # the published module, on an input the validate stage never saw
    x = np.random.default_rng(1234).standard_normal((1, 3, 8, 8)).astype(np.float32)
    got = WasmModel(wasm).run({"x": x})[0]
    want = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert got.argmax() == want.argmax()

    # nothing changed: a second run executes no stage
    again = doit("build:tiny")
    assert ran(again) == [], again.stdout
    assert "tiny (portable, 1 thread): passed" in again.stdout   # the summary, every time


def test_python_declaration_pins_a_dynamic_batch(doit, tmp_path):
    make_tiny_onnx(tmp_path / "decls" / "dyn.onnx", dynamic_batch=True)
    doit.declare("dyn.py", 'from wasmforge.dsl import model\n'
                           'model("dyn", onnx="dyn.onnx", inputs={"x": (1, 3, 8, 8)})\n')
    doit("build:dyn")
    report = json.load(open(doit.path("dyn", "report.json")))
    assert report["passed"] is True
    assert os.path.isfile(doit.path("dyn", "dyn.wasm"))
