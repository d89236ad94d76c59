"""Stage 6, opt: ``wasm-opt`` over the linked module, with exactly the features it uses,
then our own rewrites for the engines.

The features come from the module's own ``target_features`` section (written by wasm-ld),
mapped to binaryen's ``--enable-*`` flags; a feature binaryen cannot name is an error rather
than a silently broken module. Where the code outweighs ``MERGE_ABOVE_CODE_SHARE`` of the
data, similar kernels are merged. After wasm-opt, each ``v128.load32_splat`` becomes
``f32.load`` + ``f32x4.splat``, which wasmtime compiles to fewer instructions
(``engines/wasmcode.py``). The metadata section gains an ``opt`` entry.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from wasmforge.engines import wasmbin, wasmcode
from wasmforge.errors import StageError
from wasmforge.store import digests, files

STAGE = "opt"
CODE = (__file__, wasmbin.__file__, wasmcode.__file__)   # what the stage runs: part of its key

# LLVM feature name -> binaryen flag (None: implied by another flag, nothing to enable)
FEATURE_FLAGS = {
    "simd128": "--enable-simd",
    "relaxed-simd": "--enable-relaxed-simd",
    "bulk-memory": "--enable-bulk-memory",
    "bulk-memory-opt": None,            # a subset of bulk-memory (LLVM 20+)
    "call-indirect-overlong": None,     # encoding detail of reference-types (LLVM 20+)
    "nontrapping-fptoint": "--enable-nontrapping-float-to-int",
    "sign-ext": "--enable-sign-ext",
    "mutable-globals": "--enable-mutable-globals",
    "multivalue": "--enable-multivalue",
    "reference-types": "--enable-reference-types",
    "atomics": "--enable-threads",
    "exception-handling": "--enable-exception-handling",
    "tail-call": "--enable-tail-call",
    "extended-const": "--enable-extended-const",
}


# binaryen's --merge-similar-functions turns kernels that differ only in constants (their
# shapes) into one function taking them as arguments. It shrinks DenseNet-121's code from 1.5
# to 0.3 MB, and it may cost a few percent of speed (ShuffleNet: 1.02x its time, alternated
# in one process on a Zen 4 EPYC). So it runs only where the code weighs more than this share
# of the data (the weights): a module should carry little more than its weights.
MERGE_ABOVE_CODE_SHARE = 0.03


def code_share(data: bytes) -> float:
    """The code section's bytes over the data section's (0 without data)."""
    size = {sid: len(payload) for sid, _, payload in wasmbin.sections(data)
            if sid in (wasmbin.CODE_SECTION, wasmbin.DATA_SECTION)}
    weights = size.get(wasmbin.DATA_SECTION)
    return size.get(wasmbin.CODE_SECTION, 0) / weights if weights else 0.0


@dataclass(frozen=True)
class OptParams:
    level: str = "-O3"
    extra: tuple[str, ...] = ()
    split_load_splats: bool = True


def feature_flags(features: list[str], path: str) -> list[str]:
    unknown = sorted(f for f in features if f not in FEATURE_FLAGS)
    if unknown:
        raise StageError(STAGE, path, f"the module uses wasm features wasm-opt cannot be told about: {unknown}")
    return sorted({FEATURE_FLAGS[f] for f in features if FEATURE_FLAGS[f]})


def relaxed_simd_hint(flags: list[str], stderr: str, version: str) -> str:
    """Binaryen 108 (Debian 12's) predates relaxed SIMD's final opcodes: it fails to parse
    the ``f32x4.relaxed_madd`` LLVM emits for ``+relaxed-simd``. Say so, and what to do."""
    if "--enable-relaxed-simd" not in flags or "SIMD prefix" not in stderr:
        return ""
    return (f"\n  {version} cannot read relaxed SIMD's final encoding: install a newer binaryen "
            "(WASMFORGE_WASM_OPT=/path/to/wasm-opt), or declare the model without '+relaxed-simd' in mattr "
            "(it measured no faster on ResNet-50 here: BENCHMARKS.md)")


def run(linked: str, p: OptParams, wasm_opt, out: str) -> dict:
    with open(linked, "rb") as f:
        data = f.read()
    meta = wasmbin.metadata(data)
    flags = feature_flags(wasmbin.target_features(data), linked)
    with files.atomic_path(out) as tmp:
        extra = list(p.extra)
        _wasm_opt(wasm_opt, p.level, flags + extra, linked, tmp)
        with open(tmp, "rb") as f:
            opt = f.read()
        share = code_share(opt)
        if share > MERGE_ABOVE_CODE_SHARE and "--merge-similar-functions" not in extra:
            extra.append("--merge-similar-functions")
            _wasm_opt(wasm_opt, p.level, flags + extra, linked, tmp)
            with open(tmp, "rb") as f:
                opt = f.read()
        opt, splats = split_load_splats(opt) if p.split_load_splats else (opt, "off")
        opt = wasmbin.without_custom_section(opt, wasmbin.METADATA_SECTION)
        meta["opt"] = {"level": p.level, "flags": flags + extra, "wasm_opt": wasm_opt.version,
                       "load_splats_split": splats}
        opt = wasmbin.add_custom_section(opt, wasmbin.METADATA_SECTION, digests.canonical(meta))
        with open(tmp, "wb") as f:
            f.write(opt)
    return {"bytes_before": len(data), "bytes_after": os.path.getsize(out), "flags": flags + extra,
            "code_share": round(share, 4), "load_splats_split": splats}


def split_load_splats(data: bytes) -> tuple[bytes, int | str]:
    """``wasmcode.split_load_splats``, or the module unchanged with the reason it was left
    (code the walker does not know): a module that misses a speed-up still runs."""
    try:
        return wasmcode.split_load_splats(data)
    except wasmbin.WasmFormatError as e:
        return data, f"left: {e}"


def _wasm_opt(wasm_opt, level: str, flags: list[str], linked: str, out: str) -> None:
    argv = [wasm_opt.path, level, *flags, linked, "-o", out]
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        tail = "\n".join(res.stderr.strip().splitlines()[-15:])
        raise StageError(STAGE, linked, f"wasm-opt failed (exit {res.returncode}):\n  $ {' '.join(argv)}\n{tail}"
                         + relaxed_simd_hint(flags, res.stderr, wasm_opt.version))
