"""Cold start: from a process's start to its first inference, ours served over HTTP against
onnxruntime-web in Node, alternated in turns.

    python -m wasmforge.bench.coldstart resnet50 [--turns 6]

Ours: ``wasmtime serve --allow-precompiled`` on the AOT-compiled HTTP component
(``doit http_aot:<model>``), timed from the process's start to the answer of a first
binary-extension infer request, which a client sends as soon as the port accepts. That
includes the process, loading the ``.cwasm``, instantiating the component (the module's
memory image, its ``_initialize``) and the first run, the one that touches every weight page.

The peer: ``node ortweb.mjs`` (onnxruntime-web, wasm backend, 1 thread), which reports the
session's create and first-run times; the figure compared is their sum, which leaves out
Node's own start and the import of onnxruntime-web, so the comparison favours the peer. Its
whole process time is reported beside it.

Each turn runs ours, then the peer; the ratio is the median of the per-turn ratios. Writes
``build/<model>/coldstart.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from wasmforge import bench, declarations, dsl, graph, toolchain
from wasmforge.stages import http, validate
from wasmforge.store import files


def ours_once(wasmtime_cli: str, cwasm: str, model: str, body: bytes, headers: dict, timeout: float = 120) -> float:
    """Seconds from starting ``wasmtime serve`` to the first infer answer."""
    port = http.free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(http.serve_argv(wasmtime_cli, cwasm, "127.0.0.1", port, precompiled=True),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                status, _, answer = http.request(port, "POST", f"/v2/models/{model}/infer", body, headers)
                break
            except ConnectionRefusedError:
                if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"wasmtime serve did not answer (exit {proc.poll()})") from None
                time.sleep(0.002)
        elapsed = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"the first infer request got {status}: {answer[:200]!r}")
        return elapsed
    finally:
        proc.terminate()
        proc.wait()


def peer_once(ortweb: str, onnx_path: str, inp: dict) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run(["node", "ortweb.mjs", os.path.abspath(onnx_path), "1", "0", inp["name"],
                          ",".join(str(s) for s in inp["shape"])], cwd=ortweb, capture_output=True, text=True,
                         timeout=600)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"node failed: {res.stderr.strip().splitlines()[-1:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    return {"create_first_s": (r["create_ms"] + r["first_ms"]) / 1e3, "process_s": wall}


def run(m: dsl.Model, turns: int) -> dict:
    p = graph.Paths(m)
    for path, task in ((p.http_aot, "http_aot"), (p.source, "build")):
        if not os.path.isfile(path):
            raise SystemExit(f"error: {path} not found: run doit {task}:{m.name}")
    io = files.read_json(p.stage("import", "io.json"))
    if len(io["inputs"]) != 1 or io["inputs"][0]["dtype"] != "float32":
        raise SystemExit(f"error: {m.name}: the cold-start bench drives one float32 input (the peer's script)")
    inp = io["inputs"][0]
    feeds = validate.seeded_inputs(io["inputs"], 0)
    body, headers = http.binary_infer_body({inp["name"]: feeds[inp["name"]]})
    ortweb, why = bench.ortweb_dir(p.root)
    if ortweb is None:
        raise SystemExit(f"error: onnxruntime-web is unavailable: {why}")
    wasmtime_cli = toolchain.wasmtime_cli().path
    ours_once(wasmtime_cli, p.http_aot, m.name, body, headers)   # warm the page cache for both
    peer_once(ortweb, p.source, inp)
    rows = []
    for t in range(turns):
        ours = ours_once(wasmtime_cli, p.http_aot, m.name, body, headers)
        peer = peer_once(ortweb, p.source, inp)
        rows.append({"ours_s": round(ours, 3), "peer_create_first_s": round(peer["create_first_s"], 3),
                     "peer_process_s": round(peer["process_s"], 3),
                     "ratio": round(ours / peer["create_first_s"], 3)})
        print(f"turn {t + 1}/{turns}: ours {ours:.3f} s, onnxruntime-web create+first {peer['create_first_s']:.3f} s "
              f"(process {peer['process_s']:.3f} s), ratio {rows[-1]['ratio']:.2f}", file=sys.stderr, flush=True)
    ratios = [r["ratio"] for r in rows]
    summary = {"model": m.name, "cpu": toolchain.cpu_identity(), "onnxruntime_web": bench.ORT_WEB_VERSION,
               "wasmtime": toolchain.wasmtime_cli().version, "turns": rows,
               "ours_median_s": statistics.median(r["ours_s"] for r in rows),
               "peer_create_first_median_s": statistics.median(r["peer_create_first_s"] for r in rows),
               "ratio_median": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
               "command": f"python -m wasmforge.bench.coldstart {m.name} --turns {turns}"}
    files.write_json(os.path.join(p.dir, "coldstart.json"), summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wasmforge.bench.coldstart", description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--turns", type=int, default=6)
    args = ap.parse_args(argv)
    declarations.load()
    s = run(dsl.lookup(args.model), args.turns)
    print(f"{s['model']}: cold start to the first answer {s['ours_median_s']:.3f} s (wasmtime serve, AOT), "
          f"onnxruntime-web {s['onnxruntime_web']} create + first run {s['peer_create_first_median_s']:.3f} s: "
          f"ratio {s['ratio_median']:.2f} (range {s['ratio_range'][0]:.2f}-{s['ratio_range'][1]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
