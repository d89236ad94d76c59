"""Stage 5, link: runtime + executor + weights + kernels -> one WASI reactor module.

clang compiles the runtime (``wasmforge/runtime``) and the generated executor for
wasm32-wasi, assembles the weights (``.incbin``), and wasm-ld links them with the kernel
object as a *reactor*: the module exports ``_initialize``, which runs the constructors that
register every kernel, so no host ever calls ``__wasm_call_ctors`` by hand. Nothing but
WASI is imported. The model's metadata (inputs, outputs, source digest, build options) is
JSON in the custom section ``wasmforge.metadata``.

Two variants link from the same kernels and executor. The default is portable: its own
memory, one thread, any WASI host. The *threads* variant (``LinkParams(threads=True)``) is
compiled with atomics and bulk memory and imports a shared ``env.memory``; a host that
brings its own threads instantiates it once per thread (see the thread pool in
``runtime/wasmforge_ffi.c`` and ``wasmforge/engines/host.py``).
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

from wasmforge import abi
from wasmforge.engines import wasmbin
from wasmforge.errors import StageError
from wasmforge.store import digests, files

STAGE = "link"
CODE = (__file__, abi.__file__, wasmbin.__file__)   # what the stage runs: part of its key
RUNTIME_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime")
RUNTIME_SOURCES = ("wasmforge_runtime.c", "wasmforge_ffi.c", "wasmforge_plan.h", "wasmforge.h",
                   "wasmforge_component.c")
OBJECTS = ("runtime.o", "executor.o", "weights.o")   # what run() compiles into <work>/ (lib<model>.a's)
COMPONENT_OBJECT = "component.o"   # the portable module's canonical-ABI exports (wasmforge_component.c)


@dataclass(frozen=True)
class LinkParams:
    cflags: tuple[str, ...] = ("-O2", "-msimd128")
    stack_size: int = 4 << 20
    threads: bool = False        # the threads variant: shared imported memory, atomics
    max_memory: int = 4 << 30    # a shared memory must declare its maximum: all of wasm32's 4 GiB

    @property
    def all_cflags(self) -> tuple[str, ...]:
        return self.cflags + (("-matomics", "-mbulk-memory") if self.threads else ())

    @property
    def ldflags(self) -> tuple[str, ...]:
        if not self.threads:
            return ()
        return ("-Wl,--shared-memory", "-Wl,--import-memory", f"-Wl,--max-memory={self.max_memory}")

    @property
    def exports(self) -> tuple[str, ...]:
        return abi.exports(self.threads)


def metadata(model: str, io: dict, source: str, target: dict, tuning_log: list[str],
             threads_tuning_log: list[str], tvm_version: str, threads: bool) -> dict:
    """What the module says about itself, in its ``wasmforge.metadata`` custom section:
    inputs and outputs (``io.json`` of the import stage), the source model's digest, the
    build options and the ABI (``wasmforge/abi.py``)."""
    return {"wasmforge": 1, "model": model, "inputs": io["inputs"], "outputs": io["outputs"],
            "source": {"file": os.path.basename(source), "sha256": digests.file_sha256(source)},
            "build": {"target": target, "system_lib": True, "tuning_log": tuning_log,
                      **({"threads_tuning_log": threads_tuning_log} if threads and threads_tuning_log else {}),
                      "tvm": tvm_version},
            "abi": abi.metadata_abi(threads)}


def tvm_ffi_include() -> str:
    import importlib.util

    spec = importlib.util.find_spec("tvm_ffi")
    if spec is None or not spec.origin:
        raise StageError(STAGE, "tvm_ffi", "the apache-tvm-ffi package is not installed (run scripts/setup)")
    return os.path.join(os.path.dirname(spec.origin), "include")


def _run(argv: list[str], what: str, path: str, cwd: str | None = None) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-15:])
        raise StageError(STAGE, path, f"{what} failed (exit {res.returncode}):\n  $ {' '.join(argv)}\n{tail}")


def compile_argv(clang_path: str, p: LinkParams, src: str, out: str, defines: tuple[str, ...] = ()) -> list[str]:
    return [clang_path, "--target=wasm32-wasi", *p.all_cflags, *defines, "-I", RUNTIME_DIR,
            "-I", tvm_ffi_include(), "-c", src, "-o", out]


def link_argv(clang_path: str, ld_path: str, p: LinkParams, objects: list[str], out: str) -> list[str]:
    return [clang_path, "--target=wasm32-wasi", "-mexec-model=reactor", f"--ld-path={ld_path}",
            *objects, "-o", out, f"-Wl,-z,stack-size={p.stack_size}", "-Wl,--strip-debug", *p.ldflags,
            *(f"-Wl,--export={e}" for e in p.exports)]


def component_defines(model: str) -> tuple[str, ...]:
    """The model's name, which ``metadata()`` of the WIT interface returns, as a C string."""
    return (f"-DWF_MODEL_NAME={json.dumps(model)}",)


def runtime_defines(kernels_o: str) -> tuple[str, ...]:
    """Kernels that synchronize inside a parallel loop (TVMBackendParallelBarrier) need every
    task of a launch running at once: one task per thread, no dynamic task queue."""
    with open(kernels_o, "rb") as f:
        return ("-DWF_ONE_TASK_PER_THREAD",) if b"TVMBackendParallelBarrier" in f.read() else ()


def run(kernels_o: str, executor_dir: str, metadata: dict, p: LinkParams, clang, wasm_ld,
        out: str, work: str) -> dict:
    os.makedirs(work, exist_ok=True)
    objs = []
    defines = runtime_defines(kernels_o)
    for src, name in ((os.path.join(RUNTIME_DIR, "wasmforge_runtime.c"), "runtime.o"),
                      (os.path.join(executor_dir, "executor.c"), "executor.o")):
        o = os.path.join(work, name)
        _run(compile_argv(clang.path, p, src, o, defines), f"compiling {os.path.basename(src)}", src)
        objs.append(o)
    if not p.threads:   # the component model has no shared memory: the portable module only
        src, o = os.path.join(RUNTIME_DIR, "wasmforge_component.c"), os.path.join(work, COMPONENT_OBJECT)
        _run(compile_argv(clang.path, p, src, o, component_defines(metadata["model"])),
             "compiling wasmforge_component.c", src)
        objs.append(o)
    wo = os.path.join(work, "weights.o")
    # .incbin "weights.bin" is resolved against the working directory
    _run([clang.path, "--target=wasm32-wasi", "-c", "weights.S", "-o", wo], "assembling weights",
         os.path.join(executor_dir, "weights.S"), cwd=executor_dir)
    objs += [wo, kernels_o]
    tmp = os.path.join(work, "linked.wasm")
    _run(link_argv(clang.path, wasm_ld.path, p, objs, tmp), "linking", kernels_o)
    with open(tmp, "rb") as f:
        data = f.read()
    bad = [f"{i['module']}.{i['name']}" for i in wasmbin.imports(data) if not wasmbin.allowed_import(i, p.threads)]
    if bad:
        raise StageError(STAGE, kernels_o, f"the linked module imports non-WASI symbols: {bad}")
    data = wasmbin.add_custom_section(data, wasmbin.METADATA_SECTION, digests.canonical(metadata))
    files.write_bytes(out, data)
    os.unlink(tmp)
    return {"bytes": len(data), "features": wasmbin.target_features(data)}
