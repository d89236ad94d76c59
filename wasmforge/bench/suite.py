"""The benchmark suite (``doit bench:all``): every suite model, untuned unless its declaration
carries a tuning log, against onnxruntime-web on 1 thread and on 2, each measured with
``paired`` (alternated short turns, each system kept alive in its own process).

Writes ``<build>/bench/summary.json``, a table (per model: ours / onnxruntime-web on 1 and 2
threads with the per-turn spread, our times, ours 2t over 1t, and our portable module run in
Node's WASI against onnxruntime-web, both on V8; the geometric means of the ratios) and ``<build>/bench/suite.svg``, the ratios as bars.

    python -m wasmforge.bench.suite [--models a,b] [--turns N] [--runs R]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys

from wasmforge.dsl import DeclarationError
from wasmforge.store import files

# every zoo model that materializes, and the two the repository writes (models/suite.py)
SUITE = ("resnet50", "squeezenet", "bvlc_alexnet", "vgg19", "inception_v1", "densenet121", "shufflenet",
         "zfnet512", "text_encoder", "mobilenet_v2")
ENGINE = ("ours in wasmtime (Cranelift), and on 1 thread in Node's WASI (V8) too; onnxruntime-web in "
          "Node's V8, wasm backend")


def cpu() -> str:
    """The CPU, as BENCHMARKS.md names it: model name and family."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                fields.setdefault(k.strip(), v.strip())
    except OSError:
        return platform.processor() or "unknown"
    return f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}), {os.cpu_count()} cores"


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def row(name: str, one: dict, two: dict) -> dict:
    return {"model": name, "ratio_1t": one["ratio"], "spread_1t": one["ratio_spread"],
            "ratio_2t": two["ratio"], "spread_2t": two["ratio_spread"],
            "ours_ms_1t": one["ours_ms"], "ours_ms_2t": two["ours_ms"],
            "ortweb_ms_1t": one["ortweb_ms"], "ortweb_ms_2t": two["ortweb_ms"],
            "ours_2t_speedup": one["ours_ms"] / two["ours_ms"],
            **({"ratio_v8_1t": one["v8_ratio"], "spread_v8_1t": one["v8_ratio_spread"],
                "ours_v8_ms_1t": one["ours_v8_ms"]} if "v8_ratio" in one else {})}


def summarize(rows: list[dict], meta: dict) -> dict:
    return {**meta, "models": rows,
            "geomean_1t": geomean([r["ratio_1t"] for r in rows]),
            "geomean_2t": geomean([r["ratio_2t"] for r in rows]),
            "geomean_v8_1t": geomean([r["ratio_v8_1t"] for r in rows if "ratio_v8_1t" in r])}


def table(summary: dict) -> str:
    lines = [f"ours / onnxruntime-web {summary['ortweb_version']} (below 1: ours faster); {summary['cpu']}; "
             f"{summary['engine']}; median of {summary['turns']} paired turns",
             "", "| model | 1 thread | 2 threads | ours 1t ms | ours 2t ms | ours 2t over 1t "
             "| ours in V8, 1 thread | ours in V8 ms |", "|---|---|---|---|---|---|---|---|"]
    for r in summary["models"]:
        v8 = (f"{r['ratio_v8_1t']:.2f} ({r['spread_v8_1t'][0]:.2f}-{r['spread_v8_1t'][1]:.2f}) "
              f"| {r['ours_v8_ms_1t']:.1f}") if "ratio_v8_1t" in r else "- | -"
        lines.append(f"| {r['model']} | {r['ratio_1t']:.2f} ({r['spread_1t'][0]:.2f}-{r['spread_1t'][1]:.2f}) "
                     f"| {r['ratio_2t']:.2f} ({r['spread_2t'][0]:.2f}-{r['spread_2t'][1]:.2f}) "
                     f"| {r['ours_ms_1t']:.1f} | {r['ours_ms_2t']:.1f} | {r['ours_2t_speedup']:.2f}x | {v8} |")
    if summary["models"]:
        v8 = f"{summary['geomean_v8_1t']:.2f}" if summary.get("geomean_v8_1t") else "-"
        lines.append(f"| geometric mean | {summary['geomean_1t']:.2f} | {summary['geomean_2t']:.2f} | | | | {v8} | |")
    return "\n".join(lines)


def svg(summary: dict) -> str:
    """The ratios as horizontal bars, 1 and 2 threads per model, with the line at 1 (level
    with onnxruntime-web)."""
    rows = summary["models"]
    top = max([1.5] + [r[k] for r in rows for k in ("ratio_1t", "ratio_2t")])
    width, label, bar_h, gap = 720, 130, 11, 8
    scale = (width - label - 60) / top
    height = 40 + len(rows) * (2 * bar_h + gap) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11">',
           f'<text x="{label}" y="16">ours / onnxruntime-web {summary["ortweb_version"]} (shorter is faster); '
           f'{summary["cpu"].split(",")[0]}</text>']
    y = 30
    for r in rows:
        out.append(f'<text x="{label - 6}" y="{y + bar_h + 3}" text-anchor="end">{r["model"]}</text>')
        for k, color, tag in (("ratio_1t", "#4a7ab5", "1t"), ("ratio_2t", "#e08a2c", "2t")):
            w = r[k] * scale
            out.append(f'<rect x="{label}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
            out.append(f'<text x="{label + w + 4:.1f}" y="{y + bar_h - 2}">{r[k]:.2f} {tag}</text>')
            y += bar_h
        y += gap
    x1 = label + scale
    out.append(f'<line x1="{x1:.1f}" y1="24" x2="{x1:.1f}" y2="{y}" stroke="#333" stroke-dasharray="4 3"/>')
    out.append(f'<text x="{x1 + 3:.1f}" y="{y + 14}">1.0: level</text></svg>')
    return "\n".join(out) + "\n"


def run(models: tuple[str, ...], turns: int, runs: int) -> dict:
    from wasmforge import declarations, dsl, graph
    from wasmforge.bench.paired import paired

    declarations.load()
    rows, version = [], None
    for name in models:
        p = graph.Paths(dsl.lookup(name))
        for path in (p.published, p.published_threads):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: not built; run doit build:{name}")
        one = paired(p.source, p.published, p.root, 1, turns, runs, v8=True)
        two = paired(p.source, p.published_threads, p.root, 2, turns, runs)
        version = one["ortweb_version"]
        rows.append(row(name, one, two))
        print(f"{name}: {rows[-1]['ratio_1t']:.2f} on 1 thread, {rows[-1]['ratio_2t']:.2f} on 2", file=sys.stderr,
              flush=True)
    summary = summarize(rows, {"cpu": cpu(), "engine": ENGINE, "ortweb_version": version, "turns": turns,
                               "runs_per_turn": runs})
    out = os.path.join(graph.build_root(), "bench")
    files.write_json(os.path.join(out, "summary.json"), summary)
    files.write_bytes(os.path.join(out, "suite.svg"), svg(summary).encode())
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wasmforge.bench.suite", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(SUITE), help="comma-separated (default: the whole suite)")
    ap.add_argument("--turns", type=int, default=int(os.environ.get("WASMFORGE_BENCH_TURNS", "8")))
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    try:
        summary = run(tuple(m for m in args.models.split(",") if m), args.turns, args.runs)
    except (FileNotFoundError, RuntimeError, DeclarationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
