"""Benchmark: our module in wasmtime next to its peers, in one process run.

Peers: onnxruntime native (CPU execution provider) and onnxruntime-web's wasm backend in
Node (installed with npm into ``<build>/.ortweb-<version>`` on first use). Each system is warmed up
once, then timed ``repeats`` times, and the systems take turns ``rounds`` times (the
``WASMFORGE_BENCH_ROUNDS`` variable; ``ROUNDS`` by default); each median is over all its
rounds. Ratios are taken within this one run, never against figures from another run. A
peer that cannot run here (no Node, no npm registry) is reported as unavailable with the
reason, not as a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time

import numpy as np

from wasmforge.store import files

ORT_WEB_VERSION = "1.31.1"   # the newest release: the peer to beat
HERE = os.path.dirname(os.path.abspath(__file__))
# ResNet-50 is ~4.1 G multiply-adds; one Zen 4 core does 16 FLOP/cycle with 128-bit SIMD
WASM_SIMD_PEAK_GFLOPS = 42.0
# `doit bench`'s rounds: with one, a slow spell of a shared machine (minutes long, on either
# core) lands on whichever system is running then; seen: our 2-thread timings at 107 and at
# 172 ms within one run, in different rounds
ROUNDS = 3


def median_ms(fn, repeats: int) -> tuple[float, list[float]]:
    """One warm-up call of ``fn``, then ``repeats`` timed calls: (their median, each) in ms."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), times


def bench_wasmtime(wasm: str, x: dict, repeats: int, aot_dir: str, threads: int = 1,
                   startup: bool = True) -> dict:
    """Startup (compile + instantiate with the weights + _initialize + starting the worker
    threads; then the same from the ahead-of-time compiled cache) apart from the
    steady-state median. ``startup=False``: the steady state only (a later round: the
    module comes from the cache the first round filled)."""
    from wasmforge.engines.host import WasmModel

    if not startup:
        with WasmModel(wasm, aot_cache=aot_dir, threads=threads) as m:
            med, times = median_ms(lambda: m.run(x), repeats)
        return {"median_ms": med, "times_ms": times}
    t0 = time.perf_counter()
    m = WasmModel(wasm, threads=threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    WasmModel(wasm, aot_cache=aot_dir, threads=threads).close()     # fills the cache if needed
    t0 = time.perf_counter()
    WasmModel(wasm, aot_cache=aot_dir, threads=threads).close()
    load_aot_ms = (time.perf_counter() - t0) * 1e3
    t1 = time.perf_counter()
    m.run(x)
    first_ms = (time.perf_counter() - t1) * 1e3
    med, times = median_ms(lambda: m.run(x), repeats)
    tasks = m.worker_tasks
    m.close()
    return {"median_ms": med, "times_ms": times, "load_ms": load_ms, "load_from_aot_cache_ms": load_aot_ms,
            "first_ms": first_ms, "module": os.path.basename(wasm), "threads": threads,
            "worker_tasks": tasks}


def bench_ort(onnx_path: str, x: dict, threads: int, repeats: int) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    med, times = median_ms(lambda: sess.run(None, x), repeats)
    return {"median_ms": med, "times_ms": times, "version": ort.__version__}


def ortweb_dir(build_root: str) -> tuple[str | None, str]:
    """Install onnxruntime-web into <build>/.ortweb-<version> once; returns (dir, reason if unavailable)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None, "node/npm not installed"
    d = os.path.join(build_root, f".ortweb-{ORT_WEB_VERSION}")
    if not os.path.isdir(os.path.join(d, "node_modules", "onnxruntime-web")):
        os.makedirs(d, exist_ok=True)
        res = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent",
                              f"onnxruntime-web@{ORT_WEB_VERSION}"], cwd=d, capture_output=True, text=True)
        if res.returncode != 0:
            return None, f"npm install onnxruntime-web failed: {res.stderr.strip().splitlines()[-1:]}"
    for script in ("ortweb.mjs", "ortweb_server.mjs"):
        shutil.copy(os.path.join(HERE, script), os.path.join(d, script))
    return d, ""


def bench_ortweb(d: str, onnx_path: str, inp: dict, threads: int, repeats: int) -> dict:
    res = subprocess.run(["node", "ortweb.mjs", os.path.abspath(onnx_path), str(threads), str(repeats),
                          inp["name"], ",".join(str(s) for s in inp["shape"])],
                         cwd=d, capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        return {"unavailable": f"node failed: {res.stderr.strip().splitlines()[-1:]}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(model_name: str, wasm: str, onnx_path: str, build_root: str, out: str, repeats: int = 5,
        gflop: float | None = None, wasm_threads: str | None = None, rounds: int = ROUNDS) -> dict:
    """``wasm``: the portable module (1 thread); ``wasm_threads``: the threads variant (2).
    ``rounds`` > 1: every system runs once per round, one after another, and its median is
    over all its rounds' timings, so a slow spell of a shared machine hits every system
    instead of the one that happened to be running."""
    from wasmforge.engines.host import WasmModel
    from wasmforge.stages.validate import index_bounds, seeded_inputs

    inputs = WasmModel(wasm).inputs
    x = seeded_inputs(inputs, 0, index_bounds(onnx_path))
    per_round = [_one_round(wasm, inputs, x, onnx_path, build_root, repeats, wasm_threads, startup=i == 0)
                 for i in range(max(1, rounds))]
    systems = {key: merge_rounds([r[key] for r in per_round]) for key in per_round[0]}
    return _result(model_name, systems, repeats, len(per_round), gflop, out)


def merge_rounds(results: list[dict]) -> dict:
    """One system's results over the rounds: the first round's fields (startup, versions),
    every round's timings, and their median; unavailable if any round was."""
    if missing := [r for r in results if "median_ms" not in r]:
        return missing[0]
    times = [t for r in results for t in r["times_ms"]]
    return {**results[0], "times_ms": times, "median_ms": statistics.median(times), "rounds": len(results)}


def _one_round(wasm: str, inputs: list, x: dict, onnx_path: str, build_root: str, repeats: int,
               wasm_threads: str | None, startup: bool = True) -> dict:
    """Every system once; ``startup``: our modules' startup timed too (the first round)."""
    aot = os.path.join(build_root, ".cwasm")
    systems: dict[str, dict] = {}
    systems["wasmforge wasmtime 1t"] = bench_wasmtime(wasm, x, repeats, aot, startup=startup)
    if wasm_threads and os.path.isfile(wasm_threads):
        systems["wasmforge wasmtime 2t"] = bench_wasmtime(wasm_threads, x, repeats, aot, threads=2, startup=startup)
    else:
        systems["wasmforge wasmtime 2t"] = {"unavailable": f"no threads variant at {wasm_threads}"}
    d, why = ortweb_dir(build_root)
    for t in (1, 2):
        key = f"onnxruntime-web wasm {t}t"
        if d is None or len(inputs) != 1 or inputs[0]["dtype"] != "float32":
            systems[key] = {"unavailable": why or "only single float32 input models"}
        else:
            systems[key] = bench_ortweb(d, onnx_path, inputs[0], t, repeats)
    for t in (1, 2):
        systems[f"onnxruntime native {t}t"] = bench_ort(onnx_path, x, t, repeats)
    return systems


def _result(model_name: str, systems: dict, repeats: int, rounds: int, gflop: float | None, out: str) -> dict:
    ours = systems["wasmforge wasmtime 1t"]["median_ms"]
    result = {"model": model_name, "repeats": repeats, "rounds": rounds, "systems": systems}
    for t in (1, 2):
        peer = systems[f"onnxruntime-web wasm {t}t"]
        ours_t = systems[f"wasmforge wasmtime {t}t"].get("median_ms", ours)
        result[f"ratio_vs_ort_web_{t}t"] = ours_t / peer["median_ms"] if "median_ms" in peer else None
    result["ratio_vs_ort_native_1t"] = ours / systems["onnxruntime native 1t"]["median_ms"]
    if "median_ms" in systems["wasmforge wasmtime 2t"]:
        result["speedup_2t_over_1t"] = ours / systems["wasmforge wasmtime 2t"]["median_ms"]
    if gflop:
        result["gflop"] = gflop
        result["fraction_of_wasm_simd_peak_1t"] = gflop / (ours / 1e3) / WASM_SIMD_PEAK_GFLOPS
    files.write_json(out, result)
    return result


def table(result: dict) -> str:
    """Each system against ours on the same number of threads (ours 1t where a peer has no
    thread count of ours to compare with)."""
    rows = ["| system | median ms | ours (same threads) / system |", "|---|---|---|"]
    systems = result["systems"]
    for name, s in systems.items():
        if "median_ms" not in s:
            rows.append(f"| {name} | unavailable: {s['unavailable']} | |")
            continue
        t = "2t" if name.endswith(" 2t") else "1t"
        ours = systems[f"wasmforge wasmtime {t}"].get("median_ms") or systems["wasmforge wasmtime 1t"]["median_ms"]
        rows.append(f"| {name} | {s['median_ms']:.1f} | {ours / s['median_ms']:.2f} |")
    extra = [f"{k} = {v:.3f}" for k, v in result.items() if k.startswith(("ratio_", "speedup_", "fraction_")) and v]
    return "\n".join(rows + ["", *extra])


def gflop(onnx_path: str) -> float:
    """Multiply-add work of the convolutions and matrix products, in GFLOP (2 per MAC)."""
    import onnx
    from onnx import shape_inference

    model = shape_inference.infer_shapes(onnx.load(onnx_path))
    g = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(g.value_info) + list(g.output) + list(g.input)}
    for i in g.initializer:
        shapes[i.name] = list(i.dims)
    macs = 0
    for n in g.node:
        out = shapes.get(n.output[0])
        if not out or not all(out):
            continue
        if n.op_type == "Conv":
            w = shapes[n.input[1]]
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul"):
            a = shapes.get(n.input[0])
            if a:
                k = a[-1] if not any(x.name == "transA" and x.i for x in n.attribute) else a[-2]
                macs += int(np.prod(out)) * k
    return 2 * macs / 1e9


def profile_table(prof: dict) -> str:
    """One row per kernel, slowest first: ms per inference, share of the kernels' sum, calls."""
    total = sum(k["ms"] for k in prof["kernels"]) or 1.0
    rows = [f"{'ms/run':>9} {'share':>6} {'calls':>5}  kernel"]
    rows += [f"{k['ms']:9.2f} {100 * k['ms'] / total:5.1f}% {k['calls']:5d}  {k['kernel']}" for k in prof["kernels"]]
    rows.append(f"{total:9.2f} in kernels; median run {prof['wall_ms']:.2f} ms wall ({prof['runs']} runs)")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    """``python -m wasmforge.bench <module.wasm> [--threads N] [--runs N] [--profile]``: time
    one built module alone (warm-up, then each run and the median and minimum), on seeded
    inputs; ``--profile``: per kernel, its time per run inside the module."""
    import argparse

    from wasmforge.engines.host import WasmModel
    from wasmforge.stages.validate import seeded_inputs

    ap = argparse.ArgumentParser(prog="python -m wasmforge.bench", description=main.__doc__)
    ap.add_argument("wasm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--profile", action="store_true", help="time every kernel call inside the module")
    args = ap.parse_args(argv)
    with WasmModel(args.wasm, threads=args.threads) as m:
        x = seeded_inputs(m.inputs, 0)
        if args.profile:
            print(profile_table(m.profile(x, args.runs)))
            return 0
        med, times = median_ms(lambda: m.run(x), args.runs)
    print(f"{args.wasm}, {args.threads} thread(s): median {med:.1f} ms, min {min(times):.1f} ms, "
          f"runs {' '.join(f'{t:.0f}' for t in times)}")
    return 0
