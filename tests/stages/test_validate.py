"""Validation inputs that make sense for the graph, and NaN agreement: unit checks of the
validate stage's rules, and two odd models through the real pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wasmforge.dsl import Tolerance
from wasmforge.stages.validate import compare, index_bounds, seeded_inputs


def embedding_onnx(path, rows=4):
    """ids[1, 16] int64 -> Gather from a rows x 8 table -> Sqrt of (x - 0.5): some NaN."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    table = np.random.default_rng(0).random((rows, 8)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], axis=0),
             helper.make_node("Sub", ["e", "half"], ["d"]),
             helper.make_node("Sqrt", ["d"], ["y"])]
    graph = helper.make_graph(nodes, "emb", [helper.make_tensor_value_info("ids", T.INT64, [1, 16])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 16, 8])],
                              [numpy_helper.from_array(table, "table"),
                               numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_index_inputs_stay_below_the_rows_they_gather(tmp_path):
    path = embedding_onnx(tmp_path / "emb.onnx", rows=4)
    assert index_bounds(path) == {"ids": 4}
    decls = [{"name": "ids", "shape": [1, 1000], "dtype": "int64"}, {"name": "n", "shape": [50], "dtype": "int32"}]
    x = seeded_inputs(decls, 1, index_bounds(path))
    assert x["ids"].min() >= 0 and x["ids"].max() == 3
    assert x["n"].max() == 9          # no range in the graph: 0..9


@pytest.mark.parametrize("got, passed, counts", [
    ([1.0, np.nan, 2.0], True, {"nan_agreed": 1}),
    ([1.0, 0.5, 2.0], False, {"nan_mismatched": 1}),
    ([np.nan, np.nan, 2.0], False, {"nan_agreed": 1, "nan_mismatched": 1}),
])
def test_nan_agrees_only_where_the_reference_has_it(got, passed, counts):
    res = compare(np.array(got, np.float32), np.array([1.0, np.nan, 2.0], np.float32), Tolerance())
    assert res["passed"] is passed
    assert {k: res[k] for k in ("nan_agreed", "nan_mismatched") if k in res} == counts


def test_an_embedding_with_nan_outputs_builds_and_validates(doit, tmp_path):
    embedding_onnx(tmp_path / "decls" / "emb.onnx", rows=4)
    doit.declare("emb.toml", 'name = "emb"\nonnx = "emb.onnx"\n')
    doit("build:emb")
    with open(doit.path("emb", "report.json")) as f:
        report = json.load(f)
    assert report["passed"] is True and report["index_bounds"] == {"ids": 4}
    assert all(case["outputs"]["y"]["nan_agreed"] > 0 for case in report["inputs"])
    assert "NaN where ref has one agrees" in report["tolerance"]["rule"]


def test_declared_ranges_bound_the_validation_inputs():
    decls = [{"name": "ids", "shape": [1000], "dtype": "int64"}, {"name": "x", "shape": [1000], "dtype": "float32"},
             {"name": "z", "shape": [1000], "dtype": "float32"}]
    x = seeded_inputs(decls, 1, {"ids": 4}, {"ids": (10, 13), "x": (0.0, 0.5)})
    assert x["ids"].min() == 10 and x["ids"].max() == 12      # the declared range wins over the graph's
    assert 0.0 <= x["x"].min() and x["x"].max() < 0.5
    assert x["z"].min() < 0 < x["z"].max()                    # no range: N(0, 1)


def test_declared_ranges_reach_the_report_and_name_only_inputs(doit, tmp_path):
    embedding_onnx(tmp_path / "decls" / "emb.onnx", rows=4)
    doit.declare("emb.toml", 'name = "emb"\nonnx = "emb.onnx"\n[ranges]\nids = [2, 4]\n')
    doit("validate:emb")
    with open(doit.path("emb", "report.json")) as f:
        assert json.load(f)["ranges"] == {"ids": [2, 4]}
    doit.declare("emb.toml", 'name = "emb"\nonnx = "emb.onnx"\n[ranges]\ntokens = [2, 4]\n')
    res = doit("validate:emb", check=False)
    assert res.returncode != 0 and "ranges for ['tokens'], which are not inputs" in res.stderr
    assert "Traceback" not in res.stdout + res.stderr
