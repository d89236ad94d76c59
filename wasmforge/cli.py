"""``python -m wasmforge``: what doit's tasks run, one subcommand each.

    python -m wasmforge stage <stage> <model>     run (or serve from the cache) one stage
    python -m wasmforge bench <model>             time the built module against its peers
    python -m wasmforge tune <model> [options]    autotune (see ``tune/options.py``)
    python -m wasmforge publish <model>           release the validated module
    python -m wasmforge serve <model> [--port N]  serve it over HTTP (wasmtime serve)

Every error a user can cause (a bad declaration, input or option, a missing tool, a
registry that refuses) is one line naming the file and the problem, and exit status 1.
"""
from __future__ import annotations

import argparse
import os
import sys

from wasmforge import declarations, dsl, graph
from wasmforge.errors import StageError
from wasmforge.release.oci import OciError
from wasmforge.toolchain import ToolchainError
from wasmforge.tune.options import TuneOptions, option_table


def _stage(m: dsl.Model, args) -> str:
    if args.stage not in graph.STAGE_NAMES:
        raise dsl.DeclarationError(f"unknown stage {args.stage!r}; stages: {', '.join(graph.STAGE_NAMES)}")
    return summary(args.stage, graph.run_stage(m, args.stage))


def _bench(m: dsl.Model, args) -> str:
    from wasmforge import bench

    p = graph.Paths(m)
    result = bench.run(m.name, p.published, p.source, p.root, os.path.join(p.dir, "bench.json"),
                       repeats=int(os.environ.get("WASMFORGE_BENCH_REPEATS", "5")),
                       rounds=int(os.environ.get("WASMFORGE_BENCH_ROUNDS", str(bench.ROUNDS))),
                       gflop=bench.gflop(p.source), wasm_threads=p.published_threads)
    print(bench.table(result))
    return "bench done"


def _tune(m: dsl.Model, args) -> str:
    from wasmforge import tune

    opts = TuneOptions(**{name: getattr(args, name) for name, *_ in option_table()})
    run = "tune --grid" if opts.grid else "tune --recheck" if opts.recheck else "tune"
    return f"{run} done: {tune.tune_model(m, opts)}"


def _publish(m: dsl.Model, args) -> str:
    from wasmforge.release import publish

    return f"publish done: {publish.publish_model(m)}"


def _serve(m: dsl.Model, args) -> str:
    """``wasmtime serve`` on the AOT-compiled HTTP component, in the foreground (Ctrl-C stops)."""
    from wasmforge import toolchain
    from wasmforge.stages import http

    cwasm = graph.Paths(m).http_aot
    if not os.path.isfile(cwasm):
        raise StageError("serve", cwasm, f"not built: run doit http_aot:{m.name} (doit serve:{m.name} does)")
    wasmtime = toolchain.wasmtime_cli().path
    print(f"serving {m.name} at http://{args.host}:{args.port}/v2/models/{m.name} (the Open Inference "
          f"Protocol; POST .../infer; Ctrl-C stops)", file=sys.stderr, flush=True)
    os.execv(wasmtime, http.serve_argv(wasmtime, cwasm, args.host, args.port, precompiled=True))


def summary(stage: str, result: dict) -> str:
    """One line for a stage's result: cache hit or miss, and its key figure. The whole
    result stays in the stage's ``stage.json``."""
    r = dict(result)
    figure = ""
    if "passed" in r:
        figure = "passed" if r["passed"] else "FAILED"
    elif "tuning_log" in r:   # relax_build
        tuned = len((r.get("tuning") or {}).get("tuned_kernels", []))
        figure = (f"{r['kernels']} kernels, {tuned} from the tuning log, "
                  f"{len(r.get('default_schedules') or [])} default schedules"
                  + (f", {len(r['parallel_loops'])} parallel loops" if "parallel_loops" in r else ""))
    elif "kernels" in r:
        figure = f"{r['kernels']} kernels"
    elif "arena_bytes" in r:
        figure = f"arena {r['arena_bytes'] / 1e6:.1f} MB, weights {r['weights_bytes'] / 1e6:.1f} MB"
    elif "bytes_after" in r:
        figure = f"{r['bytes_before'] / 1e6:.1f} -> {r['bytes_after'] / 1e6:.1f} MB"
    elif "bytes" in r:
        figure = f"{r['bytes'] / 1e6:.1f} MB"
    elif "inputs" in r:
        figure = ", ".join(f"{i['name']} {i['dtype']}{list(i['shape'])}" for i in r["inputs"])
    return f"{stage}: {r.get('cache', '')}" + (f", {figure}" if figure else "")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m wasmforge", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    st = sub.add_parser("stage", help="run one stage of one model (what doit calls)")
    st.add_argument("stage", help=f"one of: {', '.join(graph.STAGE_NAMES)}")
    st.add_argument("model")
    st.set_defaults(func=_stage)
    for name, func, text in (("bench", _bench, "benchmark a built model against its peers"),
                             ("publish", _publish, "release the validated module")):
        p = sub.add_parser(name, help=text)
        p.add_argument("model")
        p.set_defaults(func=func)
    sp = sub.add_parser("serve", help="serve the model over HTTP with wasmtime serve")
    sp.add_argument("model")
    sp.add_argument("--port", type=int, default=8080)
    sp.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    sp.set_defaults(func=_serve)
    tp = sub.add_parser("tune", help="autotune a model's kernels, measured in wasmtime")
    tp.add_argument("model")
    for name, kind, default, text in option_table():
        if kind is bool:
            tp.add_argument(f"--{name}", action="store_true", help=text)
        else:
            tp.add_argument(f"--{name}", type=kind, default=default, help=text)
    tp.set_defaults(func=_tune)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        declarations.load()
        m = dsl.lookup(args.model)
        line = args.func(m, args)
    except (StageError, ToolchainError, dsl.DeclarationError, OciError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.model}: {line}", file=sys.stderr)
    return 0
