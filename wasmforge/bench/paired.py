"""Our module and onnxruntime-web, alternated in short turns, each kept alive in its own
process (``../shared/ANCHORS.md``'s method for noisy shared machines); with ``--v8``, our
module in Node's WASI as a third system (the same engine as the peer's).

Per turn, each system runs one untimed warm-up and ``runs`` timed inferences, then the
other system does; ``turns`` times. The ratio of a turn is our median over the peer's, and
the result is the median of the per-turn ratios with their spread: a slow spell of the
machine (tens of seconds) then hits both systems alike, and neither's caches are flushed
between its inferences.

    python -m wasmforge.bench.paired MODEL.onnx MODULE.wasm [--threads T] [--turns N] [--runs R] [--v8]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile

from wasmforge.bench import median_ms, ortweb_dir


class NodeServer:
    """A Node process of its own running ``script`` (``ortweb_server.mjs``,
    ``ours_node_server.mjs``) on the inputs ``x``, answering one turn at a time."""

    def __init__(self, script: str, args: list[str], cwd: str, inputs: list[dict], x: dict):
        self.tmp = tempfile.TemporaryDirectory()
        decls = []
        for inp in inputs:
            path = os.path.join(self.tmp.name, f"{len(decls)}.bin")
            x[inp["name"]].tofile(path)
            decls.append({"name": inp["name"], "dtype": inp["dtype"], "shape": inp["shape"], "file": path})
        spec = os.path.join(self.tmp.name, "inputs.json")
        with open(spec, "w") as f:
            json.dump(decls, f)
        self.proc = subprocess.Popen(["node", script, *args, spec], cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.info = self._answer()

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        answer = json.loads(line) if line else {"error": "the Node process ended"}
        if "error" in answer:
            self.close()
            raise RuntimeError(f"node: {answer['error']}")
        return answer

    def turn(self, runs: int) -> list[float]:
        self.proc.stdin.write(f"{runs}\n")
        self.proc.stdin.flush()
        return self._answer()["times_ms"]

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.tmp.cleanup()


def ortweb(build_root: str, onnx_path: str, inputs: list[dict], x: dict, threads: int) -> NodeServer:
    """onnxruntime-web's wasm backend on ``threads`` threads."""
    d, why = ortweb_dir(build_root)
    if d is None:
        raise RuntimeError(f"onnxruntime-web unavailable: {why}")
    return NodeServer("ortweb_server.mjs", [os.path.abspath(onnx_path), str(threads)], d, inputs, x)


def ours_in_node(wasm: str, inputs: list[dict], x: dict) -> NodeServer:
    """Our portable module in Node's WASI: V8's engine instead of wasmtime's Cranelift."""
    here = os.path.dirname(os.path.abspath(__file__))
    return NodeServer(os.path.join(here, "ours_node_server.mjs"), [os.path.abspath(wasm)], here, inputs, x)


def paired(onnx_path: str, wasm: str, build_root: str, threads: int = 1, turns: int = 10, runs: int = 3,
           v8: bool = False) -> dict:
    """Ours in wasmtime against onnxruntime-web in Node, alternated per turn. ``v8`` (one
    thread): our module in Node's WASI too, a third system in each turn, whose ratio to
    onnxruntime-web compares the two on the same engine."""
    from wasmforge.engines.host import WasmModel
    from wasmforge.stages.validate import index_bounds, seeded_inputs

    with WasmModel(wasm, threads=threads) as ours:
        x = seeded_inputs(ours.inputs, 0, index_bounds(onnx_path))
        peer = ortweb(build_root, onnx_path, ours.inputs, x, threads)
        node = ours_in_node(wasm, ours.inputs, x) if v8 and threads == 1 else None
        try:
            ratios, v8_ratios, ours_ms, peer_ms, node_ms = [], [], [], [], []
            for _ in range(turns):
                a = median_ms(lambda: ours.run(x), runs)[1]   # after one warm-up
                b = peer.turn(runs + 1)[1:]                      # the first is its warm-up
                ours_ms += a
                peer_ms += b
                ratios.append(statistics.median(a) / statistics.median(b))
                if node is not None:
                    c = node.turn(runs + 1)[1:]
                    node_ms += c
                    v8_ratios.append(statistics.median(c) / statistics.median(b))
        finally:
            peer.close()
            if node is not None:
                node.close()
    ratios.sort()
    v8_ratios.sort()
    return {"threads": threads, "turns": turns, "runs_per_turn": runs, "ratio": statistics.median(ratios),
            "ratio_spread": [ratios[0], ratios[-1]], "ours_ms": statistics.median(ours_ms),
            "ortweb_ms": statistics.median(peer_ms), "ortweb_version": peer.info.get("version"),
            "engine": "wasmtime (ours), V8 in Node (onnxruntime-web)",
            **({"v8_ratio": statistics.median(v8_ratios), "v8_ratio_spread": [v8_ratios[0], v8_ratios[-1]],
                "ours_v8_ms": statistics.median(node_ms)} if node is not None else {})}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from wasmforge.graph import build_root

    ap = argparse.ArgumentParser(prog="python -m wasmforge.bench.paired", description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx")
    ap.add_argument("wasm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--v8", action="store_true", help="our module in Node's WASI too (1 thread)")
    args = ap.parse_args(argv)
    r = paired(args.onnx, args.wasm, build_root(), args.threads, args.turns, args.runs, v8=args.v8)
    print(f"{os.path.basename(args.wasm)}, {args.threads} thread(s): ours {r['ours_ms']:.1f} ms, "
          f"onnxruntime-web {r['ortweb_version']} {r['ortweb_ms']:.1f} ms; ratio {r['ratio']:.3f} "
          f"(per-turn {r['ratio_spread'][0]:.3f}-{r['ratio_spread'][1]:.3f}, {r['turns']} turns)")
    if "v8_ratio" in r:
        print(f"ours in Node's V8 {r['ours_v8_ms']:.1f} ms; ratio {r['v8_ratio']:.3f} "
              f"(per-turn {r['v8_ratio_spread'][0]:.3f}-{r['v8_ratio_spread'][1]:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
