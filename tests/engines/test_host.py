"""Hosts: the Python API and the wasmtime command-line tool, on a real tiny module."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from wasmforge.engines import wasmbin
from wasmforge.engines.host import WasmModel


@pytest.fixture(scope="module")
def module(tiny_build):
    return tiny_build.path("tiny", "tiny.wasm")


def wasmtime_cli():
    return os.path.join(os.path.dirname(sys.executable), "wasmtime")


def test_readme_cli_example_runs_the_reactor(module):
    """README: `wasmtime run --invoke wasmforge_run build/<model>/<model>.wasm` prints 0.
    A 0 proves the CLI ran _initialize (without it no kernel is registered and run fails)."""
    res = subprocess.run([wasmtime_cli(), "run", "--invoke", "wasmforge_run", module],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0"


def test_metadata_is_readable_without_instantiating(module):
    meta = wasmbin.metadata(open(module, "rb").read())
    assert meta["model"] == "tiny" and meta["abi"]["run"] == "wasmforge_run"


def test_host_class_runs_repeatedly_with_stable_results(module):
    m = WasmModel(module)
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    a = m.run(x)[0]
    b = m.run({"x": x})[0]
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, 10) and abs(float(a.sum()) - 1.0) < 1e-5
    c = m.run(np.zeros_like(x))[0]
    assert not np.array_equal(a, c)


def test_host_refuses_a_module_that_is_not_wasmforges(tmp_path):
    p = tmp_path / "plain.wasm"
    p.write_bytes(wasmbin.MAGIC)
    with pytest.raises(ValueError, match="plain.wasm: no 'wasmforge.metadata' custom section"):
        WasmModel(str(p))


def test_aot_cache_skips_compiling_and_gives_the_same_results(module, tmp_path):
    x = np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = WasmModel(module).run(x)[0]
    cold = WasmModel(module, aot_cache=str(tmp_path))
    (cwasm,) = os.listdir(tmp_path)
    assert cwasm.endswith(".cwasm")
    warm = WasmModel(module, aot_cache=str(tmp_path))
    for m in (cold, warm):
        np.testing.assert_array_equal(m.run(x)[0], want)
    # a custom engine could silently reuse code compiled under another configuration
    import wasmtime

    with pytest.raises(ValueError, match="default engine only"):
        WasmModel(module, engine=wasmtime.Engine(), aot_cache=str(tmp_path))


def test_profile_times_every_kernel_call_of_the_plan_and_leaves_results_alone(module, tiny_build):
    import json
    from collections import Counter

    x = np.random.default_rng(7).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = WasmModel(module).run(x)[0]
    m = WasmModel(module)
    prof = m.profile(x, runs=5)
    plan = json.load(open(tiny_build.path("tiny", "executor", "plan.json")))
    # a run's calls: the once-calls (constants) are made on the first run only, and left out
    assert {k["kernel"]: k["calls"] for k in prof["kernels"]} == Counter(c["kernel"] for c in
                                                                        plan["calls"][plan["once_calls"]:])
    ms = [k["ms"] for k in prof["kernels"]]
    assert ms == sorted(ms, reverse=True) and ms[0] > 0 and all(t >= 0 for t in ms)
    assert prof["runs"] == 5 and prof["wall_ms"] > 0
    np.testing.assert_array_equal(m.run(x)[0], want)       # profiling changes no result


def test_bench_cli_prints_a_profile(module):
    res = subprocess.run([sys.executable, "-m", "wasmforge.bench", module, "--profile", "--runs", "3"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["ms/run", "share", "calls"]
    assert any("fused_conv2d" in line for line in lines[1:-1])
    assert "in kernels; median run" in lines[-1]
