"""Run a wasmforge module from Python with the ``wasmtime`` package.

    from wasmforge.engines.host import WasmModel
    m = WasmModel("build/resnet50/resnet50.wasm")
    probs = m.run(x)                    # one input: an array; several: a dict by name
    m.inputs, m.outputs, m.metadata     # read from the "wasmforge.metadata" custom section

Inputs are checked against the metadata (shape and dtype) before the module is touched.

The threads variant (``<model>.threads.wasm``) runs on several threads::

    with WasmModel("build/resnet50/resnet50.threads.wasm", threads=2) as m:
        probs = m.run(x)

Wasmtime's C API (which this package wraps) has no wasi-threads, so the host brings the
threads: it creates the shared memory the module imports, instantiates the module once for
the caller (and runs ``_initialize`` there, once), and for each worker starts a Python thread
that instantiates the same module in its own ``Store`` with the same memory and calls
``wasmforge_worker(id, stack)``, which serves parallel loops until ``close()``. ctypes drops
the GIL while wasm runs, so the workers run in parallel with the caller.
"""
from __future__ import annotations

import ctypes
import os
import threading
import time

import numpy as np

from wasmforge.engines import wasmbin

WASI_MODULE = "wasi_snapshot_preview1"
WORKER_ATTACH_TIMEOUT_S = 30.0


def shared_memory_import(imports: list[dict]) -> bool:
    return any(wasmbin.is_shared_memory(i) for i in imports)


def threads_engine():
    """An engine that can run the threads variant (shared memory and atomics)."""
    import wasmtime

    cfg = wasmtime.Config()
    cfg.wasm_threads = True
    cfg.shared_memory = True
    return wasmtime.Engine(cfg)


def shared_memory(engine, limits):
    """A shared memory that a ``Linker`` can define as an import.

    Works around a bug of wasmtime-py 50.0.1 (upstream wasmtime-py issue 318):
    ``SharedMemory._as_extern`` wraps its pointer in one more ``ctypes.pointer`` than the
    extern union holds, so ``Linker.define(store, "env", "memory", shared)`` fails with
    ``TypeError: incompatible types, LP_LP_wasmtime_sharedmemory``. The subclass builds the
    same extern with the pointer itself. This is the one place the workaround lives;
    ``tests/test_threads.py::test_wasmtime_py_issue_318_is_still_open`` fails once upstream
    is fixed, and then this subclass should go.
    """
    import wasmtime
    from wasmtime import _ffi as ffi

    class _SharedMemory(wasmtime.SharedMemory):
        def _as_extern(self):
            union = ffi.wasmtime_extern_union(sharedmemory=self.ptr())
            return ffi.wasmtime_extern_t(ffi.WASMTIME_EXTERN_SHAREDMEMORY, union)

    return _SharedMemory(engine, wasmtime.MemoryType(limits, shared=True))


def module_shared_memory(engine, module):
    """For a module importing a shared ``env.memory`` (the threads variant): that memory,
    made with the limits it imports; None for a module with its own memory."""
    import wasmtime

    for imp in module.imports:
        if (imp.module, imp.name) == ("env", "memory") and isinstance(imp.type, wasmtime.MemoryType):
            return shared_memory(engine, imp.type.limits)
    return None


def instantiate(engine, module, shared=None, inherit_output: bool = True):
    """One instance of ``module`` with WASI (and ``shared`` as its ``env.memory``); returns
    (store, instance). ``inherit_output``: the module's stdout and stderr are this process's."""
    import wasmtime

    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    if inherit_output:
        wasi.inherit_stdout()
        wasi.inherit_stderr()
    store.set_wasi(wasi)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    if shared is not None:
        linker.define(store, "env", "memory", shared)
    return store, linker.instantiate(store, module)


def memory_base(store, memory, shared=None) -> int:
    """The host address of linear memory byte 0: the shared memory's (it never moves), else
    the instance's exported ``memory`` (read anew: it moves when the memory grows)."""
    if shared is not None:
        return ctypes.addressof(shared.data_ptr().contents)
    return ctypes.addressof(memory.data_ptr(store).contents)


def start_workers(ex, store, n: int, instantiate, errors: list, stack=None,
                  last_error=lambda: "") -> list[threading.Thread]:
    """Start ``n`` worker threads for the threads-variant instance whose exports are ``ex``
    (in ``store``, already ``_initialize``d): each instantiates the module again in its own
    ``Store`` (``instantiate() -> (store, instance)``, importing the same shared memory) and
    serves parallel loops in ``wasmforge_worker`` until ``stop_workers``. Returns once every
    worker has attached; a worker's exception lands in ``errors``. ``stack(id)``: a worker's
    initial stack pointer (default: the module's ``wasmforge_worker_stack``)."""
    if ex["wasmforge_threads_prepare"](store, n) != 0:
        raise ModelRuntimeError(f"wasmforge_threads_prepare({n}): {last_error()}")
    workers = []
    for wid in range(1, n + 1):
        top = stack(wid) if stack else ex["wasmforge_worker_stack"](store, wid)

        def serve(wid=wid, top=top):
            wstore = instance = None
            try:
                # its own instance: a Store is not to be shared between threads; never
                # _initialize it, the constructors ran once, in the first instance
                wstore, instance = instantiate()
                instance.exports(wstore)["wasmforge_worker"](wstore, wid, top)
            except BaseException as e:   # reported by the thread that waits for it
                errors.append(e)
                if instance is not None:   # a trap mid-task: release the launching thread
                    try:
                        instance.exports(wstore)["wasmforge_threads_worker_died"](wstore)
                    except BaseException as e2:   # (it touches no stack: should not happen)
                        errors.append(e2)

        t = threading.Thread(target=serve, name=f"wasmforge-worker-{wid}", daemon=True)
        t.start()
        workers.append(t)
    deadline = time.monotonic() + WORKER_ATTACH_TIMEOUT_S
    attached = ex["wasmforge_threads_attached"]
    while attached(store) != n:   # a launch must see every worker, or none
        if errors or time.monotonic() > deadline:
            stop_workers(ex, store, workers)
            why = errors[0] if errors else f"timed out after {WORKER_ATTACH_TIMEOUT_S} s"
            raise ModelRuntimeError(f"starting {n} worker threads failed: {why}")
        time.sleep(0.001)
    return workers


def stop_workers(ex, store, workers: list[threading.Thread]) -> None:
    """Ask the workers to return from ``wasmforge_worker``, and join them."""
    ex["wasmforge_threads_stop"](store)
    for t in workers:
        t.join()


class ModelInputError(ValueError):
    """An input does not match the module's declared shape or dtype."""


class ModelRuntimeError(RuntimeError):
    """The module reported a failure (its wasmforge_last_error message)."""


class WasmModel:
    def __init__(self, path: str, engine=None, aot_cache: str | None = None, threads: int = 1):
        """``aot_cache``: a folder of ours where the module compiled by wasmtime is kept
        (``Module.serialize``), keyed by the module's sha256 and the wasmtime version, so the
        next start skips compiling. Only ever point it at a folder this project writes:
        deserializing trusts the file. It needs an engine this class makes (the default one,
        or for the threads variant the default plus threads and shared memory, named in the
        key): wasmtime accepts code compiled under another configuration (e.g. another
        Cranelift level) without a word, and a Config cannot be read back to put it in the key.

        ``threads``: how many threads run the model, the caller's included. More than one
        needs the threads variant (a module importing a shared ``env.memory``); call
        ``close()`` (or use ``with``) to stop the workers."""
        import wasmtime

        if aot_cache and engine is not None:
            raise ValueError("aot_cache works with the default engine only (the key cannot name a custom Config)")

        self.path = str(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: module not found")
        with open(self.path, "rb") as f:
            data = f.read()
        try:
            self.metadata = wasmbin.metadata(data)
        except (wasmbin.WasmFormatError, ValueError) as e:
            raise ValueError(f"{self.path}: {e}") from None
        self.imports = wasmbin.imports(data)
        self.inputs = self.metadata["inputs"]
        self.outputs = self.metadata["outputs"]
        self.threads = threads
        self._workers: list[threading.Thread] = []
        self._worker_errors: list[BaseException] = []
        shared = shared_memory_import(self.imports)
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        if threads > 1 and not shared:
            raise ValueError(f"{self.path}: this module has no threads (it does not import a shared "
                             f"memory); run it with threads=1, or use the <model>.threads.wasm variant")
        self.engine = engine or (threads_engine() if shared else wasmtime.Engine())
        self.module = self._compile(wasmtime, data, aot_cache, "threads" if shared else "default")
        self._shared = module_shared_memory(self.engine, self.module) if shared else None
        self.store, self.instance = instantiate(self.engine, self.module, self._shared)
        ex = self.instance.exports(self.store)
        self._memory = None if shared else ex["memory"]
        self._fn = {name: ex[name] for name in (
            "wasmforge_run", "wasmforge_input_ptr", "wasmforge_input_size", "wasmforge_output_ptr",
            "wasmforge_output_size", "wasmforge_last_error")}
        ex["_initialize"](self.store)   # a reactor: runs the constructors once
        self._in = [self._region("input", i, d) for i, d in enumerate(self.inputs)]
        self._out = [self._region("output", i, d) for i, d in enumerate(self.outputs)]
        if threads > 1:
            self._start_workers(wasmtime, ex, threads - 1)

    def _start_workers(self, wasmtime, ex, n: int) -> None:
        try:
            self._workers = start_workers(ex, self.store, n, lambda: instantiate(self.engine, self.module, self._shared),
                                          self._worker_errors,
                                          stack=lambda wid: self._worker_stack(ex, wid), last_error=self.last_error)
        except ModelRuntimeError as e:
            raise ModelRuntimeError(f"{self.path}: {e}") from None

    def _worker_stack(self, ex, wid: int) -> int:
        return ex["wasmforge_worker_stack"](self.store, wid)

    def _check_workers(self) -> None:
        if self._worker_errors:
            raise ModelRuntimeError(f"{self.path}: a worker thread failed, so this model instance cannot run "
                                    f"again (open a new one): {self._worker_errors[0]}")

    @property
    def worker_tasks(self) -> int:
        """Parallel tasks the worker threads have run so far (0 without workers)."""
        if not self._workers:
            return 0
        return self.instance.exports(self.store)["wasmforge_threads_tasks"](self.store)

    def close(self) -> None:
        """Stop and join the worker threads (a no-op with one thread)."""
        if self._workers:
            stop_workers(self.instance.exports(self.store), self.store, self._workers)
            self._workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_workers", None):
            try:
                self.close()
            except Exception:   # interpreter shutdown: the workers are daemons anyway
                pass

    def _compile(self, wasmtime, data: bytes, aot_cache: str | None, config: str):
        if not aot_cache:
            return wasmtime.Module(self.engine, data)
        from importlib import metadata

        from wasmforge.store import digests, files

        key = digests.digest({"module": digests.digest_bytes(data), "wasmtime": metadata.version("wasmtime"),
                            "config": config})
        cwasm = os.path.join(aot_cache, f"{key}.cwasm")
        if os.path.isfile(cwasm):
            try:
                return wasmtime.Module.deserialize_file(self.engine, cwasm)
            except wasmtime.WasmtimeError:
                os.unlink(cwasm)   # another engine configuration: compile again below
        module = wasmtime.Module(self.engine, data)
        files.write_bytes(cwasm, module.serialize())
        return module

    def _region(self, kind: str, i: int, decl: dict) -> tuple[int, int]:
        ptr = self._fn[f"wasmforge_{kind}_ptr"](self.store, i)
        size = self._fn[f"wasmforge_{kind}_size"](self.store, i)
        want = int(np.prod(decl["shape"])) * np.dtype(decl["dtype"]).itemsize
        if size != want:
            raise ValueError(f"{self.path}: {kind} {decl['name']!r} is {size} bytes in the module, "
                             f"{want} by its metadata")
        return ptr, size

    def _base(self) -> int:
        return memory_base(self.store, self._memory, self._shared)

    def _check(self, arrays) -> list[np.ndarray]:
        if isinstance(arrays, np.ndarray):
            arrays = [arrays]
        if isinstance(arrays, dict):
            missing = [d["name"] for d in self.inputs if d["name"] not in arrays]
            extra = sorted(set(arrays) - {d["name"] for d in self.inputs})
            if missing or extra:
                raise ModelInputError(f"{self.path}: inputs missing {missing}, unknown {extra}; "
                                      f"expected {[d['name'] for d in self.inputs]}")
            arrays = [arrays[d["name"]] for d in self.inputs]
        arrays = list(arrays)
        if len(arrays) != len(self.inputs):
            raise ModelInputError(f"{self.path}: expected {len(self.inputs)} inputs, got {len(arrays)}")
        out = []
        for a, d in zip(arrays, self.inputs):
            a = np.asarray(a)
            if a.dtype != np.dtype(d["dtype"]):
                raise ModelInputError(f"{self.path}: input {d['name']!r} must have dtype {d['dtype']}, "
                                      f"got {a.dtype}")
            if list(a.shape) != list(d["shape"]):
                raise ModelInputError(f"{self.path}: input {d['name']!r} must have shape "
                                      f"{tuple(d['shape'])}, got {tuple(a.shape)}")
            out.append(np.ascontiguousarray(a))
        return out

    def last_error(self) -> str:
        ptr = self._fn["wasmforge_last_error"](self.store)
        return ctypes.string_at(self._base() + ptr).decode("utf-8", "replace")

    def profile(self, inputs, runs: int = 10) -> dict:
        """Time every kernel call of ``runs`` inferences, after one untimed warm-up: the host
        steps through the plan (``wasmforge_run_call``) and reads its own clock around each
        call. The once-calls (constants, such as the Winograd weights, which ``wasmforge_run``
        computes on its first run only) are left out, as a run leaves them. Returns the median
        time of a whole run (``wall_ms``, by ``run``, for comparison) and, per kernel, slowest
        first: its calls per inference and its milliseconds per inference (``ms``), summed
        over its calls."""
        import statistics
        import time

        ex = self.instance.exports(self.store)
        if "wasmforge_run_call" not in ex:
            raise ModelRuntimeError(f"{self.path}: the module exports no wasmforge_run_call "
                                    "(built before profiling existed): rebuild it")
        step = ex["wasmforge_run_call"]
        n = ex["wasmforge_num_calls"](self.store)
        once = ex["wasmforge_num_once_calls"](self.store) if "wasmforge_num_once_calls" in ex else 0
        names = [ctypes.string_at(self._base() + ex["wasmforge_call_kernel"](self.store, c)).decode()
                 for c in range(n)]
        self.run(inputs)
        wall, per_call = [], [0.0] * n
        for _ in range(runs):
            t = time.perf_counter()
            self.run(inputs)
            wall.append((time.perf_counter() - t) * 1e3)
            for c in range(once, n):
                t = time.perf_counter()
                rc = step(self.store, c)
                per_call[c] += time.perf_counter() - t
                if rc != 0:
                    raise ModelRuntimeError(f"{self.path}: call {c} ({names[c]}) returned {rc}: {self.last_error()}")
        kernels: dict[str, dict] = {}
        for name, t in zip(names[once:], per_call[once:]):
            k = kernels.setdefault(name, {"kernel": name, "calls": 0, "ms": 0.0})
            k["calls"] += 1
            k["ms"] += t * 1e3 / runs
        return {"runs": runs, "wall_ms": statistics.median(wall),
                "kernels": sorted(kernels.values(), key=lambda k: -k["ms"])}

    def run(self, inputs) -> list[np.ndarray]:
        """Run one inference; returns the outputs in the module's order."""
        arrays = self._check(inputs)
        self._check_workers()
        base = self._base()
        for a, (ptr, size) in zip(arrays, self._in):
            ctypes.memmove(base + ptr, a.ctypes.data, size)
        rc = self._fn["wasmforge_run"](self.store)
        if rc != 0:
            self._check_workers()
            raise ModelRuntimeError(f"{self.path}: wasmforge_run returned {rc}: {self.last_error()}")
        base = self._base()   # memory may have grown (and moved) during the run
        outs = []
        for d, (ptr, size) in zip(self.outputs, self._out):
            buf = (ctypes.c_char * size).from_address(base + ptr)
            outs.append(np.frombuffer(bytes(buf), dtype=d["dtype"]).reshape(d["shape"]))
        return outs
