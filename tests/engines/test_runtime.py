"""The C runtime (wasmforge/runtime/wasmforge_runtime.c): its error path and its reactor
contract, on real modules linked from a real tiny model."""
from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
import wasmtime

from wasmforge import toolchain
from wasmforge.engines.host import ModelRuntimeError, WasmModel
from wasmforge.stages import link


@pytest.fixture(scope="module")
def built(tiny_build):
    return tiny_build


def relink(built, tmp_path, edit):
    """Copy the executor folder, apply ``edit`` to executor.c, link, return the module."""
    ex = tmp_path / "executor"
    shutil.copytree(built.path("tiny", "executor"), ex, copy_function=shutil.copyfile)   # outputs are read-only
    src = (ex / "executor.c").read_text()
    new = edit(src)
    assert new != src
    (ex / "executor.c").write_text(new)
    out = tmp_path / "tampered.wasm"
    meta = {"model": "tiny", "inputs": [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}],
            "outputs": [{"name": "y", "shape": [1, 10], "dtype": "float32"}]}
    link.run(built.path("tiny", "emit", "kernels.o"), str(ex), meta, link.LinkParams(),
             toolchain.clang(), toolchain.wasm_ld(), str(out), str(tmp_path / "obj"))
    return str(out)


def test_kernel_failure_is_reported_with_the_kernels_own_message(built, tmp_path):
    # give the first tensor of the plan (the input x) a wrong extent: the kernel's own
    # argument check fails and reports through TVMFFIErrorSetRaisedFromCStrParts
    def edit(src):
        return re.sub(r"(static const int64_t shapes\[\d+\] = \{\n  )1LL, 3LL", r"\g<1>1LL, 5LL", src, count=1)

    m = WasmModel(relink(built, tmp_path, edit))
    with pytest.raises(ModelRuntimeError) as e:
        m.run(np.zeros((1, 3, 8, 8), np.float32))
    msg = str(e.value)
    assert re.search(r"kernel '\w+' \(call 1 of \d+\) failed: \w*Error: ", msg), msg
    assert "wasmforge_run returned" in msg


def test_unregistered_kernel_is_named(built, tmp_path):
    m = WasmModel(relink(built, tmp_path, lambda s: s.replace('"max_pool2d"', '"no_such_kernel"', 1)))
    with pytest.raises(ModelRuntimeError, match="kernel 'no_such_kernel' is not registered"):
        m.run(np.zeros((1, 3, 8, 8), np.float32))


def test_reactor_initialize_registers_the_kernels(built):
    """Without _initialize the constructors never ran: the runtime says so instead of
    crashing. With it (what every host does), the model runs."""
    path = built.path("tiny", "link", "tiny.linked.wasm")
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    inst = linker.instantiate(store, wasmtime.Module.from_file(engine, path))
    ex = inst.exports(store)
    assert ex["wasmforge_run"](store) != 0
    err_ptr = ex["wasmforge_last_error"](store)
    raw = ex["memory"].read(store, err_ptr, err_ptr + 300)
    assert b"is not registered" in raw and b"was _initialize called" in raw
    ex["_initialize"](store)
    assert ex["wasmforge_run"](store) == 0
    assert ex["wasmforge_input_ptr"](store, 1) == 0 and ex["wasmforge_input_size"](store, 1) == 0


def test_the_runtime_compiles_warning_free_as_one_translation_unit(tmp_path):
    import subprocess

    obj = tmp_path / "rt.o"
    argv = link.compile_argv(toolchain.clang().path, link.LinkParams(),
                             os.path.join(link.RUNTIME_DIR, "wasmforge_runtime.c"), str(obj))
    res = subprocess.run(argv + ["-Wall", "-Wextra", "-Werror"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert obj.read_bytes()[:4] == b"\0asm"
