"""The model as a WASI 0.2 component (``doit component:<model>``), called through wasmtime's
component API as any component host calls it."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from wasmforge import toolchain
from wasmforge.component import DATATYPES, NUMPY_DTYPES
from wasmforge.errors import StageError
from wasmforge.stages import component


def test_every_onnx_dtype_the_importer_gives_has_a_wit_datatype():
    assert set(NUMPY_DTYPES.values()) == set(DATATYPES)
    for name in DATATYPES:
        np.dtype(name)   # each key is a numpy dtype name


def test_expected_metadata_is_the_modules_io_in_wit_terms():
    io = {"inputs": [{"name": "ids", "dtype": "int64", "shape": [1, 128]}],
          "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 256]}]}
    assert component.expected_metadata("enc", io) == {
        "name": "enc", "inputs": [{"name": "ids", "datatype": "int64", "shape": [1, 128]}],
        "outputs": [{"name": "y", "datatype": "fp32", "shape": [1, 256]}]}


def test_a_module_that_imports_wasi_is_refused_with_its_imports_named(tmp_path):
    wat = tmp_path / "m.wat"
    wat.write_text('(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'
                   ' (memory (export "memory") 1))')
    core = tmp_path / "m.wasm"
    subprocess.run([toolchain.wasm_tools().path, "parse", str(wat), "-o", str(core)], check=True)
    with pytest.raises(StageError, match=r"wasi_snapshot_preview1\.fd_write.*adapter"):
        component.make(str(core), toolchain.wasm_tools(), str(tmp_path / "c.wasm"), str(tmp_path))


@pytest.fixture(scope="module")
def tiny_component(tiny_build):
    tiny_build("component:tiny")
    return tiny_build


@pytest.mark.slow
def test_component_of_the_validated_module_is_checked_and_published(tiny_component):
    d = tiny_component
    report = json.load(open(d.path("tiny", "report.component.json")))
    assert report["passed"] is True and report["problems"] == []
    assert report["interface"] == "wasmforge:model/inference@0.1.0"
    # wraps the published, validated module: the same bytes
    validated = json.load(open(d.path("tiny", "report.json")))
    assert report["core_module_sha256"] == validated["module_sha256"]
    for case in report["inputs"]:
        assert all(case["identical_to_module"].values())
        assert all(v["passed"] for v in case["onnxruntime"].values())
    # the artifact is a component, not a core module (layer 1 in the preamble)
    with open(d.path("tiny", "tiny.component.wasm"), "rb") as f:
        head = f.read(8)
    assert head[:4] == b"\0asm" and head[6:8] == b"\x01\x00"
    assert "-- component:tiny" in d("component:tiny").stdout   # up to date: doit skips it
    wit = subprocess.run([toolchain.wasm_tools().path, "component", "wit", d.path("tiny", "tiny.component.wasm")],
                         capture_output=True, text=True, check=True).stdout
    assert "export wasmforge:model/inference@0.1.0;" in wit


@pytest.mark.slow
def test_the_portable_module_exports_the_component_abi_and_the_threads_variant_does_not(tiny_component):
    import wasmtime

    from wasmforge import abi

    def exports(name):
        return {e.name for e in wasmtime.Module.from_file(wasmtime.Engine(), tiny_component.path("tiny", name)).exports}

    assert set(abi.COMPONENT_EXPORTS) <= exports("tiny.wasm")
    assert not set(abi.COMPONENT_EXPORTS) & exports("tiny.threads.wasm")


@pytest.mark.slow
def test_component_agrees_with_onnxruntime_and_names_every_bad_input(tiny_component):
    import onnxruntime as ort

    from wasmforge.component.host import ComponentError, ComponentModel

    m = ComponentModel(tiny_component.path("tiny", "tiny.component.wasm"))
    assert m.metadata == {"name": "tiny", "inputs": [{"name": "x", "datatype": "fp32", "shape": [1, 3, 8, 8]}],
                          "outputs": [{"name": "y", "datatype": "fp32", "shape": [1, 10]}]}
    sess = ort.InferenceSession(os.path.join(tiny_component.decls, "tiny.onnx"))
    rng = np.random.default_rng(7)
    for _ in range(3):
        x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
        got, = m.run({"x": x})
        want, = sess.run(None, {"x": x})
        assert got.shape == (1, 10) and np.abs(got - want).max() <= 1e-5
    good = {"name": "x", "datatype": "fp32", "shape": [1, 3, 8, 8], "data": x.tobytes()}
    bad = {
        "input 'x': shape [1, 3, 8, 9], the model takes [1, 3, 8, 8]": [{**good, "shape": [1, 3, 8, 9]}],
        "input 'x': datatype int64, the model takes fp32": [{**good, "datatype": "int64"}],
        "no input named 'q'": [{**good, "name": "q"}],
        "input 'x': its data's length does not match": [{**good, "data": b"\0" * 5}],
        "missing input 'x'": [],
        "input 'x' is given twice": [good, good],
    }
    for message, tensors in bad.items():
        with pytest.raises(ComponentError, match=message.replace("[", r"\[").replace("]", r"\]")):
            m.infer(tensors)
    # the instance survives every refusal, and many calls
    for _ in range(200):
        out, = m.infer([good])
    assert np.array_equal(np.frombuffer(out["data"], np.float32).reshape(1, 10), got)
