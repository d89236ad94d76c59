"""Autotuning measured inside WebAssembly: MetaSchedule with a wasm32 builder and an
in-process wasmtime runner.

MetaSchedule's stock runners time candidates over RPC, and a WASI module cannot host an RPC
server (no sockets); timing on the host's native CPU would tune for the wrong machine code.
So each candidate is compiled for the wasm32 target and linked with the measurement module
(``runtime/wasmforge_bench.c``) into a tiny WASI reactor, in builder worker processes (one
per core, with a timeout), then instantiated in wasmtime in this very process and timed there (warm-up, then the median of ``repeat`` timings of enough calls
to last ``min_repeat_ms``).

The result is MetaSchedule's JSON database (workloads and tuning records) in the model's
tuning log folder, ``models/<name>.tuning/``: a build input, committed like source code.
Tuning is resumable: the records already in the log count against the trial budget and
seed the search.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

from pipeline import link, relax_build
from pipeline.errors import StageError

STAGE = "tune"


def tune_target(p: relax_build.BuildParams, threads: int = 1):
    """The build's target plus the core count MetaSchedule's CPU rules need: one wasm
    thread for the portable module, ``threads`` for the threads variant's own kernels."""
    import tvm

    return tvm.target.Target({**p.target_dict(), "num-cores": threads})


def fused_module(module_json: str, p: relax_build.BuildParams):
    """The imported module after the build stage's passes up to fusion: its PrimFuncs are
    exactly the tasks the build stage will look up in the tuning log."""
    import tvm

    with open(module_json) as f:
        mod = tvm.ir.load_json(f.read())
    tgt = relax_build.target(p)
    with tgt:
        seq = tvm.transform.Sequential(relax_build.fusion_passes(tgt, p))
        return seq(mod)


def extract_tasks(module_json: str, p: relax_build.BuildParams, threads: int = 1):
    from tvm.s_tir import meta_schedule as ms

    return ms.relax_integration.extract_tasks(fused_module(module_json, p), tune_target(p, threads))


# ---------------------------------------------------------------- build and measure


def _link(clang, wasm_ld, objects: list[str], out: str, threads: bool = False) -> None:
    p = link.LinkParams(threads=threads)
    argv = link.link_argv(clang.path, wasm_ld.path, p, objects, out)
    argv = [a for a in argv if not a.startswith("-Wl,--export=wasmforge_")]
    argv += [f"-Wl,--export={e}" for e in ("wfb_desc", "wfb_setup", "wfb_run", "wasmforge_last_error")
             + (link.THREADS_EXPORTS if threads else ())]
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"linking the measurement module failed: {res.stderr.strip()[-2000:]}")


BUILD_TIMEOUT_S = 120.0   # a candidate whose compile takes longer is dropped (seen: a Winograd
                          # schedule that LLVM was still compiling after 15 minutes)


class _Export:
    """MetaSchedule's ``f_export`` for a wasm candidate: the compiled kernel's object, linked
    with the measurement module; returns the module's path. An object (picklable, by module)
    because it runs in the builder's worker processes. ``bench_o``: the measurement module's
    objects by the runtime defines the kernel needs (``link.runtime_defines``); ``threads``:
    link the threads variant (shared memory, the thread pool's exports)."""

    def __init__(self, work_dir: str, bench_o: dict, clang, wasm_ld, threads: bool = False):
        self.work_dir, self.bench_o, self.clang, self.wasm_ld = work_dir, bench_o, clang, wasm_ld
        self.threads = threads

    def __call__(self, lib) -> str:
        d = tempfile.mkdtemp(prefix="cand-", dir=self.work_dir)
        try:
            obj = os.path.join(d, "kernel.o")
            lib.write_to_file(obj)
            wasm = os.path.join(d, "candidate.wasm")
            _link(self.clang, self.wasm_ld, [self.bench_o[link.runtime_defines(obj)], obj], wasm, self.threads)
            return wasm
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise


def _build_candidate(mod, target, _params):
    """MetaSchedule's ``f_build``: a candidate -> a wasm32 system-lib kernel (TVM's LLVM)."""
    import tvm

    return tvm.tirx.build(mod.with_attr("system_lib_prefix", ""), target=target)


def make_builder(work_dir: str, clang, wasm_ld, workers: int = 1, timeout_s: float = BUILD_TIMEOUT_S,
                 threads: bool = False):
    """Candidate -> wasm32 object -> measurement module, in ``workers`` worker processes
    (MetaSchedule's LocalBuilder): a candidate that fails to build is a data point, and one
    that takes longer than ``timeout_s`` is killed, instead of stalling the run. ``threads``:
    measurement modules of the threads variant, for a ``Measurer(threads=N)``."""
    from tvm.s_tir.meta_schedule.builder import LocalBuilder

    os.makedirs(work_dir, exist_ok=True)
    bench_o = {}
    # a kernel with a parallel barrier needs the runtime built for it (link.runtime_defines)
    for defines in ((), ("-DWF_ONE_TASK_PER_THREAD",)):
        o = bench_o[defines] = os.path.join(work_dir, f"wasmforge_bench{len(defines)}.o")
        argv = link.compile_argv(clang.path, link.LinkParams(threads=threads),
                                 os.path.join(link.RUNTIME_DIR, "wasmforge_bench.c"), o, defines)
        res = subprocess.run(argv, capture_output=True, text=True)
        if res.returncode != 0:
            raise StageError(STAGE, "wasmforge_bench.c", f"compiling the measurement module failed: {res.stderr[-2000:]}")
    return LocalBuilder(max_workers=max(1, workers), timeout_sec=timeout_s, f_build=_build_candidate,
                        f_export=_Export(work_dir, bench_o, clang, wasm_ld, threads))


def describe_args(args_info) -> bytes:
    """The argument descriptor wfb_setup() reads (see wasmforge_bench.c)."""
    import struct

    from pipeline.executor import _DTYPES

    out = bytearray(struct.pack("<i", len(args_info)))
    for a in args_info:
        dtype = str(a.dtype)
        code, bits = _DTYPES[dtype]
        shape = [int(s) for s in a.shape]
        out += struct.pack("<iBBH", len(shape), code, bits, 1)
        out += struct.pack(f"<{len(shape)}q", *shape)
    if len(out) > 4096:
        raise ValueError("argument descriptor too large")
    return bytes(out)


class Measurer:
    """Times one measurement module in wasmtime, in this process. ``threads`` > 1: modules
    of the threads variant (``make_builder(threads=True)``), run on that many threads, the
    way ``host.WasmModel`` runs a model's threads variant."""

    def __init__(self, repeat: int = 3, min_repeat_ms: float = 20.0, threads: int = 1):
        import wasmtime

        from pipeline import host

        self.threads = threads
        self.engine = host.threads_engine() if threads > 1 else wasmtime.Engine()
        self.repeat, self.min_repeat_ms = repeat, min_repeat_ms

    def measure(self, wasm_path: str, args_info) -> list[float]:
        import ctypes

        import wasmtime

        from pipeline import host

        module = wasmtime.Module.from_file(self.engine, wasm_path)
        shared = None
        if self.threads > 1:
            ty = next(i.type for i in module.imports if (i.module, i.name) == ("env", "memory"))
            shared = host.shared_memory(self.engine, ty.limits)

        def instantiate():
            store = wasmtime.Store(self.engine)
            store.set_wasi(wasmtime.WasiConfig())
            linker = wasmtime.Linker(self.engine)
            linker.define_wasi()
            if shared is not None:
                linker.define(store, "env", "memory", shared)
            return store, linker.instantiate(store, module)

        store, inst = instantiate()
        ex = inst.exports(store)
        ex["_initialize"](store)

        def base() -> int:   # (a shared memory is not an export: it is the one we made)
            mem = shared.data_ptr() if shared is not None else ex["memory"].data_ptr(store)
            return ctypes.addressof(mem.contents)

        def check(rc):
            if rc != 0:
                raw = ctypes.string_at(base() + ex["wasmforge_last_error"](store), 512)
                raise RuntimeError(raw.split(b"\0")[0].decode("utf-8", "replace") or f"error {rc}")

        desc = describe_args(args_info)
        ctypes.memmove(base() + ex["wfb_desc"](store), desc, len(desc))
        check(ex["wfb_setup"](store))
        errors: list = []
        workers = host.start_workers(ex, store, self.threads - 1, instantiate, errors) if shared is not None else []
        try:
            return self._time(ex, store, check)
        finally:
            if workers:
                host.stop_workers(ex, store, workers)
            if errors:
                raise RuntimeError(f"a worker thread failed: {errors[0]}")

    def _time(self, ex, store, check) -> list[float]:
        t = time.perf_counter()
        check(ex["wfb_run"](store, 1))          # warm-up, and a first estimate
        once = max(time.perf_counter() - t, 1e-6)
        number = max(1, math.ceil(self.min_repeat_ms / 1e3 / once))
        secs = []
        for _ in range(self.repeat):
            t = time.perf_counter()
            check(ex["wfb_run"](store, number))
            secs.append((time.perf_counter() - t) / number)
        return secs


def make_runner(measurer: Measurer):
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture, RunnerResult

    @derived_object
    class Done(PyRunnerFuture):
        def __init__(self, result):
            super().__init__()
            self._result = result

        def done(self):
            return True

        def result(self):
            return self._result

    @derived_object
    class WasmtimeRunner(PyRunner):
        """Measures synchronously in wasmtime: no RPC, no sockets."""

        def run(self, runner_inputs):
            futures = []
            for inp in runner_inputs:
                try:
                    secs = measurer.measure(inp.artifact_path, inp.args_info)
                    futures.append(Done(RunnerResult(secs, None)))
                except Exception as e:
                    futures.append(Done(RunnerResult(None, f"{type(e).__name__}: {str(e)[-1500:]}")))
            return futures

    return WasmtimeRunner()


# ---------------------------------------------------------------- progress


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


# ---------------------------------------------------------------- the tuning job


def count_records(log_dir: str) -> int:
    path = os.path.join(log_dir, "database_tuning_record.json")
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if line.strip())


def repair_log(log_dir: str) -> int:
    """Drop a last line that a killed tuner left half-written (JSONDatabase appends one JSON
    document per line); returns the number of lines dropped."""
    dropped = 0
    for name in ("database_workload.json", "database_tuning_record.json"):
        path = os.path.join(log_dir, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        good = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                json.loads(line)
                good.append(line)
            except ValueError:
                if i < len(lines) - 2:   # damage before the last line is not ours to fix
                    raise StageError(STAGE, path, f"line {i + 1} is not valid JSON") from None
                dropped += 1
        if dropped:
            with open(path + ".tmp", "wb") as f:
                f.write(b"\n".join(good) + b"\n")
            os.replace(path + ".tmp", path)
    return dropped


def task_cost_ms(log_dir: str, extracted) -> dict[str, float]:
    """Each task's share of the model's time by the log: its best measured latency (ms) times
    how often the model runs it; a task without a valid record costs infinity."""
    from tvm.s_tir import meta_schedule as ms

    logs = relax_build.tuning_files(log_dir)
    db = ms.database.JSONDatabase(path_workload=logs[0], path_tuning_record=logs[1]) if logs else None
    cost = {}
    for t in extracted:
        known = db is not None and db.has_workload(t.dispatched[0])   # (committing would write the log)
        recs = db.get_top_k(db.commit_workload(t.dispatched[0]), 1) if known else []
        secs = [float(x) for x in recs[0].run_secs] if recs and recs[0].run_secs else []
        cost[t.task_name] = (sum(secs) / len(secs) * 1e3 * t.weight) if secs else math.inf
    return cost


def focus_tasks(cost: dict[str, float], k: int, work: dict[str, float] | None = None) -> list[str]:
    """The ``k`` tasks that cost the model the most time; untuned ones first, the most work
    (FLOPs x occurrences, ``work``) first among them."""
    work = work or {}
    return sorted(cost, key=lambda name: (-cost[name], -work.get(name, 0.0)))[:k]


# A TVM 0.27 MetaSchedule bug: sampling a schedule for a Winograd kernel sometimes fails with
# "The block no longer exists in the IRModule", and the exception ends the whole tuning run.
_SAMPLING_CRASH = "The block no longer exists"
MAX_CRASHES = 30


def _db(log_dir: str):
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(path_workload=os.path.join(log_dir, "database_workload.json"),
                                    path_tuning_record=os.path.join(log_dir, "database_tuning_record.json"))


def _lines(path: str) -> list[str]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [line for line in f if line.strip()]


def merge_new_records(scratch_dir: str, log_dir: str, skip: int = 0) -> int:
    """Add a scratch database's records after the first ``skip`` to the log, each workload
    re-indexed to the log's own (found by structure, added if new); returns the scratch
    database's record count, the ``skip`` for the next call. Callers that tune side by side
    hold ``_log_lock`` around it: the log is one appending writer at a time."""
    from tvm.s_tir import meta_schedule as ms

    records = _lines(os.path.join(scratch_dir, "database_tuning_record.json"))
    if len(records) <= skip:
        return len(records)
    workloads = _lines(os.path.join(scratch_dir, "database_workload.json"))
    log, in_log = _db(log_dir), {}
    for line in records[skip:]:
        index, rec = json.loads(line)
        if index not in in_log:
            in_log[index] = log.commit_workload(ms.database.Workload.from_json(json.loads(workloads[index])).mod)
        log.commit_tuning_record(ms.database.TuningRecord.from_json(rec, in_log[index]))
    return len(records)


class _log_lock:
    """An exclusive lock (``flock``) on a file beside the tuner's work folders."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        import fcntl

        self.f = open(self.path, "a")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.f.close()     # closing releases the lock


def split_tasks(names: list[str], jobs: int) -> list[list[str]]:
    """Deal the tasks, costliest first, to ``jobs`` groups in turn (fewer if there are fewer
    tasks): each job gets a like share of the expensive kernels."""
    return [g for g in (names[i::jobs] for i in range(jobs)) if g]


def run(module_json: str, p: relax_build.BuildParams, log_dir: str, work_dir: str, trials: int,
        clang, wasm_ld, trials_per_iter: int = 16, seed: int = 0, focus: int = 0, fresh: bool = False,
        chunk: int = 0, jobs: int = 1, threads: int = 1, seed_log: str = "", threads_log: str = "") -> dict:
    """``focus`` > 0: tune only the ``focus`` tasks that cost the model the most time
    (latency in the log times occurrences), giving each an equal share of the budget, instead
    of MetaSchedule's gradient scheduler over every task (which favours kernels the model
    runs often and can leave a slow kernel it runs once with a few dozen trials).

    ``fresh``: search from scratch instead of from the log's best schedules (the evolutionary
    search otherwise starts from them, and can stay near them), in a scratch database whose
    records are added to the log after every chunk; the build keeps the best record per kernel.

    ``jobs`` > 1: that many tuning processes side by side, each on its own share of the tasks
    (``split_tasks``) and of the budget, each measuring on its own core. Each searches in a
    scratch database (a copy of the log, or empty with ``fresh``) and adds its new records to
    the log after every chunk, under a lock: a killed run keeps what its jobs had added.

    ``threads`` > 1: tune the threads variant's own kernels, for that many cores and measured
    on that many threads, into ``log_dir`` (the model's threads log). The search starts from
    ``seed_log`` (the one-thread log) and the threads log's own records, in a scratch
    database; only the new records, measured on ``threads`` threads, go to ``log_dir``. With
    ``focus``, a kernel the threads log lacks costs what it costs on one thread (``seed_log``).
    Measuring on every core leaves none for a second job: ``jobs`` must be 1. At the end, the
    tuned kernels are re-timed side by side with the one-thread schedules (``recheck``), and
    their records in ``log_dir`` become those two timings.

    ``threads_log`` (one-thread tuning): the model's threads log. Its kernels that were just
    tuned are re-timed there against their new one-thread schedules, the same way: its
    side-by-side times were taken against the old ones."""
    if threads > 1 and jobs > 1:
        raise StageError(STAGE, log_dir, f"tuning for {threads} threads measures on {threads} cores: "
                         "run one job (--jobs 1)")
    lock = os.path.join(work_dir, ".log.lock")
    os.makedirs(work_dir, exist_ok=True)
    with _log_lock(lock):     # a job of another run may be adding to the log right now
        if repair_log(log_dir):
            print(f"tune: dropped a half-written record from {log_dir} (a killed run); resuming", file=sys.stderr)
    already = count_records(log_dir)
    budget = trials - already
    if budget <= 0:
        print(f"tune: the log already holds {already} records, at or over the budget of {trials} trials; "
              "nothing to do (raise the budget with --trials)", file=sys.stderr)
        return {"trials": 0, "records": already}
    extracted = extract_tasks(module_json, p, threads)
    if not extracted:
        raise StageError(STAGE, module_json, "the model has no kernels to tune")
    names = [t.task_name for t in extracted]
    if focus:
        from tvm.s_tir.analysis import estimate_tir_flops

        cost = task_cost_ms(log_dir, extracted)
        work = {t.task_name: float(estimate_tir_flops(t.dispatched[0])) * t.weight for t in extracted}
        if threads > 1:   # a kernel the threads log lacks costs what it costs on one thread
            one = task_cost_ms(seed_log, extracted)
            cost = {n: c if math.isfinite(c) else one[n] for n, c in cost.items()}
        names = focus_tasks(cost, focus, work)
        print("tune: focus on " + ", ".join(f"{n} ({cost[n]:.1f} ms)" for n in names), file=sys.stderr, flush=True)
    os.makedirs(log_dir, exist_ok=True)
    job = dict(module_json=module_json, p=p, log_dir=log_dir, clang=clang, wasm_ld=wasm_ld,
               trials_per_iter=trials_per_iter, fresh=fresh, chunk=chunk, round_robin=bool(focus), already=already,
               lock=lock, threads=threads, seed_log=seed_log)
    groups = split_tasks(names, max(1, jobs))
    job["build_workers"] = max(1, (os.cpu_count() or 1) // len(groups))
    t0 = time.perf_counter()
    if len(groups) == 1:
        results = [_tune_group(groups[0], budget, work_dir, seed, "tune", side=fresh or threads > 1,
                               extracted=extracted, **job)]
    else:
        import concurrent.futures
        import multiprocessing

        shares = [budget // len(groups) + (i < budget % len(groups)) for i in range(len(groups))]
        print(f"tune: {len(groups)} jobs side by side: " + "; ".join(
            f"job {i + 1}: {len(g)} tasks, {n} trials" for i, (g, n) in enumerate(zip(groups, shares))),
            file=sys.stderr, flush=True)
        # spawn, not fork: TVM's runtime holds threads and locks a fork would copy mid-use
        with concurrent.futures.ProcessPoolExecutor(len(groups), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_tune_group, g, n, os.path.join(work_dir, f"job{i + 1}"), seed + i,
                                   f"tune[job {i + 1}/{len(groups)}]", side=True, in_job=True, **job)
                       for i, (g, n) in enumerate(zip(groups, shares))]
            results = [f.result() for f in futures]
        failed = [r["error"] for r in results if "error" in r]
        if failed:
            raise StageError(STAGE, log_dir, "a tuning job failed (the records it had added stay in the log): "
                             + "; ".join(failed))
    best = {k: v for r in results for k, v in r["best_ms"].items()}
    out = {"tasks": sum(r["tasks"] for r in results), "trials": sum(r["trials"] for r in results),
           "records": count_records(log_dir), "crashes": sum(r["crashes"] for r in results),
           "jobs": len(groups), "seconds": round(time.perf_counter() - t0, 1), "best_ms": dict(sorted(best.items()))}
    if threads > 1:   # the search's times are single timings on a shared machine: re-time side by side
        print(f"tune: re-timing the tuned kernels' best schedules against the one-thread log's, "
              f"{RECHECK_ROUNDS} rounds on {threads} threads", file=sys.stderr, flush=True)
        out["recheck"] = recheck(module_json, p, log_dir, seed_log, work_dir, clang, wasm_ld, threads, names)["kernels"]
        out["records"] = count_records(log_dir)
    elif (rechecked := _recheck_threads_log(module_json, p, threads_log, log_dir, work_dir, clang, wasm_ld,
                                            names, "tune")) is not None:
        out["recheck"] = rechecked
    return out


def _recheck_threads_log(module_json: str, p: relax_build.BuildParams, threads_log: str, log_dir: str,
                         work_dir: str, clang, wasm_ld, names: list[str], label: str) -> dict | None:
    """After new one-thread schedules for the kernels ``names``: re-time them in the threads
    log, if the model has one (its side-by-side times were taken against the old ones)."""
    if not threads_log or (n := log_threads(threads_log)) <= 1:
        return None
    print(f"{label}: re-timing the threads log {threads_log}: its best schedules against the new one-thread "
          f"ones, {RECHECK_ROUNDS} rounds on {n} threads", file=sys.stderr, flush=True)
    return recheck(module_json, p, threads_log, log_dir, work_dir, clang, wasm_ld, n, names)["kernels"]


def log_threads(log_dir: str) -> int:
    """The cores a threads log's records were tuned for (their target's num-cores); 0 when it
    has no records."""
    for line in _lines(os.path.join(log_dir, "database_tuning_record.json")):
        return int(json.loads(line)[1][2].get("num-cores", 1))
    return 0


RECHECK_ROUNDS = 5


def _race(measurer: Measurer, modules: dict, rounds: int) -> dict:
    """Time each measurement module ``modules[i] = (path, args_info)`` once per round, one
    after another, for ``rounds`` rounds (alternated, so a slow spell hits them all alike);
    returns i -> its timings."""
    secs = {i: [] for i in modules}
    for _ in range(rounds):
        for i, (path, args_info) in modules.items():
            secs[i] += measurer.measure(path, args_info)
    return secs


def recheck(module_json: str, p: relax_build.BuildParams, log_dir: str, seed_log: str, work_dir: str,
            clang, wasm_ld, threads: int, names: list[str] | None = None, rounds: int = RECHECK_ROUNDS) -> dict:
    """Re-time each kernel of the threads log ``log_dir`` (or only ``names``) side by side:
    its best record there against the one-thread log's (``seed_log``) best, both linked as
    threads-variant measurement modules and run on ``threads`` threads, alternated for
    ``rounds`` rounds; then rewrite the kernel's records in ``log_dir`` to those two, each with
    its median time, under the threads target. A schedule that fails to build here is dropped.

    Why: a 2-thread timing on a shared machine is bimodal (the second core is there for one
    timing and busy or asleep for the next), and a search keeps what it timed during a fast
    spell. The build's choice rule (``relax_build.load_tuning_log``) then compares times
    taken side by side: the threads variant takes the threads schedule only where it won
    here, and otherwise the one-thread schedule (same code), re-timed on ``threads`` threads."""
    import statistics

    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    extracted = extract_tasks(module_json, p, threads)
    tdb, odb = _db(log_dir), _db(seed_log)
    chosen = []
    for t in extracted:
        mod = t.dispatched[0]
        if (names is None or t.task_name in names) and tdb.has_workload(mod):
            one = odb.get_top_k(odb.commit_workload(mod), 1) if odb.has_workload(mod) else []
            # the threads log's best other than the one-thread schedule (which a recheck put there)
            best = [r for r in tdb.get_top_k(tdb.commit_workload(mod), 8)
                    if not one or _trace_key(r) != _trace_key(one[0])][:1]
            recs = {**({"threads": best[0]} if best else {}), **({"one-thread": one[0]} if one else {})}
            if recs:
                chosen.append((t.task_name, mod, recs))
    if not chosen:
        return {"kernels": {}}
    tgt = tune_target(p, threads)
    builder = make_builder(os.path.join(work_dir, "recheck"), clang, wasm_ld,
                           workers=os.cpu_count() or 1, threads=True)
    cands = [(name, mod, which, rec, rec.as_measure_candidate())
             for name, mod, recs in chosen for which, rec in recs.items()]
    built = builder.build([BuilderInput(c.sch.mod, tgt) for *_, c in cands])
    secs = _race(Measurer(threads=threads), {i: (b.artifact_path, cands[i][4].args_info)
                                             for i, b in enumerate(built) if b.error_msg is None}, rounds)
    report, keep = {}, {}
    for i, (name, mod, which, rec, _c) in enumerate(cands):
        if i not in secs:   # (it built when it was tuned: a timeout on a busy machine, say)
            report.setdefault(name, {})[f"{which}_error"] = str(built[i].error_msg)[-300:]
        else:
            med = statistics.median(secs[i])
            report.setdefault(name, {})[f"{which}_ms"] = round(med * 1e3, 4)
            keep.setdefault(name, (mod, []))[1].append((rec.trace, [med], tgt, rec.args_info))
    with _log_lock(os.path.join(work_dir, ".log.lock")):
        _rewrite_log(log_dir, keep)
    for name, r in report.items():
        r["kept"] = min(("threads", "one-thread"), key=lambda w: r.get(f"{w}_ms", math.inf))
    return {"kernels": report, "rounds": rounds, "threads": threads}


def _trace_key(rec) -> str:
    # the schedule, its instructions and decisions, as the Python it prints as (a record's
    # JSON form holds objects, a transform_layout's index map, that do not convert to Python)
    return str(rec.trace)


def _rewrite_log(log_dir: str, keep: dict) -> None:
    """Replace the records of the workloads in ``keep`` (task -> (mod, [(trace, secs, target,
    args_info)])) by those. The workload file stays as it is (a record names its workload by
    line number); the record file is written beside, by MetaSchedule's own writer, from a copy
    of the workload file, and moved in: one atomic step."""
    import filecmp

    from tvm.s_tir import meta_schedule as ms

    tmp = tempfile.mkdtemp(prefix=".rewrite-", dir=log_dir)
    try:
        names = ("database_workload.json", "database_tuning_record.json")
        shutil.copyfile(os.path.join(log_dir, names[0]), os.path.join(tmp, names[0]))
        new, mark = _db(tmp), ms.database.MemoryDatabase()
        for mod, _recs in keep.values():
            mark.commit_workload(mod)
        for rec in _db(log_dir).get_all_tuning_records():
            if not mark.has_workload(rec.workload.mod):
                new.commit_tuning_record(ms.database.TuningRecord(
                    rec.trace, new.commit_workload(rec.workload.mod), rec.run_secs, rec.target, rec.args_info))
        for mod, recs in keep.values():
            w = new.commit_workload(mod)
            for trace, secs, target, args_info in recs:
                new.commit_tuning_record(ms.database.TuningRecord(trace, w, secs, target, args_info))
        if not filecmp.cmp(os.path.join(tmp, names[0]), os.path.join(log_dir, names[0]), shallow=False):
            raise StageError(STAGE, log_dir, "rewriting the log would change its workloads; left as it was")
        os.replace(os.path.join(tmp, names[1]), os.path.join(log_dir, names[1]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


GRID_ROUNDS = 2       # every candidate of a kernel, alternated: their fastest timing ranks them
GRID_FINALISTS = 3    # the best few then race the log's best for RECHECK_ROUNDS rounds
GRID_MARGIN = 0.97    # a grid schedule goes in the log only when at least 3% faster than its best


def grid(module_json: str, p: relax_build.BuildParams, log_dir: str, work_dir: str, clang, wasm_ld,
         names: list[str] | None = None, rounds: int = RECHECK_ROUNDS, margin: float = GRID_MARGIN,
         threads_log: str = "", threads: int = 1, seed_log: str = "", only: str = "") -> dict:
    """Time the register-tiled schedules of every blocked and Winograd convolution
    (``microkernel``; or only the kernels ``names``, and of those only the ones whose name
    contains ``only``) against the log's best schedule for it, on one thread, and add the
    fastest to the log where it wins.

    Per kernel: every candidate is built, and timed ``GRID_ROUNDS`` rounds, alternated; the
    ``GRID_FINALISTS`` fastest then race the log's best for ``rounds`` rounds, alternated, and
    the medians decide. A finalist goes in the log when its median is under ``margin`` times
    the log best's. Its record's time is the log best's recorded time scaled by that ratio:
    the log's times were taken in other runs, on a machine whose speed drifts, and the build
    keeps the record with the lowest time, so the side-by-side verdict is what must order them.
    A kernel the log lacks gets the fastest finalist, at its median. Nothing is removed.

    ``threads_log``: the model's threads log; the kernels that changed are re-timed there
    (``recheck``), as after a one-thread search.

    ``threads`` > 1: the same for the threads variant. ``log_dir`` is the threads log, the
    candidates are built as threads variants and timed on ``threads`` threads, and a kernel
    that log lacks races the one-thread log's (``seed_log``) best, which is what the threads
    variant runs then. A winner goes in the threads log: at the scaled time when it beat that
    log's best, at its own median when it beat the one-thread schedule."""
    import statistics

    from tvm.s_tir import ScheduleError
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    from pipeline import microkernel

    tgt = tune_target(p, threads)
    os.makedirs(log_dir, exist_ok=True)
    db = _db(log_dir)
    seed = _db(seed_log) if threads > 1 and seed_log and relax_build.tuning_files(seed_log) else None
    kernels = []     # (name, mod, [(candidate, schedule)], best record or None, is it this log's)
    tasks = extract_tasks(module_json, p, threads)
    if only and not any(only in t.task_name for t in tasks):
        raise StageError(STAGE, log_dir, f"--only {only!r} matches no kernel of this model; its kernels: "
                         + ", ".join(sorted(t.task_name for t in tasks)))
    for t in tasks:
        mod = t.dispatched[0]
        picked = (names is None or t.task_name in names) and only in t.task_name
        grid_space = microkernel.space(mod) if picked else None
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
        if scheds:
            kernels.append((t.task_name, mod, scheds, best[0] if best else None, own))
    if not kernels:
        return {"kernels": {}}
    builder = make_builder(os.path.join(work_dir, "grid"), clang, wasm_ld, workers=os.cpu_count() or 1,
                           threads=threads > 1)
    measurer, report = Measurer(threads=threads), {}
    print(f"tune --grid: {sum(len(k[2]) for k in kernels)} schedules for {len(kernels)} convolutions",
          file=sys.stderr, flush=True)
    try:
        for name, mod, scheds, best, own in kernels:
            mods = [s.mod for _c, s in scheds] + ([best.as_measure_candidate().sch.mod] if best else [])
            built = builder.build([BuilderInput(m, tgt) for m in mods])
            ok = [i for i, b in enumerate(built) if b.error_msg is None]
            args = ArgInfo.from_prim_func(mod["main"])

            log_i = len(scheds) if best and len(scheds) in ok else None
            modules = {i: (built[i].artifact_path, args) for i in ok}
            first = _race(measurer, {i: m for i, m in modules.items() if i != log_i}, GRID_ROUNDS)
            finalists = sorted(first, key=lambda i: min(first[i]))[:GRID_FINALISTS]
            if not finalists:
                report[name] = {"error": str(built[0].error_msg)[-300:]}
                continue
            raced = _race(measurer, {i: modules[i] for i in finalists + ([log_i] if log_i is not None else [])},
                          rounds)
            final = {i: statistics.median(s) for i, s in raced.items()}
            win = min(finalists, key=final.get)
            r = report[name] = {"candidates": len(scheds), "built": len(ok), "grid_ms": round(final[win] * 1e3, 4),
                                "schedule": scheds[win][0]}
            if log_i is not None:
                r["log_ms"] = round(final[log_i] * 1e3, 4)
                r["ratio"] = round(final[win] / final[log_i], 4)
            if log_i is None or final[win] < margin * final[log_i]:
                secs = final[win] if log_i is None or not own else statistics.mean(
                    float(s) for s in best.run_secs) * final[win] / final[log_i]
                with _log_lock(os.path.join(work_dir, ".log.lock")):
                    db.commit_tuning_record(ms.database.TuningRecord(
                        scheds[win][1].trace, db.commit_workload(mod), [secs], tgt, args))
                r["kept"] = "grid"
            else:
                r["kept"] = "log"
            print(f"tune --grid: {name}: {r}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(os.path.join(work_dir, "grid"), ignore_errors=True)
    out = {"kernels": report, "rounds": rounds, "margin": margin}
    changed = [n for n, r in report.items() if r.get("kept") == "grid"]
    if changed and threads == 1 and (rechecked := _recheck_threads_log(
            module_json, p, threads_log, log_dir, work_dir, clang, wasm_ld, changed, "tune --grid")) is not None:
        out["recheck"] = rechecked
    return out


def _tune_group(names: list[str], budget: int, work_dir: str, seed: int, label: str, *, module_json: str,
                p: relax_build.BuildParams, log_dir: str, clang, wasm_ld, trials_per_iter: int, fresh: bool,
                chunk: int, round_robin: bool, already: int, lock: str, build_workers: int, side: bool,
                in_job: bool = False, extracted=None, threads: int = 1, seed_log: str = "") -> dict:
    """Tune the tasks ``names`` for ``budget`` trials. ``side``: in a scratch database under
    ``work_dir`` (seeded with ``seed_log`` and the log unless ``fresh``), its new records added
    to the log after every chunk (holding the file lock ``lock``); otherwise straight into the
    log. ``in_job`` (a job process): an error comes back as ``{"error": ...}``, for the parent
    to report. ``threads``: the cores the kernels are tuned for and measured on."""
    from tvm.s_tir import meta_schedule as ms

    try:
        extracted = [t for t in (extracted or extract_tasks(module_json, p, threads)) if t.task_name in names]
        extracted.sort(key=lambda t: names.index(t.task_name))
        os.makedirs(work_dir, exist_ok=True)
        tasks, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            extracted, work_dir=work_dir, num_threads=1, seed=seed)
        # the task scheduler gives every task one batch before it looks at gradients: a small
        # budget must still reach every task
        per_iter = max(2, min(trials_per_iter, budget // max(len(tasks), 1)))
        db_dir = log_dir
        if side:
            db_dir = os.path.join(work_dir, "scratch")
            shutil.rmtree(db_dir, ignore_errors=True)
            os.makedirs(db_dir)
            if not fresh:
                for f in ("database_workload.json", "database_tuning_record.json"):
                    if os.path.isfile(os.path.join(seed_log or log_dir, f)):
                        shutil.copyfile(os.path.join(seed_log or log_dir, f), os.path.join(db_dir, f))
                if seed_log and count_records(log_dir):
                    with _log_lock(lock):
                        merge_new_records(log_dir, db_dir)
        merged = count_records(db_dir) if side else 0
        db = _db(db_dir)
        progress, state = make_progress([t.task_name for t in tasks], budget, already, label=label)
        callbacks = ms.measure_callback.MeasureCallback.create("default") + [progress]
        print(f"{label}: {len(tasks)} tasks, {budget} trials to go ({already} already in {log_dir})",
              file=sys.stderr, flush=True)
        # builds use every core this job has (the runner measures one candidate at a time)
        builder = make_builder(os.path.join(work_dir, "candidates"), clang, wasm_ld, workers=build_workers,
                               threads=threads > 1)
        runner = make_runner(Measurer(threads=threads))
        # in chunks: MetaSchedule writes a batch's records only when it returns to that task, so
        # a run that dies (the bug above) loses at most one chunk
        # (every call starts the scheduler over, so a chunk must reach every task twice)
        chunk = chunk or 2 * len(tasks) * per_iter
        start = count_records(db_dir)
        crashes = 0
        while (left := budget - (count_records(db_dir) - start)) > 0:
            before = count_records(db_dir)
            try:
                ms.tune_tasks(tasks=tasks, task_weights=weights, work_dir=work_dir, max_trials_global=min(chunk, left),
                              num_trials_per_iter=per_iter, builder=builder, runner=runner, database=db,
                              cost_model="xgb", measure_callbacks=callbacks,
                              task_scheduler="round-robin" if round_robin else "gradient")
            except RuntimeError as e:
                if _SAMPLING_CRASH not in str(e) or crashes >= MAX_CRASHES:
                    raise
                crashes += 1
                print(f"{label}: MetaSchedule failed while sampling schedules (TVM bug: '{_SAMPLING_CRASH} in "
                      f"the IRModule'); resuming from the database ({crashes} so far)", file=sys.stderr, flush=True)
                db = _db(db_dir)
                continue
            finally:
                if side:
                    with _log_lock(lock):
                        merged = merge_new_records(db_dir, log_dir, merged)
            if count_records(db_dir) == before:   # every task's search space is used up
                break
        return {"tasks": len(tasks), "trials": state["done"], "crashes": crashes,
                "best_ms": {k: round(v * 1e3, 4) for k, v in sorted(state["best"].items())}}
    except Exception as e:
        if not in_job:
            raise
        return {"error": f"{label}: {type(e).__name__}: {e}"}
