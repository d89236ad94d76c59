"""Run a wasmforge module from Python with the ``wasmtime`` package.

    from pipeline.host import WasmModel
    m = WasmModel("build/resnet50/resnet50.wasm")
    probs = m.run(x)                    # one input: an array; several: a dict by name
    m.inputs, m.outputs, m.metadata     # read from the "wasmforge.metadata" custom section

Inputs are checked against the metadata (shape and dtype) before the module is touched.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

from pipeline import wasmbin

WASI_MODULE = "wasi_snapshot_preview1"


class ModelInputError(ValueError):
    """An input does not match the module's declared shape or dtype."""


class ModelRuntimeError(RuntimeError):
    """The module reported a failure (its wasmforge_last_error message)."""


class WasmModel:
    def __init__(self, path: str, engine=None, aot_cache: str | None = None):
        """``aot_cache``: a folder of ours where the module compiled by wasmtime is kept
        (``Module.serialize``), keyed by the module's sha256 and the wasmtime version, so the
        next start skips compiling. Only ever point it at a folder this project writes:
        deserializing trusts the file. It needs the default engine: wasmtime accepts code
        compiled under another configuration (e.g. another Cranelift level) without a word,
        and a Config cannot be read back to put it in the key."""
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
        self.engine = engine or wasmtime.Engine()
        self.module = self._compile(wasmtime, data, aot_cache)
        self.store = wasmtime.Store(self.engine)
        wasi = wasmtime.WasiConfig()
        wasi.inherit_stdout()
        wasi.inherit_stderr()
        self.store.set_wasi(wasi)
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        self.instance = linker.instantiate(self.store, self.module)
        ex = self.instance.exports(self.store)
        self._memory = ex["memory"]
        self._fn = {name: ex[name] for name in (
            "wasmforge_run", "wasmforge_input_ptr", "wasmforge_input_size", "wasmforge_output_ptr",
            "wasmforge_output_size", "wasmforge_last_error")}
        ex["_initialize"](self.store)   # a reactor: runs the constructors once
        self._in = [self._region("input", i, d) for i, d in enumerate(self.inputs)]
        self._out = [self._region("output", i, d) for i, d in enumerate(self.outputs)]

    def _compile(self, wasmtime, data: bytes, aot_cache: str | None):
        if not aot_cache:
            return wasmtime.Module(self.engine, data)
        from importlib import metadata

        from pipeline import cache

        key = cache.digest({"module": cache.digest_bytes(data), "wasmtime": metadata.version("wasmtime")})
        cwasm = os.path.join(aot_cache, f"{key}.cwasm")
        if os.path.isfile(cwasm):
            try:
                return wasmtime.Module.deserialize_file(self.engine, cwasm)
            except wasmtime.WasmtimeError:
                os.unlink(cwasm)   # another engine configuration: compile again below
        module = wasmtime.Module(self.engine, data)
        cache.write_bytes(cwasm, module.serialize())
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
        return ctypes.addressof(self._memory.data_ptr(self.store).contents)

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

    def run(self, inputs) -> list[np.ndarray]:
        """Run one inference; returns the outputs in the module's order."""
        arrays = self._check(inputs)
        base = self._base()
        for a, (ptr, size) in zip(arrays, self._in):
            ctypes.memmove(base + ptr, a.ctypes.data, size)
        rc = self._fn["wasmforge_run"](self.store)
        if rc != 0:
            raise ModelRuntimeError(f"{self.path}: wasmforge_run returned {rc}: {self.last_error()}")
        base = self._base()   # memory may have grown (and moved) during the run
        outs = []
        for d, (ptr, size) in zip(self.outputs, self._out):
            buf = (ctypes.c_char * size).from_address(base + ptr)
            outs.append(np.frombuffer(bytes(buf), dtype=d["dtype"]).reshape(d["shape"]))
        return outs
