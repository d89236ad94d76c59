"""Reference outputs: ONNX's test-data folders and .npz files, read by name; a model that
onnxruntime cannot run validated against them alone; and the clear errors without them."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import make_tiny_onnx

from wasmforge import conformance, references


def onnx_case(name: str) -> str:
    """A model of the onnx wheel's backend test data (model.onnx + test_data_set_*/)."""
    return next(c.dir for c in conformance.cases() if c.name == name)


def copy_case(name: str, dest) -> str:
    shutil.copytree(onnx_case(name), dest)
    return str(dest)


def test_a_test_data_folder_reads_by_position_and_an_npz_by_name(tmp_path):
    d = onnx_case("test_conv2d")
    (s,) = references.expand(d)
    assert s.endswith("test_data_set_0") and references.expand(s) == [s]
    ref = references.load(s, ["x"], ["y"])   # the graph's names are 0 and 3: by position here
    assert ref.inputs["x"].ndim == 4 and set(ref.outputs) == {"y"}
    np.savez(tmp_path / "r.npz", x=ref.inputs["x"], y=ref.outputs["y"])
    again = references.load(str(tmp_path / "r.npz"), ["x"], ["y"])
    assert np.array_equal(again.outputs["y"], ref.outputs["y"])


@pytest.mark.parametrize("arrays, problem", [
    ({"x": np.zeros(2), "w": np.zeros(2)}, "arrays ['w'] name no input or output"),
    ({"y": np.zeros(2)}, "no value for the model's inputs ['x']"),
    ({"x": np.zeros(2)}, "no reference output"),
])
def test_an_npz_that_does_not_fit_the_model_is_named(tmp_path, arrays, problem):
    np.savez(tmp_path / "r.npz", **arrays)
    with pytest.raises(references.ReferenceError) as e:
        references.load(str(tmp_path / "r.npz"), ["x"], ["y"])
    assert problem in str(e.value) and "r.npz" in str(e.value)


def test_a_folder_without_reference_files_is_refused(tmp_path):
    with pytest.raises(references.ReferenceError, match="holds neither"):
        references.expand(str(tmp_path))
    (tmp_path / "input_0.pb").write_bytes(b"\xff\xff not a tensor")
    (tmp_path / "output_0.pb").write_bytes(b"")
    with pytest.raises(references.ReferenceError, match="input_0.pb: not a serialized ONNX tensor"):
        references.load(str(tmp_path), ["x"], ["y"])


def test_a_model_onnxruntime_cannot_run_is_validated_against_its_references(doit, tmp_path):
    """AveragePool of opset 1: onnxruntime 1.2x no longer implements it."""
    copy_case("test_avgpool2d", tmp_path / "decls" / "pool")
    doit.declare("pool.toml", 'name = "pool"\nonnx = "pool/model.onnx"\nreference = "pool"\n')
    doit("validate:pool")
    with open(doit.path("pool", "report.json")) as f:
        report = json.load(f)
    assert report["passed"] is True and report["onnxruntime"]["ran"] is False
    assert "AveragePool" in report["onnxruntime"]["problem"]
    assert [r["reference"].endswith("test_data_set_0") for r in report["inputs"]] == [True]
    assert os.path.isfile(doit.path("pool", "pool.wasm"))

    # a reference the module does not match fails validation, naming the reference
    ref = references.load(str(tmp_path / "decls" / "pool" / "test_data_set_0"), ["0"], ["1"])
    np.savez(tmp_path / "decls" / "wrong.npz", **{"0": ref.inputs["0"], "1": ref.outputs["1"] * 1.01})
    doit.declare("pool.toml", 'name = "pool"\nonnx = "pool/model.onnx"\nreference = "wrong.npz"\n')
    res = doit("validate:pool", check=False)
    assert res.returncode != 0 and "validation failed (reference" in res.stderr and "wrong.npz" in res.stderr
    assert not os.path.exists(doit.path("pool", "pool.wasm"))

    # without references there is nothing to check the module against: say so
    doit.declare("pool.toml", 'name = "pool"\nonnx = "pool/model.onnx"\n')
    res = doit("validate:pool", check=False)
    text = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback" not in text
    assert "onnxruntime cannot run the model" in text and "declare them (reference = " in text


def test_references_are_checked_beside_onnxruntime(doit, tmp_path):
    """A model onnxruntime runs: the seeded inputs against it, and the reference too."""
    import onnxruntime as ort

    path = make_tiny_onnx(tmp_path / "decls" / "tiny.onnx")
    x = np.random.default_rng(7).standard_normal((1, 3, 8, 8)).astype(np.float32)
    (y,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.savez(tmp_path / "decls" / "tiny_ref.npz", x=x, y=y)
    doit.declare("tiny.toml", 'name = "tiny"\nonnx = "tiny.onnx"\nreference = ["tiny_ref.npz"]\nseeds = [1]\n')
    doit("validate:tiny")
    with open(doit.path("tiny", "report.json")) as f:
        report = json.load(f)
    assert report["passed"] and report["onnxruntime"] == {"ran": True}
    assert [("seed" in r, "reference" in r) for r in report["inputs"]] == [(True, False), (False, True)]
