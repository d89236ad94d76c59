"""``python -m pipeline <stage> <model>``: run one stage of one model (what doit calls);
``python -m pipeline bench <model>``: benchmark a built model against its peers."""
from __future__ import annotations

import os
import sys

import models
from pipeline import cache, dsl, stages
from pipeline.errors import StageError
from pipeline.oci import OciError
from toolchain import ToolchainError


def main(argv: list[str]) -> int:
    trials = focus = jobs = threads = None
    fresh, recheck, grid = "--fresh" in argv, "--recheck" in argv, "--grid" in argv
    argv = [a for a in argv if a not in ("--fresh", "--recheck", "--grid")]
    only = ""
    if "--only" in argv and (i := argv.index("--only")) + 1 < len(argv):
        only, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    while len(argv) >= 4 and argv[-2] in ("--trials", "--focus", "--jobs", "--threads") and argv[-1].isdigit():
        if argv[-2] == "--trials":
            trials = int(argv[-1])
        elif argv[-2] == "--focus":
            focus = int(argv[-1])
        elif argv[-2] == "--threads":
            threads = int(argv[-1])
        else:
            jobs = int(argv[-1])
        argv = argv[:-2]
    if len(argv) != 2:
        print("usage: python -m pipeline <stage> <model>\n"
              "       python -m pipeline bench <model>\n"
              "       python -m pipeline tune <model> [--trials N] [--focus K] [--jobs J] [--threads T] [--fresh]\n"
              "       python -m pipeline tune <model> --threads T --recheck\n"
              "       python -m pipeline tune <model> --grid [--threads T] [--only TEXT]\n"
              "       python -m pipeline publish <model>\n"
              f"  stages: {', '.join(stages.STAGES)}", file=sys.stderr)
        return 2
    stage, name = argv
    try:
        models.load()
        m = dsl.lookup(name)
        if stage == "bench":
            from pipeline import bench

            p = stages.Paths(m)
            result = bench.run(name, p.published, p.source, p.root, os.path.join(p.dir, "bench.json"),
                               repeats=int(os.environ.get("WASMFORGE_BENCH_REPEATS", "5")),
                               rounds=int(os.environ.get("WASMFORGE_BENCH_ROUNDS", str(bench.ROUNDS))),
                               gflop=bench.gflop(p.source), wasm_threads=p.published_threads)
            print(bench.table(result))
            return 0
        if stage == "publish":
            import toolchain
            from pipeline import publish, relax_build

            p = stages.Paths(m)
            tools = {t.name: t.identity() for t in (toolchain.clang(), toolchain.wasm_ld(), toolchain.wasm_opt())}
            for pkg in ("apache-tvm", "apache-tvm-ffi", "onnx", "onnxruntime", "wasmtime"):
                tools[pkg] = toolchain.python_package(pkg)
            tuning = {os.path.basename(f): cache.file_sha256(f) for f in relax_build.tuning_files(m.tuning_dir())}
            # the threads variant's own log, when the model has one
            tuning.update({f"threads/{os.path.basename(f)}": cache.file_sha256(f)
                           for f in relax_build.tuning_files(m.threads_tuning_dir())})
            from pipeline import link

            objects = [p.stage("link", "obj", o) for o in link.OBJECTS] + [p.stage("emit", "kernels.o")]
            tools["llvm-ar"] = toolchain.llvm_ar().identity()
            result = publish.run(name, m.version, p.published, p.report, cache.file_sha256(p.source), tuning,
                                 tools, os.path.join(p.dir, "bench.json"), objects, toolchain.llvm_ar().path,
                                 p.published_threads, p.report_threads)
            print(f"{name}: publish done: {result}", file=sys.stderr)
            return 0
        if stage == "tune":
            import toolchain
            from pipeline import tune

            p = stages.Paths(m)
            extra = [f for f, v in (("--trials", trials), ("--focus", focus), ("--jobs", jobs), ("--fresh", fresh)) if v]
            if only and not grid:
                raise StageError("tune", m.tuning_dir(), "--only picks the kernels of a --grid run: give --grid")
            if (recheck or grid) and extra:
                raise StageError("tune", m.tuning_dir(), f"{'--recheck' if recheck else '--grid'} does not search: "
                                 f"{', '.join(extra)} would be ignored; leave them out")
            if grid:    # time the register-tiled convolution schedules against the log's best
                if recheck:
                    raise StageError("tune", m.tuning_dir(), "--grid and --recheck are two runs: give one")
                t = threads or 1
                result = tune.grid(p.stage("import", "model.json"), stages.params(m)["relax_build"],
                                   m.tuning_dir() if t == 1 else m.threads_tuning_dir(),
                                   p.stage("tune" if t == 1 else "tune_threads"), toolchain.clang(), toolchain.wasm_ld(),
                                   threads_log=m.threads_tuning_dir(), threads=t, seed_log=m.tuning_dir(),
                                   only=only)
                print(f"{name}: tune --grid done: {result}", file=sys.stderr)
                return 0
            threads = threads or 1
            # the threads variant's kernels: their own log, seeded from the one-thread log
            log, work = (m.tuning_dir(), "tune") if threads == 1 else (m.threads_tuning_dir(), "tune_threads")
            if recheck:   # re-time the threads log against the one-thread log, no search
                if threads == 1:
                    raise StageError("tune", log, "--recheck re-times the threads variant's log: give --threads T")
                result = tune.recheck(p.stage("import", "model.json"), stages.params(m)["relax_build"], log,
                                      m.tuning_dir(), p.stage(work), toolchain.clang(), toolchain.wasm_ld(), threads)
                print(f"{name}: tune --recheck done: {result}", file=sys.stderr)
                return 0
            result = tune.run(p.stage("import", "model.json"), stages.params(m)["relax_build"], log,
                              p.stage(work), trials if trials else m.tune_trials,
                              toolchain.clang(), toolchain.wasm_ld(), focus=focus or 0, fresh=fresh,
                              jobs=jobs or 1, threads=threads, seed_log=m.tuning_dir() if threads > 1 else "",
                              threads_log=m.threads_tuning_dir() if threads == 1 else "")
            print(f"{name}: tune done: {result}", file=sys.stderr)
            return 0
        if stage not in stages.STAGES:
            raise dsl.DeclarationError(f"unknown stage {stage!r}; stages: {', '.join(stages.STAGES)}")
        result = stages.run_stage(m, stage)
    except (StageError, ToolchainError, dsl.DeclarationError, OciError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{name}: {stage} done: {result}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
