"""Our module and onnxruntime-web, alternated in short turns, each kept alive in its own
process (``../shared/ANCHORS.md``'s method for noisy shared machines).

Per turn, each system runs one untimed warm-up and ``runs`` timed inferences, then the
other system does; ``turns`` times. The ratio of a turn is our median over the peer's, and
the result is the median of the per-turn ratios with their spread: a slow spell of the
machine (tens of seconds) then hits both systems alike, and neither's caches are flushed
between its inferences.

    python -m wasmforge.bench.paired MODEL.onnx MODULE.wasm [--threads T] [--turns N] [--runs R]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile

from wasmforge.bench import median_ms, ortweb_dir


class OrtWeb:
    """onnxruntime-web in a Node process of its own, answering one turn at a time."""

    def __init__(self, build_root: str, onnx_path: str, inputs: list[dict], x: dict, threads: int):
        d, why = ortweb_dir(build_root)
        if d is None:
            raise RuntimeError(f"onnxruntime-web unavailable: {why}")
        self.tmp = tempfile.TemporaryDirectory()
        decls = []
        for inp in inputs:
            path = os.path.join(self.tmp.name, f"{len(decls)}.bin")
            x[inp["name"]].tofile(path)
            decls.append({"name": inp["name"], "dtype": inp["dtype"], "shape": inp["shape"], "file": path})
        spec = os.path.join(self.tmp.name, "inputs.json")
        with open(spec, "w") as f:
            json.dump(decls, f)
        self.proc = subprocess.Popen(["node", "ortweb_server.mjs", os.path.abspath(onnx_path), str(threads), spec],
                                     cwd=d, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.proc.stdout.readline())

    def turn(self, runs: int) -> list[float]:
        self.proc.stdin.write(f"{runs}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["times_ms"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.tmp.cleanup()


def paired(onnx_path: str, wasm: str, build_root: str, threads: int = 1, turns: int = 10, runs: int = 3) -> dict:
    from wasmforge.engines.host import WasmModel
    from wasmforge.stages.validate import index_bounds, seeded_inputs

    with WasmModel(wasm, threads=threads) as ours:
        x = seeded_inputs(ours.inputs, 0, index_bounds(onnx_path))
        peer = OrtWeb(build_root, onnx_path, ours.inputs, x, threads)
        try:
            ratios, ours_ms, peer_ms = [], [], []
            for _ in range(turns):
                a = median_ms(lambda: ours.run(x), runs)[1]   # after one warm-up
                b = peer.turn(runs + 1)[1:]                      # the first is its warm-up
                ours_ms += a
                peer_ms += b
                ratios.append(statistics.median(a) / statistics.median(b))
        finally:
            peer.close()
    ratios.sort()
    return {"threads": threads, "turns": turns, "runs_per_turn": runs, "ratio": statistics.median(ratios),
            "ratio_spread": [ratios[0], ratios[-1]], "ours_ms": statistics.median(ours_ms),
            "ortweb_ms": statistics.median(peer_ms), "ortweb_version": peer.info.get("version"),
            "engine": "wasmtime (ours), V8 in Node (onnxruntime-web)"}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from wasmforge.graph import build_root

    ap = argparse.ArgumentParser(prog="python -m wasmforge.bench.paired", description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx")
    ap.add_argument("wasm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    r = paired(args.onnx, args.wasm, build_root(), args.threads, args.turns, args.runs)
    print(f"{os.path.basename(args.wasm)}, {args.threads} thread(s): ours {r['ours_ms']:.1f} ms, "
          f"onnxruntime-web {r['ortweb_version']} {r['ortweb_ms']:.1f} ms; ratio {r['ratio']:.3f} "
          f"(per-turn {r['ratio_spread'][0]:.3f}-{r['ratio_spread'][1]:.3f}, {r['turns']} turns)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
