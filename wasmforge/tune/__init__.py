"""Autotuning measured inside WebAssembly: MetaSchedule with a wasm32 builder and an
in-process wasmtime runner.

MetaSchedule's stock runners time candidates over RPC, and a WASI module cannot host an RPC
server (no sockets); timing on the host's native CPU would tune for the wrong machine code.
So each candidate is compiled for the wasm32 target and linked with the measurement module
(``runtime/wasmforge_measure.c``) into a tiny WASI reactor, in builder worker processes (one
per core, with a timeout), then instantiated in wasmtime in this very process and timed
there (warm-up, then the median of ``repeat`` timings of enough calls to last
``min_repeat_ms``).

The result is MetaSchedule's JSON database (workloads and tuning records) in the model's
tuning log folder, ``models/<name>.tuning/``: a build input, committed like source code.
Tuning is resumable: the records already in the log count against the trial budget and
seed the search.

The modules: ``tasks`` (the run's context, the model's tasks and target), ``measure``
(building candidates for wasm32 and timing them in wasmtime), ``log`` (the database on disk),
``search`` (MetaSchedule's search: ``run``), ``compare`` (side-by-side timings: ``recheck``,
``grid``) and ``options`` (the command's options). ``tune_model`` runs one of them.
"""
from __future__ import annotations

from wasmforge.tune.compare import (
    GRID_FINALISTS,
    GRID_MARGIN,
    GRID_ROUNDS,
    RECHECK_ROUNDS,
    grid,
    recheck,
)
from wasmforge.tune.log import (
    count_records,
    log_threads,
    merge_new_records,
    repair_log,
    task_cost_ms,
)
from wasmforge.tune.measure import (
    BUILD_TIMEOUT_S,
    Measurer,
    describe_args,
    make_builder,
    make_runner,
)
from wasmforge.tune.search import (
    MAX_CRASHES,
    focus_tasks,
    make_progress,
    run,
    search_population,
    split_tasks,
)
from wasmforge.tune.tasks import (
    STAGE,
    TuneContext,
    extract_tasks,
    fused_module,
    tune_target,
)

__all__ = [
    "BUILD_TIMEOUT_S", "GRID_FINALISTS", "GRID_MARGIN", "GRID_ROUNDS", "MAX_CRASHES", "Measurer",
    "RECHECK_ROUNDS", "STAGE", "TuneContext", "count_records", "describe_args", "extract_tasks",
    "focus_tasks", "fused_module", "grid", "log_threads", "make_builder", "make_progress", "make_runner",
    "merge_new_records", "recheck", "repair_log", "run", "search_population", "split_tasks", "task_cost_ms", "tune_model",
    "tune_target",
]


def tune_model(m, opts) -> dict:
    """``doit tune:<model>``: one run of ``opts`` (a ``TuneOptions``) on model ``m``: a search
    (``run``), a grid round (``grid``) or a recheck of the threads log (``recheck``)."""
    from wasmforge import graph, toolchain

    p = graph.Paths(m)
    threads = opts.threads
    # the threads variant's kernels: their own log, seeded from the one-thread log
    log, work = (m.tuning_dir(), "tune") if threads == 1 else (m.threads_tuning_dir(), "tune_threads")
    opts.check(log)
    ctx = TuneContext(p.stage("import", "model.json"), graph.params(m)["relax_build"], log, p.stage(work),
                      toolchain.clang(), toolchain.wasm_ld(), threads=threads,
                      seed_log=m.tuning_dir() if threads > 1 else "",
                      threads_log=m.threads_tuning_dir() if threads == 1 else "", fresh=opts.fresh)
    if opts.grid:    # time the register-tiled convolution schedules against the log's best
        return grid(ctx, only=opts.only)
    if opts.recheck:   # re-time the threads log against the one-thread log, no search
        return recheck(ctx)
    return run(ctx, opts.trials or m.tune_trials, focus=opts.focus, jobs=opts.jobs)
