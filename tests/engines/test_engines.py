"""The same published module in three independent engines: wasmtime (Cranelift, through
wasmforge/engines/host.py), Node's node:wasi (V8, wasmforge/engines/run_node.mjs) and pywasm (a pure-Python
interpreter, wasmforge/engines/run_pywasm.py).

The outputs must be bit-identical, not merely close: WebAssembly's float arithmetic,
SIMD128 included, is deterministic IEEE-754 (only NaN bit patterns may differ, and the
module uses no relaxed-SIMD), so any difference is an engine bug or a module that relies
on something outside the spec."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from conftest import ROOT

from wasmforge.engines.host import WasmModel
from wasmforge.engines.run_pywasm import PywasmModel

RUN_NODE = f"{ROOT}/wasmforge/engines/run_node.mjs"


@pytest.fixture(scope="module")
def module(tiny_build):
    return tiny_build.path("tiny", "tiny.wasm")


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(11).standard_normal((1, 3, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def wasmtime_out(module, x):
    return WasmModel(module).run(x)[0]


def node(*args, timeout=120):
    assert shutil.which("node"), "node is not installed (scripts/setup installs it)"
    return subprocess.run(["node", "--no-warnings", RUN_NODE, *args], capture_output=True, text=True,
                          timeout=timeout)


def test_node_wasi_matches_wasmtime(module, x, wasmtime_out, tmp_path):
    x.tofile(tmp_path / "in.bin")
    res = node(module, str(tmp_path / "in.bin"), str(tmp_path / "out.bin"))
    assert res.returncode == 0, res.stderr
    got = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(wasmtime_out.shape)
    np.testing.assert_allclose(got, wasmtime_out, rtol=0, atol=0)


def test_node_runner_reports_a_wrong_input(module, tmp_path):
    (tmp_path / "short.bin").write_bytes(b"\0" * 12)
    res = node(module, str(tmp_path / "short.bin"), str(tmp_path / "out.bin"))
    assert res.returncode == 1
    assert "12 bytes, the module's input 0 takes 768" in res.stderr
    assert not (tmp_path / "out.bin").exists()


def test_pywasm_matches_wasmtime(module, x, wasmtime_out):
    m = PywasmModel(module)
    got = m.run([x])[0]
    np.testing.assert_allclose(got, wasmtime_out, rtol=0, atol=0)
    # a second run on the same instance (state left by the first must not leak)
    np.testing.assert_allclose(m.run([x])[0], wasmtime_out, rtol=0, atol=0)
