"""The product: `doit build:resnet50` builds and validates ResNet-50 as a pure WASI module.

Runs in the repository's own build folder (what README command one produces), so after a
first build this test is a no-op check of the real artifact."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import RESNET50_THREADS_LOG, ROOT

from wasmforge.engines import wasmbin


def test_resnet50_builds_and_validates():
    env = {k: v for k, v in os.environ.items() if k not in ("WASMFORGE_BUILD", "WASMFORGE_MODELS")}
    res = subprocess.run([sys.executable, "-m", "doit", "build:resnet50"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.load(open(os.path.join(ROOT, "build", "resnet50", "report.json")))
    assert report["passed"] is True
    assert len(report["inputs"]) >= 3
    for r in report["inputs"]:
        out = r["outputs"]["gpu_0/softmax_1"]
        assert out["top1_equal"] is True and out["top5_overlap"] >= 4
        assert out["max_abs_error"] <= out["allowed_abs_error"]
    assert report["non_wasi_imports"] == []
    assert report["sizes"]["after_wasm_opt"] <= report["sizes"]["before_wasm_opt"]
    assert report["sizes"]["after_wasm_opt"] > 100e6   # the weights are inside the module
    wasm = os.path.join(ROOT, "build", "resnet50", "resnet50.wasm")
    with open(wasm, "rb") as f:
        data = f.read()
    assert all(i["module"] == "wasi_snapshot_preview1" for i in wasmbin.imports(data))
    meta = wasmbin.metadata(data)
    assert meta["inputs"] == [{"name": "gpu_0/data_0", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    assert meta["outputs"][0]["shape"] == [1, 1000]


def test_resnet50_threads_variant_runs_its_parallel_loops_on_two_threads():
    """The tuned kernels' parallel loops really run on the worker (worker_tasks > 0), and
    give the portable module's bytes (its result, within tolerance, when the threads variant
    has kernels of its own)."""
    import numpy as np

    from wasmforge.dsl import Tolerance
    from wasmforge.engines.host import WasmModel
    from wasmforge.stages.validate import compare, seeded_inputs

    report = json.load(open(os.path.join(ROOT, "build", "resnet50", "report.threads.json")))
    assert report["passed"] is True and report["threads"] == 2
    if not RESNET50_THREADS_LOG:
        assert all(r["outputs"]["gpu_0/softmax_1"]["identical_to_resnet50.wasm"] for r in report["inputs"])
    d = os.path.join(ROOT, "build", "resnet50")
    portable = WasmModel(os.path.join(d, "resnet50.wasm"))
    x = seeded_inputs(portable.inputs, 99)
    want = portable.run(x)[0]
    with WasmModel(os.path.join(d, "resnet50.threads.wasm"), threads=2) as m:
        got = m.run(x)[0]
        if RESNET50_THREADS_LOG:   # other kernels, which may sum in another order
            assert compare(got, want, Tolerance())["passed"]
        else:
            np.testing.assert_array_equal(got, want)
        assert m.worker_tasks > 0


TRAPPING_WORKER = """
import sys, threading
from wasmforge.engines.host import ModelRuntimeError, WasmModel
from wasmforge.stages.validate import seeded_inputs

class NoStackForWorker(WasmModel):
    def _worker_stack(self, ex, wid):
        return 0

m = NoStackForWorker(sys.argv[1], threads=2)
x = seeded_inputs(m.inputs, 1)
outcome = []

def run():
    try:
        m.run(x)
        outcome.append("ran")
    except ModelRuntimeError as e:
        outcome.append(str(e))

t = threading.Thread(target=run, daemon=True)
t.start()
t.join(300)
print("FIRST", repr("HANGS" if t.is_alive() else outcome[0]))
try:
    m.run(x)
    print("AGAIN", repr("ran again"))
except ModelRuntimeError as e:
    print("AGAIN", repr(str(e)))
m.close()
"""


def test_a_worker_that_traps_fails_the_run_instead_of_hanging():
    """A worker thread that traps mid-launch (here: given no stack, so its first stack access
    is out of bounds) never counts down its share of the launch. The launching thread must
    get an error, not wait forever, and the instance must refuse to run again. (In a process
    of its own: a trap unwinds through wasmtime's signal handlers on a Python thread.)"""
    wasm = os.path.join(ROOT, "build", "resnet50", "resnet50.threads.wasm")
    res = subprocess.run([sys.executable, "-c", TRAPPING_WORKER, wasm], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    said = dict(line.split(" ", 1) for line in res.stdout.splitlines() if line.startswith(("FIRST ", "AGAIN ")))
    assert "worker thread" in said["FIRST"] and "cannot run again" in said["FIRST"], res.stdout
    assert "cannot run again" in said["AGAIN"], res.stdout


def test_resnet50_as_a_component_gives_the_validated_modules_outputs():
    """`doit component:resnet50`: the validated module wrapped as a WASI 0.2 component, its
    outputs through wasmtime's component API identical to the module's, top-1 onnxruntime's."""
    env = {k: v for k, v in os.environ.items() if k not in ("WASMFORGE_BUILD", "WASMFORGE_MODELS")}
    res = subprocess.run([sys.executable, "-m", "doit", "component:resnet50"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.load(open(os.path.join(ROOT, "build", "resnet50", "report.component.json")))
    assert report["passed"] is True and len(report["inputs"]) >= 3
    for case in report["inputs"]:
        assert case["identical_to_module"] == {"gpu_0/softmax_1": True}
        assert case["onnxruntime"]["gpu_0/softmax_1"]["top1_equal"] is True
    assert report["metadata"]["inputs"] == [{"name": "gpu_0/data_0", "datatype": "fp32", "shape": [1, 3, 224, 224]}]


def test_doit_serve_resnet50_answers_a_curl_infer_request_with_onnxruntimes_top1(tmp_path):
    """The README's "Serve over HTTP": `doit serve:resnet50 --port N`, then curl, JSON in and out."""
    import shutil
    import signal

    import numpy as np
    import onnxruntime as ort

    from wasmforge.stages import http

    assert shutil.which("curl"), "curl is needed (Debian's curl)"
    env = {k: v for k, v in os.environ.items() if k not in ("WASMFORGE_BUILD", "WASMFORGE_MODELS")}
    port = http.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "doit", "serve:resnet50", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        http.wait_listening(port, proc, 1800)
        x = np.random.default_rng(21).standard_normal((1, 3, 224, 224)).astype(np.float32)
        req = tmp_path / "req.json"
        req.write_text(json.dumps({"inputs": [{"name": "gpu_0/data_0", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                               "data": x.ravel().tolist()}]}))
        out = subprocess.run(["curl", "-s", "-X", "POST", f"http://127.0.0.1:{port}/v2/models/resnet50/infer",
                              "--data-binary", f"@{req}"], capture_output=True, text=True, timeout=300, check=True).stdout
        got = np.array(json.loads(out)["outputs"][0]["data"], np.float32)
        want = ort.InferenceSession(os.path.join(ROOT, "build", "resnet50", "materialize", "source.onnx")).run(
            None, {"gpu_0/data_0": x})[0].ravel()
        assert got.shape == (1000,) and got.argmax() == want.argmax()
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max() + 1e-5
        # the same inputs as raw bytes: the same answer; a wrong shape: a 400 naming it
        body, headers = http.binary_infer_body({"gpu_0/data_0": x})
        status, h, b = http.request(port, "POST", "/v2/models/resnet50/infer", body, headers)
        assert status == 200 and np.array_equal(http.binary_outputs(b, h)["gpu_0/softmax_1"].ravel(), got)
        bad = json.dumps({"inputs": [{"name": "gpu_0/data_0", "shape": [1, 3, 224], "datatype": "FP32",
                                      "data": [0.0] * 672}]}).encode()
        status, _, b = http.request(port, "POST", "/v2/models/resnet50/infer", bad)
        assert status == 400 and "shape [1, 3, 224], the model takes [1, 3, 224, 224]" in json.loads(b)["error"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    report = json.load(open(os.path.join(ROOT, "build", "resnet50", "report.http.json")))
    assert report["passed"] is True
