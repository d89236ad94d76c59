"""Stage 3, emit: the kernels of the lowered module -> one wasm32 relocatable object.

The object holds every kernel (tvm-ffi packed ABI) and a ``__tvm_module_startup``
constructor that registers them with ``TVMFFIEnvModRegisterSystemLibSymbol``.
"""
from __future__ import annotations

from wasmforge.errors import StageError
from wasmforge.stages import relax_build as build_stage
from wasmforge.store import files

STAGE = "emit"
CODE = (__file__, build_stage.__file__)   # what the stage runs: part of its key


def run(lowered_json: str, p: build_stage.BuildParams, out: str) -> dict:
    import tvm
    from tvm import tirx

    with open(lowered_json) as f:
        mod = tvm.ir.load_json(f.read())
    prims = {gv: fn for gv, fn in mod.functions.items() if isinstance(fn, tirx.PrimFunc)}
    if not prims:
        raise StageError(STAGE, lowered_json, "the lowered module has no kernels")
    tir_mod = tvm.IRModule(prims, attrs=mod.attrs).with_attr("system_lib_prefix", "")
    tgt = build_stage.target(p)
    lib = tvm.tirx.build(tir_mod, target=tgt)
    with files.atomic_path(out) as tmp:
        lib.write_to_file(tmp)
    with open(out, "rb") as f:
        if f.read(4) != b"\0asm":
            raise StageError(STAGE, out, "TVM did not write a wasm object file")
    return {"kernels": len(prims)}
