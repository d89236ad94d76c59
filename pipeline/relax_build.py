"""Stage 2, relax_build (the design's "relay build"): Relax IRModule -> lowered IRModule for the wasm32 target.

The passes are TVM's CPU pipeline (``tvm/relax/backend/cpu_generic/pipeline.py``) as named
phases, with one phase of ours: when the model has a tuning log (a MetaSchedule database
directory), its schedules are applied right after fusion; tasks without records keep the
default schedules. The names of every pass are part of the stage key.

Output: ``lowered.json``: Relax ``main`` lowered to VM builtins and kernel calls, plus the
kernels as TIR PrimFuncs; the emit and executor stages read it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline import cache
from pipeline.errors import StageError

STAGE = "relax_build"
TUNING_FILES = ("database_workload.json", "database_tuning_record.json")


@dataclass(frozen=True)
class BuildParams:
    mattr: tuple[str, ...] = ("+simd128",)

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


def legalize_passes(tgt):
    from tvm import relax

    t = relax.transform
    return [t.LegalizeOps(), t.AnnotateTIROpPattern(), t.FoldConstant(), t.FuseOps(), t.FuseTIR()]


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


def passes(tgt, has_log: bool) -> list:
    return (library_dispatch_passes(tgt) + legalize_passes(tgt) + tuning_passes(tgt, has_log)
            + dataflow_lower_passes(tgt) + finalize_passes(tgt))


PASS_NAMES = ["DispatchSampling", "DispatchSortScan", "LegalizeOps", "AnnotateTIROpPattern",
              "FoldConstant", "FuseOps", "FuseTIR", "[MetaScheduleApplyDatabase]",
              "RewriteDataflowReshape", "ToNonDataflow", "RemovePurityChecking", "CallTIRRewrite",
              "StaticPlanBlockMemory", "LowerAllocTensor", "KillAfterLastUse",
              "LowerRuntimeBuiltin", "ComputePrimValue", "VMShapeLower", "AttachGlobalSymbol"]


def run(module_json: str, log_dir: str, p: BuildParams, out: str) -> dict:
    import tvm

    with open(module_json) as f:
        mod = tvm.ir.load_json(f.read())
    tgt = target(p)
    logs = tuning_files(log_dir)
    try:
        with tgt:
            seq = tvm.transform.Sequential(passes(tgt, bool(logs)))
            if logs:
                from tvm.s_tir import meta_schedule as ms

                db = ms.database.JSONDatabase(path_workload=logs[0], path_tuning_record=logs[1])
                with db, tvm.transform.PassContext(opt_level=3):
                    mod = seq(mod)
            else:
                mod = seq(mod)
    except (tvm.error.InternalError, RuntimeError, ValueError) as e:
        raise StageError(STAGE, module_json, f"TVM failed to lower the model: {str(e).strip().splitlines()[-1]}") from None
    cache.write_bytes(out, tvm.ir.save_json(mod).encode())
    kernels = sum(1 for _, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc))
    return {"kernels": kernels, "tuning_log": [os.path.basename(f) for f in logs]}
