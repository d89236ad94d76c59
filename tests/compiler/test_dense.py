"""The default schedule of matrix products (wasmforge/compiler/dense.py), through the real
pipeline: dense layers with epilogues, a batched product, shapes the preferred tile does not
divide, a single row; each built, validated against onnxruntime on 1 and 2 threads."""
from __future__ import annotations

import json

import numpy as np

from wasmforge.compiler import dense


def make_products_onnx(path, rows=6, seed=0):
    """x[1, rows, 24] -> MatMul 24x40 + bias -> GELU (Erf) -> MatMul 40x12 + residual-free
    bias -> Gemm (transB) 12x20 per row -> batched x x^T (rows x rows) -> softmax; and a
    one-row pooler: row 0 -> MatMul 20x8 -> Tanh."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [init("W1", 24, 40), init("b1", 40), init("W2", 40, 12), init("b2", 12), init("G", 20, 12),
             init("c", 20), init("P", 20, 8),
             numpy_helper.from_array(np.array(np.sqrt(2), np.float32), "sqrt2"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array([rows, 12], np.int64), "flat"),
             numpy_helper.from_array(np.array([1, rows, 20], np.int64), "back"),
             numpy_helper.from_array(np.array(0, np.int64), "zero")]
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "W1"], ["m1"]), n("Add", ["m1", "b1"], ["h"]),
        n("Div", ["h", "sqrt2"], ["hd"]), n("Erf", ["hd"], ["e"]), n("Add", ["e", "one"], ["e1"]),
        n("Mul", ["h", "half"], ["hh"]), n("Mul", ["hh", "e1"], ["g"]),
        n("MatMul", ["g", "W2"], ["m2"]), n("Add", ["m2", "b2"], ["z"]),
        n("Reshape", ["z", "flat"], ["zf"]), n("Gemm", ["zf", "G", "c"], ["gm"], transB=1),
        n("Reshape", ["gm", "back"], ["u"]), n("Transpose", ["u"], ["ut"], perm=[0, 2, 1]),
        n("MatMul", ["u", "ut"], ["s"]), n("Softmax", ["s"], ["y"], axis=-1),
        n("Gather", ["u", "zero"], ["first"], axis=1), n("MatMul", ["first", "P"], ["pm"]),
        n("Tanh", ["pm"], ["pooled"]),
    ]
    graph = helper.make_graph(nodes, "products", [helper.make_tensor_value_info("x", T.FLOAT, [1, rows, 24])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, rows, rows]),
                               helper.make_tensor_value_info("pooled", T.FLOAT, [1, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_the_tile_is_the_first_that_divides_the_product():
    assert dense.candidate({"batch": [1], "rows": 128, "cols": 512, "depth": 256}) == {"rows": 2, "cols": 16}
    assert dense.candidate({"batch": [1], "rows": 128, "cols": 1024, "depth": 256}) == {"rows": 2, "cols": 16}
    assert dense.candidate({"batch": [1], "rows": 12, "cols": 40, "depth": 256}) == {"rows": 4, "cols": 8}
    assert dense.candidate({"batch": [1], "rows": 6, "cols": 40, "depth": 24}) == {"rows": 2, "cols": 8}
    assert dense.candidate({"batch": [1], "rows": 9, "cols": 48, "depth": 24}) == {"rows": 1, "cols": 16}
    assert dense.candidate({"batch": [], "rows": 1, "cols": 8, "depth": 20}) == {"rows": 1, "cols": 8}
    assert dense.candidate({"batch": [1], "rows": 6, "cols": 6, "depth": 20}) is None   # no 4 lanes


def test_one_row_by_weights_beyond_the_caches_streams_them():
    fc6 = {"batch": [], "rows": 1, "cols": 4096, "depth": 9216}     # AlexNet's first fully connected layer
    assert dense.candidate(fc6) == {"stream": 2048, "rows_at_once": 8}
    assert dense.candidate({**fc6, "depth": 4098}) == {"stream": 2048, "rows_at_once": 2}
    assert dense.candidate({**fc6, "cols": 4094}) is None                               # no 4 lanes
    assert "stream" not in dense.candidate({**fc6, "rows": 4})                          # a tile's
    assert "stream" not in dense.candidate({"batch": [1], "rows": 1, "cols": 256, "depth": 256})   # in cache


def test_a_streamed_product_validates(doit, tmp_path):
    """x[1, 1024] -> MatMul 1024 x 1024 (4 MB) + bias -> Relu: streamed, on 1 and 2 threads."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
         helper.make_node("Relu", ["a"], ["y"])], "fc",
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 1024])], [helper.make_tensor_value_info("y", T.FLOAT, [1, 1024])],
        [numpy_helper.from_array((rng.standard_normal((1024, 1024)) / 32).astype(np.float32), "W"),
         numpy_helper.from_array((rng.standard_normal(1024) * 0.1).astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "decls" / "fc.onnx"))
    doit.declare("fc.toml", 'name = "fc"\nonnx = "fc.onnx"\n')
    doit("build:fc")
    with open(doit.path("fc", "relax_build", "stage.json")) as f:
        assert json.load(f)["result"]["default_schedules"] == ["fused_matmul_add_relu"]
    for report in ("report.json", "report.threads.json"):
        with open(doit.path("fc", report)) as f:
            assert json.load(f)["passed"] is True


def test_products_take_the_default_schedule_and_validate(doit, tmp_path):
    make_products_onnx(tmp_path / "decls" / "products.onnx")
    doit.declare("products.toml", 'name = "products"\nonnx = "products.onnx"\n')
    doit("build:products")
    with open(doit.path("products", "relax_build", "stage.json")) as f:
        scheduled = json.load(f)["result"]["default_schedules"]
    with open(doit.path("products", "executor", "plan.json")) as f:
        products = [k for k in json.load(f)["kernels"] if "matmul" in k]
    # every product whose columns take 4-lane vectors: the two dense layers with their
    # epilogues (bias, GELU), the Gemm and the pooler; the 6x6 batched product has none
    assert len(products) == 5, products
    assert len(scheduled) == 4 and set(scheduled) < set(products), (scheduled, products)
    for report in ("report.json", "report.threads.json"):
        with open(doit.path("products", report)) as f:
            r = json.load(f)
        assert r["passed"] is True, r
        assert all(case["outputs"]["pooled"]["max_rel_error"] < 1e-5 for case in r["inputs"])


def _product_with(epilogue):
    """A 6 x 24 by 24 x 40 product whose output goes through ``epilogue`` (TE: a tensor in,
    a tensor out)."""
    import tvm
    from tvm import te

    a, w = te.placeholder((1, 6, 24), name="a"), te.placeholder((24, 40), name="w")
    k = te.reduce_axis((0, 24), name="k")
    mm = te.compute((1, 6, 40), lambda b, i, j: te.sum(a[b, i, k] * w[k, j], axis=k), name="matmul")
    return tvm.IRModule({"main": te.create_prim_func([a, w, epilogue(mm)])})


def _loops(sch, block: str):
    return [sch.get(lp) for lp in sch.get_loops(sch.get_sblock(block))]


def test_an_epilogue_with_many_constants_runs_apart_from_the_tiles():
    """A GELU's polynomial (fast_erf: more than tiles.HEAVY_EPILOGUE_CONSTANTS constants)
    runs after the tiles in a loop of its own (its constants would take the tile's
    registers in wasmtime); a bias-and-relu stays in the tile."""
    from tvm import te, tirx, topi

    def gelu(x):
        e = topi.fast_erf(topi.divide(x, 1.4142135))
        return te.compute(x.shape, lambda *i: x(*i) * 0.5 * (1.0 + e(*i)), name="gelu")

    def relu(x):
        return te.compute(x.shape, lambda *i: tirx.max(x(*i) + 1.0, 0.0), name="relu")

    cand = dense.candidate(dense.extents(_product_with(gelu)))
    loops = _loops(dense.schedule(_product_with(gelu), cand), "gelu")
    assert [lp.kind for lp in loops] == [tirx.ForKind.PARALLEL, tirx.ForKind.VECTORIZED]
    assert [int(lp.extent) for lp in loops] == [6 * 40 // 4, 4]

    loops = _loops(dense.schedule(_product_with(relu), cand), "relu")
    assert loops[0].kind == tirx.ForKind.PARALLEL and len(loops) > 2   # under the tile loop
