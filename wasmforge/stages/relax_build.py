"""Stage 2, relax_build (the design's "relay build"): Relax IRModule -> lowered IRModule for the wasm32 target.

The passes are TVM's CPU pipeline (``tvm/relax/backend/cpu_generic/pipeline.py``) as named
phases, with two of ours: convolutions take a blocked NCHW[b]c layout, or Winograd for 3x3,
with weights re-laid or transformed at build time (``conv_lowering.py``; a model's
declaration can turn either off), and when the model has a tuning log (a MetaSchedule
database directory), its schedules are applied right after fusion. A convolution without a
record takes one of ``microkernel``'s grid schedules, picked by rule
(``microkernel.apply_default_schedules``), and so do matrix products, depthwise and NCHW 1x1
convolutions; pools, concatenations, layout transforms and element-wise chains take a
parallel loop (``spatial``); other kernels keep TVM's default, unscheduled loops. The names of every pass
are part of the stage key.

Output: ``lowered.json``: Relax ``main`` lowered to VM builtins and kernel calls, plus the
kernels as TIR PrimFuncs; the emit and executor stages read it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from wasmforge.compiler import batch_norm, conv_lowering, softmax
from wasmforge.errors import StageError
from wasmforge.store import files

STAGE = "relax_build"
# what the stage runs: part of its key (microkernel imports TVM, so it is imported late)
CODE = (__file__, conv_lowering.__file__, batch_norm.__file__,
        *(os.path.join(os.path.dirname(conv_lowering.__file__), f) for f in ("microkernel.py", "tiles.py", "dense.py", "depthwise.py", "pointwise.py",
                                                                            "spatial.py")))
TUNING_FILES = ("database_workload.json", "database_tuning_record.json")


@dataclass(frozen=True)
class BuildParams:
    mattr: tuple[str, ...] = ("+simd128",)
    conv_block: int = 16      # NCHW[b]c convolutions (conv_lowering.py); 0 keeps NCHW
    winograd: bool = True     # F(4x4, 3x3) for 3x3 stride-1 convolutions (conv_lowering.py)
    fold_batch_norm: bool = True   # batch norms into the convolutions before them (batch_norm.py)

    def target_dict(self) -> dict:
        return {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm", "mattr": list(self.mattr)}


def target(p: BuildParams):
    import tvm

    return tvm.target.Target(p.target_dict())


def tuning_files(log_dir: str) -> list[str]:
    """The database files of a tuning log, or [] when the model has none."""
    files = [os.path.join(log_dir, f) for f in TUNING_FILES]
    present = [f for f in files if os.path.isfile(f)]
    if present and len(present) != len(files):
        missing = sorted(set(files) - set(present))
        raise StageError(STAGE, log_dir, f"incomplete tuning log: missing {missing}")
    return present


# --- named phases (lists of passes), after tvm.relax.backend.cpu_generic.pipeline -------

def library_dispatch_passes(tgt):
    from tvm import relax

    return [relax.backend.DispatchSampling(), relax.backend.DispatchSortScan()]


def legalize_passes(tgt, p: BuildParams):
    from tvm import relax

    t = relax.transform
    # FoldBatchNorm folds each inference batch_norm into the convolution before it (its
    # scale into the weights, its shift a bias) or into one multiply-add on constants;
    # DecomposeOpsForInference turns what else is left for inference into elementwise
    # arithmetic, and FuseOps fuses it into the convolution before it (CanonicalizeBindings
    # removes the tuples that would stop fusion). The blocked layout comes after, so the
    # arithmetic is re-laid with the convolutions; FoldConstant re-lays the weights at build time.
    fold = [batch_norm.fold_batch_norm(), t.DeadCodeElimination()] if p.fold_batch_norm else []
    return (fold + [t.DecomposeOpsForInference(),
             t.CanonicalizeBindings()] + conv_lowering.passes(p.conv_block, p.winograd)
            + [t.LegalizeOps({conv_lowering.OP: conv_lowering.legalizer(p.winograd), softmax.OP: softmax.legalize}),
               t.AnnotateTIROpPattern(),
               t.FoldConstant(), t.FuseOps(), t.FuseTIR()])


def tuning_passes(tgt, has_log: bool):
    from tvm import relax

    return [relax.transform.MetaScheduleApplyDatabase(enable_warning=False)] if has_log else []


def dataflow_lower_passes(tgt):
    from tvm import relax

    t = relax.transform
    return [t.RewriteDataflowReshape(), t.ToNonDataflow(), t.RemovePurityChecking(), t.CallTIRRewrite()]


def finalize_passes(tgt):
    from tvm import relax

    t = relax.transform
    return [t.StaticPlanBlockMemory(), t.LowerAllocTensor(), t.KillAfterLastUse(),
            t.LowerRuntimeBuiltin(), t.ComputePrimValue(), t.VMShapeLower(), t.AttachGlobalSymbol()]


def fusion_passes(tgt, p: BuildParams) -> list:
    """Up to fusion: the module whose kernels are the tuning tasks."""
    return library_dispatch_passes(tgt) + legalize_passes(tgt, p)


def lowering_passes(tgt) -> list:
    """After the tuning log is applied: down to what the executor and emit stages read."""
    return dataflow_lower_passes(tgt) + finalize_passes(tgt)


def passes(tgt, has_log: bool, p: BuildParams = BuildParams()) -> list:
    return fusion_passes(tgt, p) + tuning_passes(tgt, has_log) + lowering_passes(tgt)


def pass_names(p: BuildParams) -> list[str]:
    """What ``passes`` runs, by name: part of the stage key."""
    return (["DispatchSampling", "DispatchSortScan"]
            + (["FoldBatchNorm", "DeadCodeElimination"] if p.fold_batch_norm else [])
            + ["DecomposeOpsForInference", "CanonicalizeBindings"]
            + conv_lowering.pass_names(p.conv_block, p.winograd) + ["LegalizeOps(softmax: fast_exp)"]
            + ["AnnotateTIROpPattern", "FoldConstant", "FuseOps", "FuseTIR",
               "[MetaScheduleApplyDatabase]", "default_schedules(microkernel)", "RewriteDataflowReshape", "ToNonDataflow", "RemovePurityChecking",
               "CallTIRRewrite", "StaticPlanBlockMemory", "LowerAllocTensor", "KillAfterLastUse",
               "LowerRuntimeBuiltin", "ComputePrimValue", "VMShapeLower", "AttachGlobalSymbol"])


# the target attributes a tuning record must share with this build to be applied
TARGET_KEYS = ("kind", "mtriple", "mattr")


def target_compatible(record: dict, build: dict) -> bool:
    """A record applies when kind and triple match and the features it was tuned with are a
    subset of the build's: a schedule tuned for +simd128 is valid, and a good start, for a
    +simd128,+relaxed-simd variant; the reverse could use instructions the build lacks."""
    return (record.get("kind") == build.get("kind") and record.get("mtriple") == build.get("mtriple")
            and set(record.get("mattr", [])) <= set(build.get("mattr", [])))


def _target_id(tgt) -> dict:
    e = dict(tgt.export())
    return {k: (sorted(str(x) for x in e[k]) if k == "mattr" else str(e[k])) for k in TARGET_KEYS if k in e}


def _commit(db, rec) -> None:
    db.commit_workload(rec.workload.mod)
    db.commit_tuning_record(rec)


def _best_secs(db, mod) -> float:
    """The mean time of a workload's best record in ``db`` (infinity when it has none)."""
    import math

    if not db.has_workload(mod):
        return math.inf
    recs = db.get_top_k(db.commit_workload(mod), 1)
    secs = [float(x) for x in recs[0].run_secs] if recs and recs[0].run_secs else []
    return sum(secs) / len(secs) if secs else math.inf


def load_tuning_log(logs: list[str], tgt, fused_mod, first: list[str] = ()) -> tuple[object, dict]:
    """The log's records usable for this build, in a memory database, and what was kept.

    Records made for another target are ignored with a warning saying which target; records
    whose workload is no kernel of this model (other shapes, another model) likewise.

    ``first``: the threads variant's own log, timed on several threads. A kernel takes its
    schedule from there when that log's best time beats ``logs``' best, a time on one
    thread: a schedule tuned for one core runs at least as fast on two as on one, so a
    threads record that does not beat it is no gain (``from_threads_log`` lists the kernels
    that took theirs).
    """
    import sys

    from tvm.s_tir import meta_schedule as ms

    want = _target_id(tgt)
    tasks = ms.relax_integration.extract_tasks(fused_mod, tgt)
    counts = {"kept": 0, "other_target": 0}
    seen_targets = set()

    def usable(files):
        db = ms.database.MemoryDatabase()
        if not files:
            return db
        for rec in ms.database.JSONDatabase(path_workload=files[0], path_tuning_record=files[1]).get_all_tuning_records():
            tid = _target_id(rec.target)
            if not target_compatible(tid, want):
                counts["other_target"] += 1
                seen_targets.add(str(tid))
                continue
            _commit(db, rec)
            counts["kept"] += 1
        return db

    mine, rest = usable(first), usable(logs)
    mem, wins = rest, None
    if first:
        mem = ms.database.MemoryDatabase()
        decided, wins = ms.database.MemoryDatabase(), ms.database.MemoryDatabase()   # sets of workloads
        for rec in mine.get_all_tuning_records():
            w = rec.workload.mod
            if not decided.has_workload(w):
                decided.commit_workload(w)
                if _best_secs(mine, w) < _best_secs(rest, w):
                    wins.commit_workload(w)   # ``first`` gives this kernel's schedule
            if wins.has_workload(w):
                _commit(mem, rec)
        for rec in rest.get_all_tuning_records():
            if not wins.has_workload(rec.workload.mod):
                _commit(mem, rec)
    kept, other_target = counts["kept"], counts["other_target"]
    tuned = [t.task_name for t in tasks if mem.query_tuning_record(t.dispatched[0], tgt, "main") is not None]
    kernels = ms.database.MemoryDatabase()
    for t in tasks:
        kernels.commit_workload(t.dispatched[0])
    matched = sum(1 for db in (mine, rest) for rec in db.get_all_tuning_records() if kernels.has_workload(rec.workload.mod))
    info = {"records": kept + other_target, "kernels": len(tasks), "tuned_kernels": sorted(tuned),
            **({"from_threads_log": sorted(t.task_name for t in tasks if wins.has_workload(t.dispatched[0]))}
               if first else {}),
            "ignored_other_target": other_target, "ignored_no_kernel": kept - matched}
    where = " and ".join(f[1] for f in (first, logs) if f)   # (the counts are over both logs)
    if other_target:
        print(f"wasmforge: warning: {where}: {other_target} tuning records ignored: recorded for "
              f"{', '.join(sorted(seen_targets))}, this build targets {want}", file=sys.stderr)
    if kept - matched:
        print(f"wasmforge: warning: {where}: {kept - matched} tuning records ignored: they match no "
              "kernel of this model (recorded for other shapes or another model)", file=sys.stderr)
    return mem, info


def run(module_json: str, log_dir: str, p: BuildParams, out: str, threads_log_dir: str = "") -> dict:
    """``threads_log_dir``: the threads variant's build (stage ``relax_build_threads``): that
    log's schedules win over ``log_dir``'s, and ``out`` holds only the kernels (the Relax
    ``main`` is the portable build's, the executor stage reads that one)."""
    import tvm

    with open(module_json) as f:
        mod = tvm.ir.load_json(f.read())
    tgt = target(p)
    logs = tuning_files(log_dir)
    first = tuning_files(threads_log_dir) if threads_log_dir else []
    tuning = None
    try:
        with tgt:
            mod = tvm.transform.Sequential(fusion_passes(tgt, p))(mod)
            if logs or first:
                db, tuning = load_tuning_log(logs, tgt, mod, first)
                with db, tvm.transform.PassContext(opt_level=3):
                    mod = tvm.transform.Sequential(tuning_passes(tgt, True))(mod)
            from wasmforge.compiler import microkernel

            mod, defaults, parallel = microkernel.apply_default_schedules(mod)
            mod = tvm.transform.Sequential(lowering_passes(tgt))(mod)
    except Exception as e:   # TVM's passes raise its own errors, and asserts in its operator library
        lines = str(e).strip().splitlines()
        raise StageError(STAGE, module_json, f"TVM failed to lower the model: {type(e).__name__}"
                                             + (f": {lines[-1]}" if lines else "")) from None
    if threads_log_dir:
        mod = tvm.IRModule({gv: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)},
                           attrs=mod.attrs)
    kernels = sum(1 for _, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc))
    if not kernels:
        raise StageError(STAGE, module_json, "the model computes nothing to compile: each output is one of its "
                                             "inputs or a constant (TVM folded every operator away)")
    files.write_bytes(out, tvm.ir.save_json(mod).encode())
    return {"kernels": kernels, "tuning_log": [os.path.basename(f) for f in logs], "tuning": tuning,
            "default_schedules": defaults, "parallel_loops": parallel,
            **({"threads_tuning_log": [os.path.basename(f) for f in first]} if threads_log_dir else {})}
