"""The threads variant (<model>.threads.wasm): one module, run on 1..N host threads that
share its memory, giving the same bytes as the portable module."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import wasmtime

from wasmforge.engines import wasmbin
from wasmforge.engines.host import (
    WasmModel,
    shared_memory,
    shared_memory_import,
    threads_engine,
)


@pytest.fixture(scope="module")
def modules(tiny_build):
    return tiny_build.path("tiny", "tiny.wasm"), tiny_build.path("tiny", "tiny.threads.wasm")


def workers_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("wasmforge-worker")]


def test_threads_variant_imports_only_its_shared_memory(modules):
    portable, mt = modules
    assert not shared_memory_import(wasmbin.imports(open(portable, "rb").read()))
    data = open(mt, "rb").read()
    assert [(i["module"], i["name"], i["kind"]) for i in wasmbin.imports(data)] == [("env", "memory", "memory")]
    assert "atomics" in wasmbin.target_features(data)
    assert {"wasmforge_worker", "wasmforge_threads_prepare", "wasmforge_threads_stop"} <= \
        {e["name"] for e in wasmbin.exports(data)}
    assert "threads" in wasmbin.metadata(data)["abi"]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_any_thread_count_gives_the_portable_modules_bytes(modules, threads):
    portable, mt = modules
    x = np.random.default_rng(threads).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = WasmModel(portable).run(x)[0]
    with WasmModel(mt, threads=threads) as m:
        assert len(workers_alive()) == threads - 1
        for _ in range(3):   # the workers stay attached between runs
            np.testing.assert_array_equal(m.run(x)[0], want)
    assert workers_alive() == []   # close() stopped and joined them


def test_portable_module_refuses_threads_by_name(modules):
    portable, _ = modules
    with pytest.raises(ValueError, match=r"tiny\.wasm: this module has no threads.*threads\.wasm"):
        WasmModel(portable, threads=2)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        WasmModel(modules[1], threads=0)


def test_aot_cache_serves_the_threads_variant(modules, tmp_path):
    _, mt = modules
    x = np.ones((1, 3, 8, 8), np.float32)
    with WasmModel(mt, threads=2, aot_cache=str(tmp_path)) as a:
        want = a.run(x)[0]
    assert len(list(tmp_path.glob("*.cwasm"))) == 1
    with WasmModel(mt, threads=2, aot_cache=str(tmp_path)) as b:   # from the .cwasm
        np.testing.assert_array_equal(b.run(x)[0], want)


def test_wasmtime_py_issue_318_is_still_open():
    """wasmforge/engines/host.py works around wasmtime-py's SharedMemory._as_extern (upstream issue
    318). When this test fails, upstream fixed it: delete the workaround in
    host.shared_memory and this test."""
    engine = threads_engine()
    limits = wasmtime.Limits(1, 2)
    store = wasmtime.Store(engine)
    with pytest.raises(TypeError, match="LP_LP_wasmtime_sharedmemory"):
        wasmtime.Linker(engine).define(store, "env", "memory",
                                       wasmtime.SharedMemory(engine, wasmtime.MemoryType(limits, shared=True)))
    wasmtime.Linker(engine).define(store, "env", "memory", shared_memory(engine, limits))   # ours works


def test_bench_cli_times_a_module_on_threads(modules):
    import subprocess
    import sys

    from conftest import ROOT

    _, mt = modules
    res = subprocess.run([sys.executable, "-m", "wasmforge.bench", mt, "--threads", "2", "--runs", "3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "2 thread(s): median " in res.stdout and len(res.stdout.split("runs ")[1].split()) == 3
