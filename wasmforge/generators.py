"""Models written in this repository as ONNX graphs, with seeded weights: what the benchmark
suite adds to the zoo's convolutional networks (``source=generated(...)`` in a declaration;
the ``materialize`` stage writes them).

- ``text_encoder``: a BERT-style encoder: token embedding ``Gather`` plus positions,
  ``LayerNormalization``, 4 layers of 4-head attention (``MatMul``, ``Softmax``) and a GELU
  feed-forward (``Erf``), a ``Tanh`` pooler on the first token; d = 256, 128 tokens, int64
  ids below the vocabulary's 1000.
- ``mobilenet_v2``: MobileNetV2 at width 1.0 on 224x224: inverted residuals (1x1 expand,
  depthwise 3x3, 1x1 project), ReLU6 as ``Clip``, global pool, a 1000-way classifier. Its
  weights are He-normal and its last layer scaled so the logits spread (std about 2), as
  the zoo models' are.

Both are deterministic in their seed: the same bytes on every machine.
"""
from __future__ import annotations

import numpy as np

CODE = (__file__,)   # what the materialize stage runs for these: part of its key
MODELS = ("text_encoder", "mobilenet_v2")


def _model(nodes, inits, inputs, outputs, name: str):
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="wasmforge")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def text_encoder(seed: int = 0, layers: int = 4, d: int = 256, heads: int = 4, ff: int = 1024, seq: int = 128,
                 vocab: int = 1000):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def w(name, *shape, scale=None):
        return const(name, (rng.standard_normal(shape) * (scale or 1 / np.sqrt(shape[0]))).astype(np.float32))

    def node(op, ins, out=None, **attrs):
        out = out or f"{op.lower()}_{len(nodes)}"
        nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def layer_norm(x, tag):
        return node("LayerNormalization", [x, const(f"ln{tag}_g", np.ones(d, np.float32)),
                                           const(f"ln{tag}_b", np.zeros(d, np.float32))], axis=-1, epsilon=1e-5)

    x = node("Gather", [w("tok_emb", vocab, d, scale=0.5), "input_ids"], axis=0)
    x = layer_norm(node("Add", [x, w("pos_emb", seq, d, scale=0.1)]), "e")
    hd = d // heads
    split = const("shape_heads", np.array([1, seq, heads, hd], np.int64))
    merge = const("shape_merged", np.array([1, seq, d], np.int64))
    for i in range(layers):
        def linear(x, n_in, n_out, tag):
            y = node("MatMul", [x, w(f"l{i}_{tag}_w", n_in, n_out)])
            return node("Add", [y, const(f"l{i}_{tag}_b", (rng.standard_normal(n_out) * 0.02).astype(np.float32))])

        q, k, v = (node("Transpose", [node("Reshape", [linear(x, d, d, t), split])], perm=[0, 2, 1, 3]) for t in "qkv")
        scores = node("Mul", [node("MatMul", [q, node("Transpose", [k], perm=[0, 1, 3, 2])]),
                              const(f"l{i}_scale", np.array(1 / np.sqrt(hd), np.float32))])
        a = node("MatMul", [node("Softmax", [scores], axis=-1), v])
        a = node("Reshape", [node("Transpose", [a], perm=[0, 2, 1, 3]), merge])
        x = layer_norm(node("Add", [x, linear(a, d, d, "o")]), f"{i}a")
        h = linear(x, d, ff, "f1")
        erf = node("Erf", [node("Div", [h, const(f"l{i}_sqrt2", np.array(np.sqrt(2), np.float32))])])
        gelu = node("Mul", [node("Mul", [h, const(f"l{i}_half", np.array(0.5, np.float32))]),
                            node("Add", [erf, const(f"l{i}_one", np.array(1, np.float32))])])
        x = layer_norm(node("Add", [x, linear(gelu, ff, d, "f2")]), f"{i}f")
    first = node("Gather", [x, const("first", np.array(0, np.int64))], axis=1)
    node("Tanh", [node("Add", [node("MatMul", [first, w("pool_w", d, d)]),
                               const("pool_b", np.zeros(d, np.float32))])], out="pooled")
    return _model(nodes, inits, [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq])],
                  [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, d])], "text_encoder")


# (expansion t, output channels c, repeats n, stride s): MobileNetV2's table
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
LOGIT_STD = 2.0


def mobilenet_v2(seed: int = 0, hw: int = 224, classes: int = 1000):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"),
              numpy_helper.from_array(np.array(6, np.float32), "six")]

    def conv(x, name, cin, cout, k=1, stride=1, groups=1, relu6=True):
        fan_in = cin // groups * k * k
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2 / fan_in)).astype(np.float32), name + "_w"))
        inits.append(numpy_helper.from_array((rng.standard_normal(cout) * 0.05).astype(np.float32), name + "_b"))
        out = name + ("_conv" if relu6 else "")
        nodes.append(helper.make_node("Conv", [x, name + "_w", name + "_b"], [out], pads=[k // 2] * 4,
                                      strides=[stride] * 2, group=groups))
        if relu6:
            nodes.append(helper.make_node("Clip", [out, "zero", "six"], [name]))
        return name

    x, c = conv("input", "stem", 3, 32, k=3, stride=2), 32
    for b, (t, cout, n, s) in enumerate(MOBILENET_V2):
        for r in range(n):
            stride, tag = (s if r == 0 else 1), f"b{b}_{r}"
            h = conv(x, tag + "_expand", c, c * t) if t != 1 else x
            h = conv(h, tag + "_dw", c * t, c * t, k=3, stride=stride, groups=c * t)
            h = conv(h, tag + "_project", c * t, cout, relu6=False)
            if stride == 1 and cout == c:
                nodes.append(helper.make_node("Add", [x, h], [tag + "_sum"]))
                h = tag + "_sum"
            x, c = h, cout
    x = conv(x, "head", c, 1280)
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pool"]), helper.make_node("Flatten", ["pool"], ["flat"])]
    fc = (rng.standard_normal((classes, 1280)) / np.sqrt(1280)).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc_w"), numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    model = _model(nodes, inits, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, hw, hw])],
                   [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], "mobilenet_v2")
    # the classifier scaled so the logits have std LOGIT_STD on seeded inputs (one
    # onnxruntime run; the factor rounded to 2 digits, so every machine writes the same bytes)
    scale = float(f"{LOGIT_STD / _logit_std(model, seed):.2g}")
    weight = next(i for i in model.graph.initializer if i.name == "fc_w")
    weight.CopyFrom(numpy_helper.from_array(fc * np.float32(scale), "fc_w"))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, classes]))
    return model


def _logit_std(model, seed: int) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(seed + 1).standard_normal((4, *sess.get_inputs()[0].shape[1:])).astype(np.float32)
    return float(np.std([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))]))


def run(name: str, seed: int, out: str) -> dict:
    """Write generated model ``name`` to ``out`` (the materialize stage's action)."""
    from wasmforge.store import files

    model = {"text_encoder": text_encoder, "mobilenet_v2": mobilenet_v2}[name](seed)
    files.write_bytes(out, model.SerializeToString())
    return {"generated": name, "seed": seed, "nodes": len(model.graph.node),
            "weights_bytes": sum(len(i.raw_data) for i in model.graph.initializer)}
