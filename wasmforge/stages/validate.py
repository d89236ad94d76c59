"""Stage 7, validate: the optimized module against onnxruntime on the original ONNX, and
against the reference outputs the declaration gives.

Loads the module in wasmtime, asserts it imports nothing but WASI, runs it on the model's
seeded inputs (from each seed: floats N(0, 1); integers below the gathered dimension where a
``Gather`` uses them as indices, else 0-9) and on each declared reference set's inputs, and
compares every output with onnxruntime's or the reference's: max absolute error, max error
relative to the output's magnitude, and for class-score outputs top-1 and top-5 agreement.
When onnxruntime cannot run the model, the reference sets are the only check, and the report
says why (``onnxruntime.problem``); with neither, the stage fails naming both. Writes
``report.json``; only a passing module is published at ``build/<model>/<model>.wasm`` (a
failing run removes a stale one).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict

import numpy as np

from wasmforge import dsl, references
from wasmforge.dsl import Tolerance
from wasmforge.engines import wasmbin
from wasmforge.errors import StageError
from wasmforge.store import digests, files

STAGE = "validate"
# what the stage runs: part of its key (host imports wasmtime, so it is imported late)
CODE = (__file__, references.__file__, wasmbin.__file__, os.path.join(os.path.dirname(wasmbin.__file__), "host.py"))


INDEX_HIGH = 10   # integer inputs the graph gives no range for: 0..9


def index_bounds(onnx_path: str) -> dict[str, int]:
    """Integer inputs the graph says the range of: an input that a ``Gather`` uses as its
    indices takes values below the gathered dimension of the data (an embedding's rows).
    Returns input name -> exclusive upper bound (the smallest, if several Gathers read it)."""
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    g = model.graph
    shapes = {i.name: list(i.dims) for i in g.initializer}
    for vi in list(g.input) + list(g.value_info):
        dims = vi.type.tensor_type.shape.dim
        shapes.setdefault(vi.name, [d.dim_value if d.HasField("dim_value") else None for d in dims])
    inputs = {i.name for i in g.input} - {i.name for i in g.initializer}
    bounds: dict[str, int] = {}
    for node in g.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[1] not in inputs:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        shape = shapes.get(node.input[0])
        if not shape or not -len(shape) <= axis < len(shape) or not shape[axis]:
            continue
        bounds[node.input[1]] = min(bounds.get(node.input[1], shape[axis]), shape[axis])
    return bounds


def seeded_inputs(decls: list[dict], seed: int, bounds: dict[str, int] | None = None,
                  ranges: dict[str, tuple[float, float]] | None = None) -> dict[str, np.ndarray]:
    """Validation inputs from ``seed``. An input the declaration gives a range for: uniform
    in ``[low, high)`` (integers for an integer input). Else floats N(0, 1); integers in
    ``[0, bound)``, the bound from ``bounds`` (``index_bounds``) or ``INDEX_HIGH``; booleans
    0 or 1."""
    rng = np.random.default_rng(seed)
    ranges = ranges or {}
    out = {}
    for d in decls:
        dt, name = np.dtype(d["dtype"]), d["name"]
        if name in ranges and dt.kind in "iuf":
            low, high = ranges[name]
            draw = rng.uniform(low, high, d["shape"]) if dt.kind == "f" else \
                rng.integers(int(np.ceil(low)), int(np.ceil(high)), d["shape"])
            out[name] = draw.astype(dt)
        elif dt.kind == "f":
            out[name] = rng.standard_normal(d["shape"]).astype(dt)
        elif dt.kind in "iu":
            out[name] = rng.integers(0, (bounds or {}).get(name, INDEX_HIGH), d["shape"]).astype(dt)
        else:
            out[name] = rng.integers(0, 2, d["shape"]).astype(dt)
    return out


def compare(got: np.ndarray, ref: np.ndarray, tol: Tolerance) -> dict:
    """One output against onnxruntime's. A NaN where the reference has one too is agreement
    (``Sqrt`` of a negative input gives NaN in both); the report counts them
    (``nan_agreed``). A NaN on one side only is a mismatch."""
    g, r = got.astype(np.float64), ref.astype(np.float64)
    nan_g, nan_r = np.isnan(g), np.isnan(r)
    both = nan_g & nan_r
    valid = ~nan_r
    diff = np.abs(g - r)[valid & ~nan_g]
    scale = float(np.abs(r[valid]).max()) if valid.any() else 0.0
    res = {"max_abs_error": float(diff.max()) if diff.size else 0.0,
           "max_rel_error": float(diff.max() / scale) if diff.size and scale > 0 else 0.0,
           "allowed_abs_error": tol.atol + tol.rtol * scale,
           "finite": bool(np.isfinite(g[~both]).all())}
    if both.any():
        res["nan_agreed"] = int(both.sum())
    if (nan_g != nan_r).any():
        res["nan_mismatched"] = int((nan_g != nan_r).sum())
    ok = res["finite"] and "nan_mismatched" not in res and res["max_abs_error"] <= res["allowed_abs_error"]
    flat_g, flat_r = g.reshape(g.shape[0], -1) if g.ndim else g.reshape(1, 1), r.reshape(r.shape[0], -1) if r.ndim else r.reshape(1, 1)
    if g.ndim >= 2 and flat_r.shape[1] >= 5:   # class scores: compare rankings
        top5_g = np.argsort(-flat_g, axis=1, kind="stable")[:, :5]
        top5_r = np.argsort(-flat_r, axis=1, kind="stable")[:, :5]
        res["top1_equal"] = bool((top5_g[:, 0] == top5_r[:, 0]).all())
        res["top5_overlap"] = int(min(len(set(a) & set(b)) for a, b in zip(top5_g, top5_r)))
        res["top1"] = [int(t) for t in top5_r[:, 0]]
        res["top5"] = [[int(x) for x in t] for t in top5_r]
        ok = ok and res["top1_equal"] and res["top5_overlap"] >= tol.min_top5
    res["passed"] = bool(ok)
    return res


def onnxruntime_session(onnx_path: str):
    """(session, None), or (None, why) when onnxruntime cannot load the model (an opset or
    operator version it dropped, an operator it lacks)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"]), None
    except Exception as e:   # onnxruntime raises its own exception types for a model it cannot run
        return None, _first_line(e)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:400]


def _cases(model, onnx_path: str, seeds, reference_sets, sess, ort_problem, bounds: dict, ranges: dict) -> list:
    """What the module is checked on: (label, feeds, expected outputs by name). The seeded
    inputs against onnxruntime when it runs the model, and every declared reference set."""
    names = [o["name"] for o in model.outputs]
    unknown = sorted(set(ranges) - {i["name"] for i in model.inputs})
    if unknown:
        raise StageError(STAGE, onnx_path, f"the declaration gives ranges for {unknown}, which are not inputs of "
                                           f"the model (inputs: {[i['name'] for i in model.inputs]})")
    cases = []
    if sess is not None:
        for seed in seeds:
            feeds = seeded_inputs(model.inputs, seed, bounds, ranges)
            try:
                got = sess.run(names, feeds)
            except Exception as e:   # e.g. an index out of the range the graph does not state
                ort_problem = f"onnxruntime fails on the seeded inputs ({_first_line(e)})"
                cases = []
                break
            cases.append(({"seed": seed}, feeds, dict(zip(names, got))))
    for path in reference_sets:
        try:
            ref = references.load(path, [i["name"] for i in model.inputs], names)
            cases.append(({"reference": dsl.shown(path)}, references.check_against(ref, model.inputs),
                          ref.outputs))
        except references.ReferenceError as e:
            raise StageError(STAGE, path, str(e)) from None
    if not cases:
        raise StageError(STAGE, onnx_path, f"cannot validate the module: onnxruntime cannot run the model "
                                           f"({ort_problem}) and the declaration gives no reference outputs; "
                                           "declare them (reference = an .npz or test_data_set_N folders, "
                                           "see docs/validation.md)")
    return cases, ort_problem


def run(wasm: str, onnx_path: str, seeds, tol: Tolerance, stage_files: dict[str, str],
        sizes: dict, published: str, report_path: str, threads: int = 1, same_as: str | None = None,
        reference_sets: tuple[str, ...] = (), ranges: dict | None = None) -> dict:
    """``threads`` > 1: the threads variant, run with that many threads. ``same_as``: a module
    whose outputs this one must equal bit for bit (the threads variant runs the same kernels
    as the portable module, and splitting a parallel loop must not change a single bit).
    ``reference_sets``: declared reference outputs (``wasmforge/references.py``), checked
    as well; when onnxruntime cannot run the model, they are the only check. ``ranges``:
    the declared input ranges (``seeded_inputs``)."""
    from wasmforge.engines.host import WasmModel

    t0 = time.perf_counter()
    # until this run passes, nothing at the published path may look like a finished module
    if os.path.exists(published):
        os.unlink(published)
    with open(wasm, "rb") as f:
        data = f.read()
    imports = wasmbin.imports(data)
    non_wasi = [f"{i['module']}.{i['name']}" for i in imports if not wasmbin.allowed_import(i, threads > 1)]
    sess, ort_problem = onnxruntime_session(onnx_path)
    bounds = index_bounds(onnx_path)
    model = WasmModel(wasm, threads=threads)
    results = []
    try:
        cases, ort_problem = _cases(model, onnx_path, seeds, reference_sets, sess, ort_problem, bounds, ranges or {})
        reference = WasmModel(same_as) if same_as else None
        for label, feeds, want in cases:
            t = time.perf_counter()
            got = model.run(feeds)
            wasm_ms = (time.perf_counter() - t) * 1e3
            per_out = {o["name"]: compare(g, want[o["name"]], tol)
                       for o, g in zip(model.outputs, got) if o["name"] in want}
            if reference is not None:
                for o, g, same_want in zip(model.outputs, got, reference.run(feeds)):
                    same = bool(np.array_equal(g, same_want, equal_nan=True))
                    per_out[o["name"]]["identical_to_" + os.path.basename(same_as)] = same
                    per_out[o["name"]]["passed"] = per_out[o["name"]]["passed"] and same
            results.append({**label, "wasm_ms": round(wasm_ms, 2), "outputs": per_out,
                            "passed": all(v["passed"] for v in per_out.values())})
    finally:   # a threads model's workers stop here, also when a run fails
        model.close()
    passed = not non_wasi and all(r["passed"] for r in results)
    times = {}
    for stage, path in stage_files.items():
        if os.path.isfile(path):
            times[stage] = files.read_json(path).get("seconds")
    times["validate"] = round(time.perf_counter() - t0, 3)
    onnxruntime = {"ran": any("seed" in r for r in results)}
    if not onnxruntime["ran"]:
        onnxruntime["problem"] = ort_problem or "onnxruntime fails on the seeded inputs"
    report = {"model": model.metadata.get("model"), "passed": passed, "threads": threads,
              "onnxruntime": onnxruntime, "references": [dsl.shown(r) for r in reference_sets],
              "tolerance": {**asdict(tol), "rule": "|wasm - ref| <= atol + rtol * max|ref| per output, ref "
                                                   "being onnxruntime's output or a declared reference's; "
                                                   "top-1 identical; top-5 overlap >= min_top5; a NaN where "
                                                   "ref has one agrees (nan_agreed)"},
              "index_bounds": bounds, "ranges": ranges or {}, "inputs": results, "imports": [f"{i['module']}.{i['name']}" for i in imports],
              "non_wasi_imports": non_wasi, "stage_seconds": times, "sizes": sizes,
              "module": os.path.relpath(published) if passed else None,
              "module_sha256": digests.file_sha256(wasm), "metadata": model.metadata}
    if passed:
        files.place(wasm, published)   # one file with the optimized module where possible
    files.write_json(report_path, report)
    if not passed:
        worst = [(f"seed {r['seed']}: " if "seed" in r else f"reference {r['reference']}: ") + ", ".join(f"{k}: max_abs_error {v['max_abs_error']:.3g} "
                                                    f"(allowed {v['allowed_abs_error']:.3g}), top1_equal "
                                                    f"{v.get('top1_equal')}, top5_overlap {v.get('top5_overlap')}"
                                                    + "".join(f", {f} {x}" for f, x in v.items() if f.startswith("identical_to_"))
                                                    for k, v in r["outputs"].items())
                 for r in results if not r["passed"]]
        why = f"non-WASI imports {non_wasi}" if non_wasi else "; ".join(worst)
        raise StageError(STAGE, wasm, f"validation failed ({why}); see {report_path}")
    return report
