"""``python -m wasmforge.conformance``: build ONNX's test models and validate them against
their expected outputs (what ``doit conformance`` runs).

    python -m wasmforge.conformance [--sample] [--only TEXT] [--jobs N]
    python -m wasmforge.conformance one <declaration.toml> <result.json>   (one case, in its own process)

Writes ``<build>/conformance/summary.json`` and prints the table. Exit status 1 when a case
crashed or gave a wrong answer.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from wasmforge import conformance, graph
from wasmforge.store import files

PORTABLE_STAGES = ("materialize", "import", "relax_build", "emit", "executor", "link", "opt", "validate")


def one(declaration: str, result_path: str) -> int:
    """Build one case up to the portable module's validation; write its outcome."""
    from wasmforge import dsl
    from wasmforge.errors import StageError

    result = {"outcome": "passed", "stage": None, "reason": ""}
    stage = None
    try:
        m = dsl.model_from_toml(declaration)
        names = {s.name for s in graph.stages(m)}
        for stage in (s for s in PORTABLE_STAGES if s in names):
            graph.run_stage(m, stage)
    except dsl.DeclarationError as e:
        result = {"outcome": "refused", "stage": "declaration", "reason": str(e)}
    except StageError as e:
        outcome, reason = conformance.classify(e.stage, e.problem)
        result = {"outcome": outcome, "stage": e.stage, "reason": reason, "file": e.path}
    except Exception as e:   # what the pipeline did not turn into a clear error
        result = {"outcome": "crashed", "stage": stage, "reason": f"{type(e).__name__}: {e}"[:400],
                  "traceback": traceback.format_exc()[-4000:]}
    files.write_json(result_path, result)
    return 0


def _run_case(case: conformance.Case, out: str, env: dict) -> dict:
    decl = os.path.join(out, "models", f"{case.name}.toml")
    files.write_bytes(decl, conformance.declaration(case).encode())
    result_path = os.path.join(out, case.name, "conformance.json")
    if os.path.exists(result_path):
        os.unlink(result_path)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "wasmforge.conformance", "one", decl, result_path],
                              env=env, capture_output=True, text=True, timeout=conformance.TIME_LIMIT)
        if os.path.isfile(result_path):
            result = files.read_json(result_path)
        else:   # the process died: a signal, or an error before the result was written
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            result = {"outcome": "crashed", "stage": None,
                      "reason": f"exit status {proc.returncode}: " + " | ".join(tail)}
    except subprocess.TimeoutExpired:
        result = {"outcome": "crashed", "stage": None, "reason": f"no result within {conformance.TIME_LIMIT} s"}
    return {"name": case.name, "suite": case.suite, "model": case.onnx, **result,
            "seconds": round(time.perf_counter() - t0, 1)}


def run_all(sample: bool, only: str, jobs: int) -> int:
    out = os.path.join(graph.build_root(), "conformance")
    todo = [c for c in conformance.cases() if (not sample or c.name in conformance.SAMPLE) and only in c.name]
    if not todo:
        print(f"error: no conformance case matches {only!r}", file=sys.stderr)
        return 1
    # each case builds in <build>/conformance/<name>/ through the same store as every build
    env = dict(os.environ, WASMFORGE_BUILD=out)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = []
        for r in pool.map(lambda c: _run_case(c, out, env), todo):
            print(f"{r['outcome']:<8} {r['name']} ({r['seconds']} s)", file=sys.stderr, flush=True)
            results.append(r)
    summary = {"total": len(results), "counts": conformance.counts(results),
               "sample": sample, "only": only, "cases": results}
    files.write_json(os.path.join(out, "summary.json"), summary)
    print(conformance.table(summary))
    print(f"summary: {os.path.join(out, 'summary.json')}")
    return 1 if summary["counts"]["crashed"] or summary["counts"]["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["one"]:
        return one(*argv[1:3])
    ap = argparse.ArgumentParser(prog="python -m wasmforge.conformance", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", action="store_true", help="only the fixed sample CI runs")
    ap.add_argument("--only", default="", help="only the cases whose name contains this text")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="cases built at once")
    args = ap.parse_args(argv)
    return run_all(args.sample, args.only, max(1, args.jobs))


if __name__ == "__main__":
    sys.exit(main())
