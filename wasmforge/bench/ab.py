"""Two builds of one model in wasmtime, alternated in short turns in one process: is B
faster than A?

Both modules are loaded side by side (each with its worker threads, when ``--threads`` is
above one) and fed the same seeded inputs. Per turn, A runs one untimed warm-up and
``runs`` timed inferences, then B does; the turn's ratio is B's minimum over A's, and the
result is the median of the per-turn ratios with their spread. The minimum of a few runs
is the figure least moved by the other tenants of a shared machine, and alternating turns
puts a slow spell on both builds alike. Before timing, both modules run once and their
outputs are compared, so a faster build that computes something else is reported as such.

    python -m wasmforge.bench.ab A.wasm B.wasm [--threads T] [--turns N] [--runs R]
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np


def turn_ms(fn, runs: int) -> float:
    """One untimed warm-up call of ``fn``, then the minimum of ``runs`` timed calls (ms)."""
    fn()
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t) * 1e3)
    return best


def ratio_summary(a_ms: list[float], b_ms: list[float]) -> dict:
    """Per-turn ratios B/A: their median and spread, with each build's median time."""
    ratios = sorted(b / a for a, b in zip(a_ms, b_ms, strict=True))
    return {"ratio": statistics.median(ratios), "ratio_spread": [ratios[0], ratios[-1]],
            "a_ms": statistics.median(a_ms), "b_ms": statistics.median(b_ms), "turns": len(ratios)}


def max_abs_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """The largest absolute difference between two modules' outputs (inf when their shapes differ)."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape:
            return float("inf")
        if x.size:
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
    return worst


def ab(a_wasm: str, b_wasm: str, threads: int = 1, turns: int = 10, runs: int = 3) -> dict:
    from wasmforge.engines.host import WasmModel
    from wasmforge.stages.validate import seeded_inputs

    with WasmModel(a_wasm, threads=threads) as a, WasmModel(b_wasm, threads=threads) as b:
        if [(d["shape"], d["dtype"]) for d in a.inputs] != [(d["shape"], d["dtype"]) for d in b.inputs]:
            raise ValueError(f"{a_wasm} and {b_wasm} take different inputs: not two builds of one model")
        x = seeded_inputs(a.inputs, 0)
        outputs = a.run(x), b.run(x)
        a_ms, b_ms = [], []
        for _ in range(turns):
            a_ms.append(turn_ms(lambda: a.run(x), runs))
            b_ms.append(turn_ms(lambda: b.run(x), runs))
    return {**ratio_summary(a_ms, b_ms), "threads": threads, "runs_per_turn": runs,
            "max_abs_difference": max_abs_difference(*outputs)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m wasmforge.bench.ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="the baseline module")
    ap.add_argument("b", help="the module compared with it")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    for p in (args.a, args.b):
        if not os.path.isfile(p):
            ap.error(f"{p}: module not found")
    r = ab(args.a, args.b, args.threads, args.turns, args.runs)
    print(f"{args.threads} thread(s), {r['turns']} turns of {r['runs_per_turn']} runs: "
          f"A {r['a_ms']:.2f} ms, B {r['b_ms']:.2f} ms; B/A {r['ratio']:.3f} "
          f"(per-turn {r['ratio_spread'][0]:.3f}-{r['ratio_spread'][1]:.3f}); "
          f"outputs differ by at most {r['max_abs_difference']:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
