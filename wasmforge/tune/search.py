"""MetaSchedule's search over the model's tasks, with the wasm32 builder and the wasmtime
runner (``measure``), into the tuning log (``log``): the whole model, or the costliest few
tasks (``focus``), in one process or in several side by side (``jobs``)."""
from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import dataclass

from wasmforge.errors import StageError
from wasmforge.tune.compare import RECHECK_ROUNDS, recheck, recheck_threads_log
from wasmforge.tune.log import (
    count_records,
    log_lock,
    merge_new_records,
    open_db,
    repair_log,
    task_cost_ms,
)
from wasmforge.tune.measure import Measurer, make_builder, make_runner
from wasmforge.tune.tasks import STAGE, TuneContext


def make_progress(task_names: list[str], budget: int, already: int, log=sys.stderr, label: str = "tune"):
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    state = {"done": 0, "best": {}, "t0": time.perf_counter()}

    @derived_object
    class Progress(PyMeasureCallback):
        """One line per measured batch: trials done of the budget, the task's best latency,
        elapsed time and an estimate of what is left."""

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            state["done"] += len(runner_results)
            times = [sum(float(s) for s in r.run_secs) / len(r.run_secs)
                     for r in runner_results if r.error_msg is None and r.run_secs]
            errors = sum(1 for r in runner_results if r.error_msg is not None)
            name = task_names[task_id]
            if times:
                state["best"][name] = min(state["best"].get(name, math.inf), min(times))
            elapsed = time.perf_counter() - state["t0"]
            left = elapsed / state["done"] * max(budget - state["done"], 0)
            best = state["best"].get(name)
            print(f"{label}: {already + state['done']}/{already + budget} trials | task {task_id + 1}/"
                  f"{len(task_names)} {name}: best {best * 1e3:.3f} ms" if best else
                  f"{label}: {already + state['done']}/{already + budget} trials | task {task_id + 1}/"
                  f"{len(task_names)} {name}: no valid candidate yet",
                  f"({errors} failed) | elapsed {elapsed / 60:.1f} min, ~{left / 60:.1f} min left",
                  file=log, flush=True)

    return Progress(), state


def focus_tasks(cost: dict[str, float], k: int, work: dict[str, float] | None = None) -> list[str]:
    """The ``k`` tasks that cost the model the most time; untuned ones first, the most work
    (FLOPs x occurrences, ``work``) first among them."""
    work = work or {}
    return sorted(cost, key=lambda name: (-cost[name], -work.get(name, 0.0)))[:k]


POPULATION_PER_TRIAL = 32
MAX_POPULATION = 512     # MetaSchedule's default


def search_population(per_iter: int) -> int:
    """The evolutionary search's population for batches of ``per_iter`` trials per task: 32
    candidates sampled, evolved and ranked by the cost model for each one measured, at most
    MetaSchedule's 512 (a batch of 16, the default, gets that). Each batch costs the search
    time in proportion to its population, whatever the batch: with a small budget over many
    kernels (2 trials a batch), 512 spent 10-20 s searching for each second measuring."""
    return min(MAX_POPULATION, POPULATION_PER_TRIAL * per_iter)


def split_tasks(names: list[str], jobs: int) -> list[list[str]]:
    """Deal the tasks, costliest first, to ``jobs`` groups in turn (fewer if there are fewer
    tasks): each job gets a like share of the expensive kernels."""
    return [g for g in (names[i::jobs] for i in range(jobs)) if g]


# A TVM 0.27 MetaSchedule bug: sampling a schedule for a Winograd kernel sometimes fails with
# "The block no longer exists in the IRModule", and the exception ends the whole tuning run.
_SAMPLING_CRASH = "The block no longer exists"
MAX_CRASHES = 30


@dataclass(frozen=True)
class _Share:
    """One search process's part of a run (``_tune_group``): its tasks ``names`` and
    ``budget`` of trials, its folder and seed, and how it searches. Picklable: a job process
    gets it as it is."""

    names: tuple[str, ...]
    budget: int
    work_dir: str
    seed: int
    label: str               # the prefix of its lines on stderr
    already: int             # the log's records when the run started (the progress lines count on)
    build_workers: int       # builder processes
    round_robin: bool        # every task in turn (``focus``), not MetaSchedule's gradient scheduler
    side: bool               # search in a scratch database, added to the log after every chunk
    in_job: bool = False     # a job process: an error comes back as {"error": ...}


def run(ctx: TuneContext, trials: int, focus: int = 0, jobs: int = 1) -> dict:
    """Search until the log (``ctx.log_dir``) holds ``trials`` records; the records already
    there count against that budget and seed the search.

    ``focus`` > 0: tune only the ``focus`` tasks that cost the model the most time
    (latency in the log times occurrences), giving each an equal share of the budget, instead
    of MetaSchedule's gradient scheduler over every task (which favours kernels the model
    runs often and can leave a slow kernel it runs once with a few dozen trials).

    ``ctx.fresh``: search from scratch instead of from the log's best schedules (the
    evolutionary search otherwise starts from them, and can stay near them), in a scratch
    database whose records are added to the log after every chunk; the build keeps the best
    record per kernel.

    ``jobs`` > 1: that many tuning processes side by side, each on its own share of the tasks
    (``split_tasks``) and of the budget, each measuring on its own core. Each searches in a
    scratch database (a copy of the log, or empty with ``fresh``) and adds its new records to
    the log after every chunk, under a lock: a killed run keeps what its jobs had added.

    ``ctx.threads`` > 1: tune the threads variant's own kernels, for that many cores and
    measured on that many threads, into ``ctx.log_dir`` (the model's threads log). The search
    starts from ``ctx.seed_log`` (the one-thread log) and the threads log's own records, in a
    scratch database; only the new records, measured on ``ctx.threads`` threads, go to the
    log. With ``focus``, a kernel the threads log lacks costs what it costs on one thread
    (``ctx.seed_log``). Measuring on every core leaves none for a second job: ``jobs`` must be
    1. At the end, the tuned kernels are re-timed side by side with the one-thread schedules
    (``recheck``), and their records in the log become those two timings.

    ``ctx.threads_log`` (one-thread tuning): the model's threads log. Its kernels that were
    just tuned are re-timed there against their new one-thread schedules, the same way: its
    side-by-side times were taken against the old ones."""
    if ctx.threads > 1 and jobs > 1:
        raise StageError(STAGE, ctx.log_dir, f"tuning for {ctx.threads} threads measures on {ctx.threads} cores: "
                         "run one job (--jobs 1)")
    os.makedirs(ctx.work_dir, exist_ok=True)
    with log_lock(ctx.lock):     # a job of another run may be adding to the log right now
        if repair_log(ctx.log_dir):
            print(f"tune: dropped a half-written record from {ctx.log_dir} (a killed run); resuming", file=sys.stderr)
    already = count_records(ctx.log_dir)
    budget = trials - already
    if budget <= 0:
        print(f"tune: the log already holds {already} records, at or over the budget of {trials} trials; "
              "nothing to do (raise the budget with --trials)", file=sys.stderr)
        return {"trials": 0, "records": already}
    extracted = ctx.tasks()
    if not extracted:
        raise StageError(STAGE, ctx.module_json, "the model has no kernels to tune")
    names = _focus(ctx, extracted, focus) if focus else [t.task_name for t in extracted]
    os.makedirs(ctx.log_dir, exist_ok=True)
    groups = split_tasks(names, max(1, jobs))
    common = dict(already=already, build_workers=max(1, (os.cpu_count() or 1) // len(groups)),
                  round_robin=bool(focus))
    t0 = time.perf_counter()
    if len(groups) == 1:
        share = _Share(tuple(groups[0]), budget, ctx.work_dir, ctx.seed, "tune", side=ctx.fresh or ctx.threads > 1,
                       **common)
        results = [_tune_group(ctx, share, extracted)]
    else:
        import concurrent.futures
        import multiprocessing

        shares = [_Share(tuple(g), budget // len(groups) + (i < budget % len(groups)),
                         os.path.join(ctx.work_dir, f"job{i + 1}"), ctx.seed + i, f"tune[job {i + 1}/{len(groups)}]",
                         side=True, in_job=True, **common) for i, g in enumerate(groups)]
        print(f"tune: {len(groups)} jobs side by side: " + "; ".join(
            f"job {i + 1}: {len(s.names)} tasks, {s.budget} trials" for i, s in enumerate(shares)),
            file=sys.stderr, flush=True)
        # spawn, not fork: TVM's runtime holds threads and locks a fork would copy mid-use
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(len(groups), mp_context=spawn) as pool:
            futures = [pool.submit(_tune_group, ctx, s) for s in shares]
            results = [f.result() for f in futures]
        failed = [r["error"] for r in results if "error" in r]
        if failed:
            raise StageError(STAGE, ctx.log_dir, "a tuning job failed (the records it had added stay in the log): "
                             + "; ".join(failed))
    best = {k: v for r in results for k, v in r["best_ms"].items()}
    out = {"tasks": sum(r["tasks"] for r in results), "trials": sum(r["trials"] for r in results),
           "records": count_records(ctx.log_dir), "crashes": sum(r["crashes"] for r in results),
           "jobs": len(groups), "seconds": round(time.perf_counter() - t0, 1), "best_ms": dict(sorted(best.items()))}
    if ctx.threads > 1:   # the search's times are single timings on a shared machine: re-time side by side
        print(f"tune: re-timing the tuned kernels' best schedules against the one-thread log's, "
              f"{RECHECK_ROUNDS} rounds on {ctx.threads} threads", file=sys.stderr, flush=True)
        out["recheck"] = recheck(ctx, names)["kernels"]
        out["records"] = count_records(ctx.log_dir)
    elif (rechecked := recheck_threads_log(ctx, names, "tune")) is not None:
        out["recheck"] = rechecked
    return out


def _focus(ctx: TuneContext, extracted, k: int) -> list[str]:
    """``focus_tasks`` by the log's costs (``task_cost_ms``) and each task's work; says which."""
    from tvm.s_tir.analysis import estimate_tir_flops

    cost = task_cost_ms(ctx.log_dir, extracted)
    work = {t.task_name: float(estimate_tir_flops(t.dispatched[0])) * t.weight for t in extracted}
    if ctx.threads > 1:   # a kernel the threads log lacks costs what it costs on one thread
        one = task_cost_ms(ctx.seed_log, extracted)
        cost = {n: c if math.isfinite(c) else one[n] for n, c in cost.items()}
    names = focus_tasks(cost, k, work)
    print("tune: focus on " + ", ".join(f"{n} ({cost[n]:.1f} ms)" for n in names), file=sys.stderr, flush=True)
    return names


def _scratch_db(ctx: TuneContext, share: _Share) -> str:
    """A search database of the share's own, under its folder: empty with ``ctx.fresh``;
    otherwise a copy of ``ctx.seed_log`` (or of the log), plus the log's own records when
    seeded from the other log."""
    db_dir = os.path.join(share.work_dir, "scratch")
    shutil.rmtree(db_dir, ignore_errors=True)
    os.makedirs(db_dir)
    if not ctx.fresh:
        source = ctx.seed_log or ctx.log_dir
        for f in ("database_workload.json", "database_tuning_record.json"):
            if os.path.isfile(os.path.join(source, f)):
                shutil.copyfile(os.path.join(source, f), os.path.join(db_dir, f))
        if ctx.seed_log and count_records(ctx.log_dir):
            with log_lock(ctx.lock):
                merge_new_records(ctx.log_dir, db_dir)
    return db_dir


def _tune_group(ctx: TuneContext, share: _Share, extracted=None) -> dict:
    """Tune the tasks ``share.names`` for ``share.budget`` trials. ``share.side``: in a scratch
    database (``_scratch_db``), its new records added to the log after every chunk (holding
    the log's lock); otherwise straight into the log. ``extracted``: the model's tasks, when
    the caller has them. ``ctx.threads``: the cores the kernels are tuned for and measured on."""
    from tvm.s_tir import meta_schedule as ms

    try:
        extracted = [t for t in (extracted or ctx.tasks()) if t.task_name in share.names]
        extracted.sort(key=lambda t: share.names.index(t.task_name))
        os.makedirs(share.work_dir, exist_ok=True)
        # the task scheduler gives every task one batch before it looks at gradients: a small
        # budget must still reach every task
        per_iter = max(2, min(ctx.trials_per_iter, share.budget // max(len(extracted), 1)))
        # the search samples and evolves its population on every core this job has
        strategy = ms.search_strategy.EvolutionarySearch(population_size=search_population(per_iter))
        tasks, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            extracted, work_dir=share.work_dir, strategy=strategy, num_threads=share.build_workers, seed=share.seed)
        db_dir = _scratch_db(ctx, share) if share.side else ctx.log_dir
        merged = count_records(db_dir) if share.side else 0
        db = open_db(db_dir)
        progress, state = make_progress([t.task_name for t in tasks], share.budget, share.already, label=share.label)
        callbacks = ms.measure_callback.MeasureCallback.create("default") + [progress]
        print(f"{share.label}: {len(tasks)} tasks, {share.budget} trials to go ({share.already} already in "
              f"{ctx.log_dir})", file=sys.stderr, flush=True)
        # builds use every core this job has (the runner measures one candidate at a time)
        builder = make_builder(os.path.join(share.work_dir, "candidates"), ctx.clang, ctx.wasm_ld,
                               workers=share.build_workers, threads=ctx.threads > 1)
        runner = make_runner(Measurer(threads=ctx.threads))
        # in chunks: MetaSchedule writes a batch's records only when it returns to that task, so
        # a run that dies (the sampling bug, _SAMPLING_CRASH) loses at most one chunk
        # (every call starts the scheduler over, so a chunk must reach every task twice)
        chunk = ctx.chunk or 2 * len(tasks) * per_iter
        start = count_records(db_dir)
        crashes = 0
        while (left := share.budget - (count_records(db_dir) - start)) > 0:
            before = count_records(db_dir)
            try:
                ms.tune_tasks(tasks=tasks, task_weights=weights, work_dir=share.work_dir,
                              max_trials_global=min(chunk, left), num_trials_per_iter=per_iter, builder=builder,
                              runner=runner, database=db, cost_model="xgb", measure_callbacks=callbacks,
                              task_scheduler="round-robin" if share.round_robin else "gradient")
            except RuntimeError as e:
                if _SAMPLING_CRASH not in str(e) or crashes >= MAX_CRASHES:
                    raise
                crashes += 1
                print(f"{share.label}: MetaSchedule failed while sampling schedules (TVM bug: '{_SAMPLING_CRASH} in "
                      f"the IRModule'); resuming from the database ({crashes} so far)", file=sys.stderr, flush=True)
                db = open_db(db_dir)
                continue
            finally:
                if share.side:
                    with log_lock(ctx.lock):
                        merged = merge_new_records(db_dir, ctx.log_dir, merged)
            if count_records(db_dir) == before:   # every task's search space is used up
                break
        return {"tasks": len(tasks), "trials": state["done"], "crashes": crashes,
                "best_ms": {k: round(v * 1e3, 4) for k, v in sorted(state["best"].items())}}
    except Exception as e:
        if not share.in_job:
            raise
        return {"error": f"{share.label}: {type(e).__name__}: {e}"}
