"""Run a published wasmforge module in pywasm, a pure-Python WebAssembly interpreter.

Why a second engine: wasmtime (Cranelift) and Node (V8) are both JIT compilers; pywasm is
an independent implementation of the spec (its own decoder, validator, interpreter,
SIMD128 and WASI preview1 in Python), so agreement with it checks that the module relies
on nothing engine-specific. It interprets every instruction in Python (0.1 s for the tiny
test model's one inference), orders of magnitude too slow for real models: a conformance
check, not a host.

    python -m wasmforge.engines.run_pywasm MODULE.wasm INPUT.bin OUTPUT.bin     # input/output 0, raw bytes
    run(path, [array, ...]) -> [array, ...]                            # from Python

Needs ``pywasm==2.2.3`` (PyPI, pure Python, Python >= 3.11).
"""
from __future__ import annotations

import contextlib
import io
import sys

import numpy as np

from wasmforge.engines import wasmbin


class _NoFd:
    """Stands in for sys.std* while pywasm's Preview1 is built: it asks for their fileno()
    (which fails under pytest's capture, or with stdin closed); the module's stdio goes to
    in-memory pipes instead, so the stand-in's fd is never used."""

    def __init__(self, name: str):
        self.name = name

    def fileno(self) -> int:
        return -1


@contextlib.contextmanager
def _stdio_stand_ins():
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = _NoFd("<stdin>"), _NoFd("<stdout>"), _NoFd("<stderr>")
    try:
        yield
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved


class PywasmModel:
    """Instantiate with a WASI preview1 host (no preopens; stdin empty, stdout and stderr
    kept in ``self.stdio``), run ``_initialize`` once."""

    def __init__(self, path: str):
        import pywasm

        self.path = str(path)
        with open(self.path, "rb") as f:
            self.metadata = wasmbin.metadata(f.read())
        self.rt = pywasm.core.Runtime()
        with _stdio_stand_ins():
            wasi = pywasm.wasi.Preview1([self.path], {}, {})
        self.stdio = [io.BytesIO(), io.BytesIO(), io.BytesIO()]
        for f, pipe in zip(wasi.fd[:3], self.stdio):
            f.pipe = pipe
        wasi.bind(self.rt)
        self.inst = self.rt.instance_from_file(self.path)
        self.call("_initialize")   # a reactor: the constructors register the kernels
        self.mem = self.rt.exported_memory(self.inst, "memory")

    def call(self, name: str, *args: int):
        rets = self.rt.invocate(self.inst, name, list(args))
        return rets[0] if rets else None

    def last_error(self) -> str:
        ptr = self.call("wasmforge_last_error")
        data = self.mem.data   # pywasm's linear memory is a bytearray that memory.grow extends
        return bytes(data[ptr:data.index(0, ptr)]).decode("utf-8", "replace")

    def run_bytes(self, inputs: list[bytes]) -> list[bytes]:
        for i, b in enumerate(inputs):
            ptr, size = self.call("wasmforge_input_ptr", i), self.call("wasmforge_input_size", i)
            if len(b) != size:
                raise ValueError(f"{self.path}: input {i} takes {size} bytes, got {len(b)}")
            self.mem.data[ptr:ptr + size] = b
        rc = self.call("wasmforge_run")
        if rc != 0:
            raise RuntimeError(f"{self.path}: wasmforge_run returned {rc}: {self.last_error()}")
        outs = []
        for i in range(len(self.metadata["outputs"])):
            ptr, size = self.call("wasmforge_output_ptr", i), self.call("wasmforge_output_size", i)
            outs.append(bytes(self.mem.data[ptr:ptr + size]))
        return outs

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Arrays in the module's input order (dtype and shape as its metadata says)."""
        outs = self.run_bytes([np.ascontiguousarray(a).tobytes() for a in arrays])
        return [np.frombuffer(b, dtype=d["dtype"]).reshape(d["shape"])
                for b, d in zip(outs, self.metadata["outputs"])]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m wasmforge.engines.run_pywasm MODULE.wasm INPUT.bin OUTPUT.bin", file=sys.stderr)
        return 2
    try:
        m = PywasmModel(argv[0])
        with open(argv[1], "rb") as f:
            out = m.run_bytes([f.read()])[0]
    except Exception as e:   # a trap in pywasm is a plain Exception
        print(f"run_pywasm: {e}", file=sys.stderr)
        return 1
    with open(argv[2], "wb") as f:
        f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
