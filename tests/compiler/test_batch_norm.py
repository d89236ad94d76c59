"""Batch normalization folded at build time (``wasmforge/compiler/batch_norm.py``), on
graphs imported by TVM's ONNX frontend, run on the host against onnxruntime."""
from __future__ import annotations

import collections

import numpy as np
import pytest

from wasmforge.compiler import batch_norm

C = 8


def bn_params(name: str, rng) -> list:
    from onnx import numpy_helper

    return [numpy_helper.from_array(a.astype(np.float32), f"{name}_{p}") for p, a in
            (("g", rng.uniform(0.5, 2, C)), ("b", rng.normal(0, 1, C)), ("m", rng.normal(0, 1, C)),
             ("v", rng.uniform(0.1, 3, C)))]


def model(kind: str):
    """``conv_bn``: a convolution (weights only) then a batch norm; ``conv_bias_bn``: with a
    bias; ``bn_relu_conv``: a batch norm before the convolution (DenseNet's pre-activation);
    ``shared_conv``: a convolution read by a batch norm and by an add."""
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (C, C, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(0, 1, C).astype(np.float32), "bias")
    bn = bn_params("bn", rng)
    names = [t.name for t in bn]
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = {
        "conv_bn": [helper.make_node("Conv", ["x", "w"], ["c"], **conv),
                    helper.make_node("BatchNormalization", ["c", *names], ["y"], epsilon=1e-3)],
        "conv_bias_bn": [helper.make_node("Conv", ["x", "w", "bias"], ["c"], **conv),
                         helper.make_node("BatchNormalization", ["c", *names], ["y"])],
        "bn_relu_conv": [helper.make_node("BatchNormalization", ["x", *names], ["n"]),
                         helper.make_node("Relu", ["n"], ["r"]),
                         helper.make_node("Conv", ["r", "w"], ["y"], **conv)],
        "shared_conv": [helper.make_node("Conv", ["x", "w"], ["c"], **conv),
                        helper.make_node("BatchNormalization", ["c", *names], ["n"]),
                        helper.make_node("Add", ["n", "c"], ["y"])],
    }[kind]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", T.FLOAT, [1, C, 6, 6])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, C, 6, 6])], [w, bias, *bn])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ops(mod) -> collections.Counter:
    import re

    return collections.Counter(re.findall(r"R\.(nn\.conv2d|nn\.batch_norm|multiply)\(", mod["main"].script()))


def run(mod, x):
    import tvm
    from tvm import relax

    mod = relax.transform.DecomposeOpsForInference()(mod)
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_scale_and_shift_are_the_batch_norm():
    rng = np.random.default_rng(0)
    g, b, m, v = rng.uniform(0.5, 2, C), rng.normal(0, 1, C), rng.normal(0, 1, C), rng.uniform(0.1, 3, C)
    x = rng.normal(0, 2, (2, C, 3)).astype(np.float32)
    s, t = batch_norm.scale_shift(g, b, m, v, 1e-5)
    shape = (1, C, 1)
    want = (x - m.reshape(shape)) / np.sqrt(v.reshape(shape) + 1e-5) * g.reshape(shape) + b.reshape(shape)
    np.testing.assert_allclose(x * s.reshape(shape) + t.reshape(shape), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind, convs, multiplies", [
    ("conv_bn", 1, 0),          # into the weights: no multiply left
    ("conv_bias_bn", 1, 1),     # the bias sits between: scale and shift
    ("bn_relu_conv", 1, 1),     # no convolution before it: scale and shift
    ("shared_conv", 1, 1),      # the convolution has another reader: left as it is
])
def test_batch_norms_fold_and_compute_what_onnxruntime_does(kind, convs, multiplies):
    import onnxruntime as ort
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    m = model(kind)
    mod = from_onnx(m, keep_params_in_input=False)
    folded = relax.transform.DeadCodeElimination()(batch_norm.fold_batch_norm()(mod))
    assert ops(folded) == collections.Counter({"nn.conv2d": convs, **({"multiply": multiplies} if multiplies else {})})
    x = np.random.default_rng(1).normal(0, 1, (1, C, 6, 6)).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(run(folded, x), want, rtol=1e-4, atol=1e-4)



def conv_bn_module(bn_attrs=None):
    """A Relax module: a convolution with constant weights, then (unless ``bn_attrs`` is
    None) a batch norm with these attributes (``center``, ``scale``, ``epsilon``; inference
    unless ``training`` says otherwise, Relax's default); and the batch norm's parameters."""
    from tvm import relax

    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.3, (C, C, 3, 3)).astype(np.float32)
    params = [p.astype(np.float32) for p in
              (rng.uniform(0.5, 2, C), rng.normal(0, 1, C), rng.normal(0, 1, C), rng.uniform(0.1, 3, C))]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, C, 6, 6), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=1))
            if bn_attrs is not None:
                bn = bb.emit(relax.op.nn.batch_norm(y, *map(relax.const, params), axis=1,
                                                    **{"training": False, **bn_attrs}))
                y = bb.emit(relax.TupleGetItem(bn, 0))
            y = bb.emit_output(y)
        bb.emit_func_output(y)
    return bb.get(), params


@pytest.mark.parametrize("center, scale", [(False, True), (True, False), (False, False)])
def test_a_batch_norm_without_gamma_or_beta_folds_without_them(center, scale):
    from tvm import relax

    mod, (g, b, m, v) = conv_bn_module(dict(center=center, scale=scale, epsilon=1e-3))
    folded = relax.transform.DeadCodeElimination()(batch_norm.fold_batch_norm()(mod))
    assert ops(folded) == collections.Counter({"nn.conv2d": 1})
    x = np.random.default_rng(1).normal(0, 1, (1, C, 6, 6)).astype(np.float32)
    c = run(conv_bn_module()[0], x)    # the convolution alone
    shape = (1, C, 1, 1)
    want = (c - m.reshape(shape)) / np.sqrt(v.reshape(shape) + 1e-3)
    want = want * (g.reshape(shape) if scale else 1) + (b.reshape(shape) if center else 0)
    np.testing.assert_allclose(run(folded, x), want, rtol=1e-4, atol=1e-4)


def test_a_training_batch_norm_is_not_folded():
    from tvm import relax

    mod, _ = conv_bn_module(dict(training=True))
    assert ops(relax.transform.DeadCodeElimination()(batch_norm.fold_batch_norm()(mod))) == \
        collections.Counter({"nn.conv2d": 1, "nn.batch_norm": 1})
