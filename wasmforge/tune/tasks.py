"""What a tuning run works on: the context its steps share (the model, its logs, the work
folder, the toolchain, the search settings) and the model's tasks, the kernels the build
stage will look up in the tuning log, for the build's target."""
from __future__ import annotations

import os
from dataclasses import dataclass

from wasmforge.stages import relax_build

STAGE = "tune"


@dataclass(frozen=True)
class TuneContext:
    """One tuning run's inputs, for the search (``search.run``) and the side-by-side
    comparisons (``compare.recheck``, ``compare.grid``). Picklable: a search's job processes
    get it as it is.

    ``log_dir``: the log this run writes (the one-thread log, or with ``threads`` > 1 the
    threads log); ``work_dir``: its scratch folder; ``clang``, ``wasm_ld``: the toolchain's
    tools (``toolchain.clang()``, ``toolchain.wasm_ld()``). ``threads``: the cores the kernels
    are tuned for and measured on. ``seed_log`` (``threads`` > 1): the one-thread log, which
    seeds the threads log's search and is what the threads variant runs where the threads log
    has no record. ``threads_log`` (``threads`` == 1): the model's threads log, whose kernels
    are re-timed after the one-thread ones change. ``fresh``, ``trials_per_iter``, ``chunk``,
    ``seed``: the search's settings (see ``search.run``)."""

    module_json: str
    p: relax_build.BuildParams
    log_dir: str
    work_dir: str
    clang: object
    wasm_ld: object
    threads: int = 1
    seed_log: str = ""
    threads_log: str = ""
    fresh: bool = False
    trials_per_iter: int = 16
    chunk: int = 0
    seed: int = 0

    @property
    def lock(self) -> str:
        """The file whose lock (``log.log_lock``) makes the log one writer at a time."""
        return os.path.join(self.work_dir, ".log.lock")

    def tasks(self):
        """The model's tasks for this run's target (``extract_tasks``)."""
        return extract_tasks(self.module_json, self.p, self.threads)


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
