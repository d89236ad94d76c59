"""Candidates built for wasm32 and timed inside wasmtime: MetaSchedule's builder makes each
candidate a measurement module (the kernel linked with ``runtime/wasmforge_measure.c``), and
its runner times that module in wasmtime, in this process (see the package's docstring)."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import time

from wasmforge import abi
from wasmforge.errors import StageError
from wasmforge.stages import link
from wasmforge.stages.executor_plan import DL_DTYPES
from wasmforge.tune.tasks import STAGE


def _link(clang, wasm_ld, objects: list[str], out: str, threads: bool = False) -> None:
    p = link.LinkParams(threads=threads)
    argv = link.link_argv(clang.path, wasm_ld.path, p, objects, out)
    argv = [a for a in argv if not a.startswith("-Wl,--export=wasmforge_")]
    argv += [f"-Wl,--export={e}" for e in ("wfb_desc", "wfb_setup", "wfb_run", "wasmforge_last_error")
             + (tuple(abi.THREADS_EXPORTS) if threads else ())]
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
                                 os.path.join(link.RUNTIME_DIR, "wasmforge_measure.c"), o, defines)
        res = subprocess.run(argv, capture_output=True, text=True)
        if res.returncode != 0:
            raise StageError(STAGE, "wasmforge_measure.c",
                             f"compiling the measurement module failed: {res.stderr[-2000:]}")
    return LocalBuilder(max_workers=max(1, workers), timeout_sec=timeout_s, f_build=_build_candidate,
                        f_export=_Export(work_dir, bench_o, clang, wasm_ld, threads))


def describe_args(args_info) -> bytes:
    """The argument descriptor wfb_setup() reads (see wasmforge_measure.c)."""
    import struct

    out = bytearray(struct.pack("<i", len(args_info)))
    for a in args_info:
        dtype = str(a.dtype)
        code, bits = DL_DTYPES[dtype]
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

        from wasmforge.engines import host

        self.threads = threads
        self.engine = host.threads_engine() if threads > 1 else wasmtime.Engine()
        self.repeat, self.min_repeat_ms = repeat, min_repeat_ms

    def measure(self, wasm_path: str, args_info) -> list[float]:
        import ctypes

        import wasmtime

        from wasmforge.engines import host

        module = wasmtime.Module.from_file(self.engine, wasm_path)
        shared = host.module_shared_memory(self.engine, module) if self.threads > 1 else None

        def instantiate():
            return host.instantiate(self.engine, module, shared, inherit_output=False)

        store, inst = instantiate()
        ex = inst.exports(store)
        ex["_initialize"](store)

        def base() -> int:   # (a shared memory is not an export: it is the one we made)
            return host.memory_base(store, None if shared is not None else ex["memory"], shared)

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


def race(measurer: Measurer, modules: dict, rounds: int) -> dict:
    """Time each measurement module ``modules[i] = (path, args_info)`` once per round, one
    after another, for ``rounds`` rounds (alternated, so a slow spell hits them all alike);
    returns i -> its timings."""
    secs = {i: [] for i in modules}
    for _ in range(rounds):
        for i, (path, args_info) in modules.items():
            secs[i] += measurer.measure(path, args_info)
    return secs

