"""The tuning log on disk: MetaSchedule's JSON database (``database_workload.json``, one
workload a line; ``database_tuning_record.json``, one record a line, naming its workload by
line number) in the model's tuning log folder. Counting, repairing, merging and rewriting it,
and reading what it says about the model's tasks."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile

from wasmforge.errors import StageError
from wasmforge.stages import relax_build
from wasmforge.tune.tasks import STAGE


def open_db(log_dir: str):
    """The log in ``log_dir`` as MetaSchedule's JSONDatabase, which appends to its files."""
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(path_workload=os.path.join(log_dir, "database_workload.json"),
                                    path_tuning_record=os.path.join(log_dir, "database_tuning_record.json"))


def _lines(path: str) -> list[str]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [line for line in f if line.strip()]


def count_records(log_dir: str) -> int:
    return len(_lines(os.path.join(log_dir, "database_tuning_record.json")))


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


def merge_new_records(scratch_dir: str, log_dir: str, skip: int = 0) -> int:
    """Add a scratch database's records after the first ``skip`` to the log, each workload
    re-indexed to the log's own (found by structure, added if new); returns the scratch
    database's record count, the ``skip`` for the next call. Callers that tune side by side
    hold ``log_lock`` around it: the log is one appending writer at a time."""
    from tvm.s_tir import meta_schedule as ms

    records = _lines(os.path.join(scratch_dir, "database_tuning_record.json"))
    if len(records) <= skip:
        return len(records)
    workloads = _lines(os.path.join(scratch_dir, "database_workload.json"))
    log, in_log = open_db(log_dir), {}
    for line in records[skip:]:
        index, rec = json.loads(line)
        if index not in in_log:
            in_log[index] = log.commit_workload(ms.database.Workload.from_json(json.loads(workloads[index])).mod)
        log.commit_tuning_record(ms.database.TuningRecord.from_json(rec, in_log[index]))
    return len(records)


class log_lock:
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


def log_threads(log_dir: str) -> int:
    """The cores a threads log's records were tuned for (their target's num-cores); 0 when it
    has no records."""
    for line in _lines(os.path.join(log_dir, "database_tuning_record.json")):
        return int(json.loads(line)[1][2].get("num-cores", 1))
    return 0


def trace_key(rec) -> str:
    # the schedule, its instructions and decisions, as the Python it prints as (a record's
    # JSON form holds objects, a transform_layout's index map, that do not convert to Python)
    return str(rec.trace)


def rewrite_log(log_dir: str, keep: dict) -> None:
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
        new, mark = open_db(tmp), ms.database.MemoryDatabase()
        for mod, _recs in keep.values():
            mark.commit_workload(mod)
        for rec in open_db(log_dir).get_all_tuning_records():
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

