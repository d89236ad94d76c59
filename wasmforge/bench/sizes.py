"""Module size against the model's weights, for every built model.

    python -m wasmforge.bench.sizes [--models resnet50,squeezenet]

A module carries its weights inside; this says what it carries beyond them: per model, the
bytes of the ONNX file's initializers (its weights), of the validated ``<model>.wasm`` and of
its HTTP component, and the module's ratio to the weights.
"""
from __future__ import annotations

import argparse
import os
import sys

from wasmforge import declarations, dsl, graph


def weight_bytes(onnx_path: str) -> int:
    """The bytes of a model's initializers, as the ONNX file stores them."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_path)
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


def sizes(m: dsl.Model) -> dict | None:
    """The figures of one model, or None when its module is not built."""
    p = graph.Paths(m)
    if not os.path.isfile(p.published):
        return None
    w = weight_bytes(p.source)
    module = os.path.getsize(p.published)
    return {"model": m.name, "weights_bytes": w, "module_bytes": module,
            "http_bytes": os.path.getsize(p.http) if os.path.isfile(p.http) else None,
            "ratio": round(module / w, 4) if w else None}


def table(rows: list[dict]) -> str:
    lines = ["| model | weights MB | module MB | module / weights | HTTP component MB |", "|---|---|---|---|---|"]
    for r in rows:
        http = f"{r['http_bytes'] / 1e6:.1f}" if r["http_bytes"] else ""
        lines.append(f"| {r['model']} | {r['weights_bytes'] / 1e6:.1f} | {r['module_bytes'] / 1e6:.1f} | "
                     f"{r['ratio']:.3f} | {http} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wasmforge.bench.sizes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="", help="comma-separated (default: every declared model that is built)")
    args = ap.parse_args(argv)
    models = declarations.load()
    names = [n for n in args.models.split(",") if n] or sorted(models)
    rows = [r for r in (sizes(dsl.lookup(n)) for n in names) if r]
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
