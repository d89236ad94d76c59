"""What a user reads at the end of ``doit build:<model>``: per variant, the module's path and
size, the validation verdict and the largest error. The full results stay in each stage's
``stage.json`` and in ``report.json``."""
from __future__ import annotations

import os

from wasmforge import graph
from wasmforge.store import files


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def summary_lines(m) -> list[str]:
    p = graph.Paths(m)
    lines = []
    for v in (graph.PORTABLE, graph.THREADS):
        if not os.path.isfile(p.report(v)):
            continue
        r = files.read_json(p.report(v))
        errors = [o.get("max_rel_error") for case in r.get("inputs", []) for o in case.get("outputs", {}).values()]
        worst = max((e for e in errors if e is not None), default=None)
        module = p.module(v)
        size = _size(os.path.getsize(module)) if os.path.isfile(module) else "not published"
        lines.append(f"{m.name} ({v.name}, {v.threads} thread{'s' * (v.threads > 1)}): "
                     f"{'passed' if r.get('passed') else 'FAILED'}"
                     + (f", max error {worst:.2g} of the output's scale" if worst is not None else "")
                     + f"; {os.path.relpath(module)} {size}")
    return lines


def finish_build(m) -> bool:
    """``doit build:<model>``'s action: the summary, then the store trimmed to its limit."""
    from wasmforge.store import local

    for line in summary_lines(m):
        print(line)
    try:
        trimmed = local.trim_to_limit()
    except ValueError as e:
        print(f"error: {e}")
        return False
    if trimmed:
        print(trimmed)
    return True
