"""Side-by-side comparisons: schedules timed alternately against each other, in the same
rounds, so that a slow spell of a shared machine hits them all alike. ``recheck`` re-times
the threads log's best schedules against the one-thread log's; ``grid`` times the
register-tiled convolution schedules (``microkernel``) against the log's best."""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys

from wasmforge.errors import StageError
from wasmforge.stages import relax_build
from wasmforge.tune.log import log_lock, log_threads, open_db, rewrite_log, trace_key
from wasmforge.tune.measure import Measurer, make_builder, race
from wasmforge.tune.tasks import STAGE, TuneContext, tune_target

RECHECK_ROUNDS = 5
GRID_ROUNDS = 2       # every candidate of a kernel, alternated: their fastest timing ranks them
GRID_FINALISTS = 3    # the best few then race the log's best for RECHECK_ROUNDS rounds
GRID_MARGIN = 0.97    # a grid schedule goes in the log only when at least 3% faster than its best


def recheck(ctx: TuneContext, names: list[str] | None = None, rounds: int = RECHECK_ROUNDS) -> dict:
    """Re-time each kernel of the threads log ``ctx.log_dir`` (or only ``names``) side by side:
    its best record there against the one-thread log's (``ctx.seed_log``) best, both linked as
    threads-variant measurement modules and run on ``ctx.threads`` threads, alternated for
    ``rounds`` rounds; then rewrite the kernel's records in ``ctx.log_dir`` to those two, each with
    its median time, under the threads target. A schedule that fails to build here is dropped.

    Why: a 2-thread timing on a shared machine is bimodal (the second core is there for one
    timing and busy or asleep for the next), and a search keeps what it timed during a fast
    spell. The build's choice rule (``relax_build.load_tuning_log``) then compares times
    taken side by side: the threads variant takes the threads schedule only where it won
    here, and otherwise the one-thread schedule (same code), re-timed on ``ctx.threads`` threads."""
    import statistics

    from tvm.s_tir.meta_schedule.builder import BuilderInput

    extracted = ctx.tasks()
    tdb, odb = open_db(ctx.log_dir), open_db(ctx.seed_log)
    chosen = []
    for t in extracted:
        mod = t.dispatched[0]
        if (names is None or t.task_name in names) and tdb.has_workload(mod):
            one = odb.get_top_k(odb.commit_workload(mod), 1) if odb.has_workload(mod) else []
            # the threads log's best other than the one-thread schedule (which a recheck put there)
            best = [r for r in tdb.get_top_k(tdb.commit_workload(mod), 8)
                    if not one or trace_key(r) != trace_key(one[0])][:1]
            recs = {**({"threads": best[0]} if best else {}), **({"one-thread": one[0]} if one else {})}
            if recs:
                chosen.append((t.task_name, mod, recs))
    if not chosen:
        return {"kernels": {}}
    tgt = tune_target(ctx.p, ctx.threads)
    builder = make_builder(os.path.join(ctx.work_dir, "recheck"), ctx.clang, ctx.wasm_ld,
                           workers=os.cpu_count() or 1, threads=True)
    cands = [(name, mod, which, rec, rec.as_measure_candidate())
             for name, mod, recs in chosen for which, rec in recs.items()]
    built = builder.build([BuilderInput(c.sch.mod, tgt) for *_, c in cands])
    secs = race(Measurer(threads=ctx.threads), {i: (b.artifact_path, cands[i][4].args_info)
                                                for i, b in enumerate(built) if b.error_msg is None}, rounds)
    report, keep = {}, {}
    for i, (name, mod, which, rec, _c) in enumerate(cands):
        if i not in secs:   # (it built when it was tuned: a timeout on a busy machine, say)
            report.setdefault(name, {})[f"{which}_error"] = str(built[i].error_msg)[-300:]
        else:
            med = statistics.median(secs[i])
            report.setdefault(name, {})[f"{which}_ms"] = round(med * 1e3, 4)
            keep.setdefault(name, (mod, []))[1].append((rec.trace, [med], tgt, rec.args_info))
    with log_lock(ctx.lock):
        rewrite_log(ctx.log_dir, keep)
    for name, r in report.items():
        r["kept"] = min(("threads", "one-thread"), key=lambda w: r.get(f"{w}_ms", math.inf))
    return {"kernels": report, "rounds": rounds, "threads": ctx.threads}


def recheck_threads_log(ctx: TuneContext, names: list[str], label: str) -> dict | None:
    """After new one-thread schedules for the kernels ``names`` (in ``ctx.log_dir``): re-time
    them in the threads log ``ctx.threads_log``, if the model has one (its side-by-side times
    were taken against the old ones), on the threads its records were tuned for."""
    if not ctx.threads_log or (n := log_threads(ctx.threads_log)) <= 1:
        return None
    print(f"{label}: re-timing the threads log {ctx.threads_log}: its best schedules against the new one-thread "
          f"ones, {RECHECK_ROUNDS} rounds on {n} threads", file=sys.stderr, flush=True)
    on_threads = dataclasses.replace(ctx, log_dir=ctx.threads_log, seed_log=ctx.log_dir, threads=n, threads_log="")
    return recheck(on_threads, names)["kernels"]


def grid(ctx: TuneContext, names: list[str] | None = None, rounds: int = RECHECK_ROUNDS,
         margin: float = GRID_MARGIN, only: str = "") -> dict:
    """Time the grid's schedules for every kernel with a default schedule
    (``microkernel.grid_space``: convolutions, products, pools and the rest; or only the
    kernels ``names``, and of those only the ones whose name contains ``only``) against the
    log's best schedule for it, on one thread, and add the fastest to the log
    (``ctx.log_dir``) where it wins.

    Per kernel: every candidate is built, and timed ``GRID_ROUNDS`` rounds, alternated; the
    ``GRID_FINALISTS`` fastest then race the log's best for ``rounds`` rounds, alternated, and
    the medians decide. A finalist goes in the log when its median is under ``margin`` times
    the log best's. Its record's time is the log best's recorded time scaled by that ratio:
    the log's times were taken in other runs, on a machine whose speed drifts, and the build
    keeps the record with the lowest time, so the side-by-side verdict is what must order them.
    A kernel the log lacks races the build's default schedule for it instead (reported as
    ``default_ms``), and gets the fastest of them, at its median. Nothing is removed.

    ``ctx.threads_log``: the model's threads log; the kernels that changed are re-timed there
    (``recheck``), as after a one-thread search.

    ``ctx.threads`` > 1: the same for the threads variant. ``ctx.log_dir`` is the threads log,
    the candidates are built as threads variants and timed on ``ctx.threads`` threads, and a
    kernel that log lacks races the one-thread log's (``ctx.seed_log``) best, which is what the
    threads variant runs then. A winner goes in the threads log: at the scaled time when it
    beat that log's best, at its own median when it beat the one-thread schedule."""
    import statistics

    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    tgt = tune_target(ctx.p, ctx.threads)
    os.makedirs(ctx.log_dir, exist_ok=True)
    db = open_db(ctx.log_dir)
    kernels = _grid_kernels(ctx, db, names, only)
    if not kernels:
        return {"kernels": {}}
    builder = make_builder(os.path.join(ctx.work_dir, "grid"), ctx.clang, ctx.wasm_ld, workers=os.cpu_count() or 1,
                           threads=ctx.threads > 1)
    measurer, report = Measurer(threads=ctx.threads), {}
    print(f"tune --grid: {sum(len(k[2]) for k in kernels)} schedules for {len(kernels)} kernels",
          file=sys.stderr, flush=True)
    try:
        for name, mod, scheds, best, own, default in kernels:
            mods = [s.mod for _c, s in scheds] + ([best.as_measure_candidate().sch.mod] if best else [])
            built = builder.build([BuilderInput(m, tgt) for m in mods])
            ok = [i for i, b in enumerate(built) if b.error_msg is None]
            args = ArgInfo.from_prim_func(mod["main"])

            log_i = len(scheds) if best and len(scheds) in ok else None
            modules = {i: (built[i].artifact_path, args) for i in ok}
            first = race(measurer, {i: m for i, m in modules.items() if i != log_i}, GRID_ROUNDS)
            finalists = sorted(first, key=lambda i: min(first[i]))[:GRID_FINALISTS]
            if not finalists:
                report[name] = {"error": str(built[0].error_msg)[-300:]}
                continue
            # the log's best, or with none the default schedule, races the finalists
            base = log_i if log_i is not None else (default if default in modules else None)
            raced = race(measurer, {i: modules[i] for i in dict.fromkeys(finalists + ([base] if base is not None else []))},
                         rounds)
            final = {i: statistics.median(s) for i, s in raced.items()}
            win = min((i for i in final if i != log_i), key=final.get)
            r = report[name] = {"candidates": len(scheds), "built": len(ok), "grid_ms": round(final[win] * 1e3, 4),
                                "schedule": scheds[win][0]}
            if base is not None:
                r["log_ms" if log_i is not None else "default_ms"] = round(final[base] * 1e3, 4)
                r["ratio"] = round(final[win] / final[base], 4)
            if log_i is None or final[win] < margin * final[log_i]:
                secs = final[win] if log_i is None or not own else statistics.mean(
                    float(s) for s in best.run_secs) * final[win] / final[log_i]
                with log_lock(ctx.lock):
                    db.commit_tuning_record(ms.database.TuningRecord(
                        scheds[win][1].trace, db.commit_workload(mod), [secs], tgt, args))
                r["kept"] = "grid"
            else:
                r["kept"] = "log"
            print(f"tune --grid: {name}: {r}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(os.path.join(ctx.work_dir, "grid"), ignore_errors=True)
    out = {"kernels": report, "rounds": rounds, "margin": margin}
    changed = [n for n, r in report.items() if r.get("kept") == "grid"]
    if changed and ctx.threads == 1 and (rechecked := recheck_threads_log(ctx, changed, "tune --grid")) is not None:
        out["recheck"] = rechecked
    return out


def _grid_kernels(ctx: TuneContext, db, names: list[str] | None, only: str) -> list[tuple]:
    """The kernels ``grid`` times: (name, mod, [(candidate, schedule)], the best record to race
    or None, whether that record is the log's own (``db``) rather than the one-thread log's,
    and, with no record, the index of the build's default schedule among the candidates, or
    None)."""
    from tvm.s_tir import ScheduleError

    from wasmforge.compiler import microkernel

    seeded = ctx.threads > 1 and ctx.seed_log and relax_build.tuning_files(ctx.seed_log)
    seed = open_db(ctx.seed_log) if seeded else None
    kernels = []
    tasks = ctx.tasks()
    if only and not any(only in t.task_name for t in tasks):
        raise StageError(STAGE, ctx.log_dir, f"--only {only!r} matches no kernel of this model; its kernels: "
                         + ", ".join(sorted(t.task_name for t in tasks)))
    for t in tasks:
        mod = t.dispatched[0]
        picked = (names is None or t.task_name in names) and only in t.task_name
        grid_space = microkernel.grid_space(mod) if picked else None
        if grid_space is None:
            continue
        scheds, (cands, schedule) = [], grid_space
        for cand in cands:
            try:
                scheds.append((cand, schedule(mod, cand)))
            except ScheduleError as e:   # (a kernel whose epilogue cannot be fused this way)
                print(f"tune --grid: {t.task_name}: skipping {cand}: {type(e).__name__}: {str(e)[:200]}",
                      file=sys.stderr)
        best, own = (db.get_top_k(db.commit_workload(mod), 1), True) if db.has_workload(mod) else ([], False)
        if not best and seed is not None and seed.has_workload(mod):
            best = seed.get_top_k(seed.commit_workload(mod), 1)
        picked = None if best else microkernel.rule(mod)
        default = next((i for i, (c, _s) in enumerate(scheds) if picked and c == picked[0]), None)
        if scheds:
            kernels.append((t.task_name, mod, scheds, best[0] if best else None, own, default))
    return kernels
