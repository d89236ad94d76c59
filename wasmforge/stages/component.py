"""Stage 8, component: the validated module as a WASI 0.2 component, validated again.

The portable module already exports the canonical-ABI functions of the WIT interface
``wasmforge:model/inference`` (``runtime/wasmforge_component.c``), so the component wraps the
validated ``<model>.wasm`` itself, kernels and weights unchanged: ``wasm-tools component
embed`` adds the WIT world, ``wasm-tools component new`` makes the component, which calls the
module's ``_initialize`` when it is instantiated. A module that imports WASI preview 1 would
need an adapter; wasmforge modules import nothing, and one that does is refused with its
imports named.

The component is then run through wasmtime's component API on the model's seeded inputs: its
``metadata()`` must describe the module's inputs and outputs, and ``infer`` must give exactly
the validated module's outputs (the same kernels), which validation compared with
onnxruntime; its outputs are compared with onnxruntime's too, at validation's tolerance. Only then is it published at ``build/<model>/<model>.component.wasm``, beside
``report.component.json``.
"""
from __future__ import annotations

import os
import subprocess
import time

import numpy as np

from wasmforge import component as wit
from wasmforge.component import host as component_host
from wasmforge.engines import wasmbin
from wasmforge.errors import StageError
from wasmforge.stages import validate
from wasmforge.store import digests, files

STAGE = "component"
CODE = (__file__, wit.__file__, component_host.__file__)


def wit_files() -> dict[str, str]:
    """The WIT package, by label: part of the stage's inputs."""
    return {f"wit/{f}": os.path.join(wit.WIT_DIR, f) for f in sorted(os.listdir(wit.WIT_DIR)) if f.endswith(".wit")}


def _wasm_tools(tool, args: list[str], path: str) -> None:
    res = subprocess.run([tool.path, *args], capture_output=True, text=True)
    if res.returncode != 0:
        tail = "\n".join(res.stderr.strip().splitlines()[-10:])
        raise StageError(STAGE, path, f"wasm-tools {args[0]} {args[1]} failed (exit {res.returncode}):\n{tail}")


def make(core: str, wasm_tools, out: str, work: str) -> None:
    """``core`` (a portable wasmforge module) -> the component ``out``."""
    with open(core, "rb") as f:
        imports = wasmbin.imports(f.read())
    if imports:
        names = [f"{i['module']}.{i['name']}" for i in imports]
        raise StageError(STAGE, core, f"the module imports {names}: a component of it would need the WASI "
                                      "preview 1 adapter, which wasmforge does not ship")
    os.makedirs(work, exist_ok=True)
    embedded = os.path.join(work, "embedded.wasm")
    _wasm_tools(wasm_tools, ["component", "embed", wit.WIT_DIR, "--world", wit.WORLD, core, "-o", embedded], core)
    _wasm_tools(wasm_tools, ["component", "new", embedded, "-o", out], core)
    os.unlink(embedded)


def expected_metadata(model: str, io: dict) -> dict:
    """What the component's ``metadata()`` must say, from the import stage's ``io.json``."""
    def info(d):
        return {"name": d["name"], "datatype": wit.DATATYPES[d["dtype"]], "shape": list(d["shape"])}
    return {"name": model, "inputs": [info(d) for d in io["inputs"]], "outputs": [info(d) for d in io["outputs"]]}


def check(component: str, core: str, onnx_path: str, expected: dict, seeds, tol, ranges: dict | None = None) -> dict:
    """The component against the validated core module (its metadata, and bit-identical
    outputs on every seeded input) and against onnxruntime (validation's tolerance), where
    onnxruntime runs the model."""
    from wasmforge.engines.host import WasmModel

    comp = component_host.ComponentModel(component)
    sess, _ = validate.onnxruntime_session(onnx_path)
    problems = []
    if comp.metadata != expected:
        problems.append(f"metadata() is {comp.metadata}, the module's io is {expected}")
    core_model = WasmModel(core)
    bounds = validate.index_bounds(onnx_path)
    cases = []
    for seed in seeds:
        feeds = validate.seeded_inputs(core_model.inputs, seed, bounds, ranges)
        t = time.perf_counter()
        got = comp.run(feeds)
        ms = (time.perf_counter() - t) * 1e3
        want = core_model.run(feeds)
        same = {o["name"]: bool(g.shape == w.shape and np.array_equal(g, w, equal_nan=True))
                for o, g, w in zip(core_model.outputs, got, want)}
        case = {"seed": seed, "component_ms": round(ms, 2), "identical_to_module": same}
        if not all(same.values()) or len(got) != len(want):
            problems.append(f"seed {seed}: outputs differ from the validated module's ({same})")
        if sess is not None:
            ref = sess.run([o["name"] for o in core_model.outputs], feeds)
            case["onnxruntime"] = {o["name"]: validate.compare(g, r, tol) for o, g, r in zip(core_model.outputs, got, ref)}
            bad = [k for k, v in case["onnxruntime"].items() if not v["passed"]]
            if bad:
                problems.append(f"seed {seed}: {bad} beyond the tolerance of onnxruntime's")
        cases.append(case)
    return {"passed": not problems, "problems": problems, "metadata": comp.metadata, "inputs": cases}


def run(core: str, onnx_path: str, io_json: str, model: str, seeds, tol, ranges: dict | None, wasm_tools,
        work_out: str, published: str, report_path: str) -> dict:
    t0 = time.perf_counter()
    if os.path.exists(published):
        os.unlink(published)
    make(core, wasm_tools, work_out, os.path.dirname(work_out))
    report = check(work_out, core, onnx_path, expected_metadata(model, files.read_json(io_json)), seeds, tol,
                   ranges)
    report.update({"model": model, "interface": wit.INTERFACE, "bytes": os.path.getsize(work_out),
                   "core_module_sha256": digests.file_sha256(core), "seconds": round(time.perf_counter() - t0, 3),
                   "component": os.path.relpath(published) if report["passed"] else None})
    files.write_json(report_path, report)
    if not report["passed"]:
        raise StageError(STAGE, work_out, f"component check failed: {'; '.join(report['problems'])}; "
                                          f"see {report_path}")
    files.place(work_out, published)
    return {"passed": True, "bytes": report["bytes"]}
