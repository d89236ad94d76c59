"""Stage 0 (zoo models only): give a "light" zoo graph real, deterministic weights.

The onnx wheel ships the ONNX model zoo's "light" models: the real graphs, with every weight
produced by a ``ConstantOfShape`` fill. A constant fill makes every channel identical and the
output independent of the input, so validation would prove nothing. This stage replaces each
fill (and each float initializer) with seeded values, then calibrates them on seeded inputs
with onnxruntime, the way trained statistics would look:

* convolution / Gemm weights are He-normal (std sqrt(2 / fan_in)), which keeps activations
  of a ReLU network at a steady scale layer after layer; biases are small;
* BatchNorm scale ~ U(0.5, 1), shift and running mean ~ N(0, 0.05), variance ~ U(0.8, 1.2);
* the last layer before the final Softmax is scaled so the logits have std ``LOGIT_STD``
  on seeded calibration inputs (one onnxruntime run).

``check_logits`` then refuses weights whose softmax saturates to one-hot or whose output
ignores the input. (An iterative, LSUV-style calibration of every layer was tried and
diverged on ResNet-50's residual stream; the simple scheme is stable on all five models.)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from wasmforge.errors import StageError
from wasmforge.store import files

STAGE = "materialize"
CODE = (__file__,)   # what the stage runs: part of its key
CALIBRATION_INPUTS = 4
LOGIT_STD = 2.0


@dataclass(frozen=True)
class MaterializeParams:
    zoo: str
    seed: int = 0


def zoo_path(name: str) -> str:
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                        f"light_{name}.onnx")


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def _replace_fills(model, rng):
    """Turn ConstantOfShape fills and float initializers into seeded initializers.
    Returns {name: array} of the new weights."""
    from onnx import TensorProto, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for k, x in enumerate(n.input):
            consumers.setdefault(x, []).append((n, k))
    shapes: dict[str, tuple] = {}
    kept_nodes = []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input and n.input[0] in inits:
            shapes[n.output[0]] = tuple(int(d) for d in numpy_helper.to_array(inits[n.input[0]]))
        else:
            kept_nodes.append(n)
    for name, init in inits.items():
        if init.data_type == TensorProto.FLOAT and name not in shapes:
            shapes[name] = tuple(init.dims)
    weights = {}
    for name, shape in sorted(shapes.items()):
        uses = consumers.get(name, [])
        if not uses:
            continue
        node, k = uses[0]
        op = node.op_type
        if op == "Reshape" and k == 0:  # inception_v1 reshapes its classifier weight
            node, k = consumers.get(node.output[0], [(node, k)])[0]
            op = node.op_type
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            if op == "Gemm" and k == 1 and not _attr(node, "transB", 0):
                fan_in = shape[0]
            v = rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), shape)
        elif op == "BatchNormalization":
            v = {1: lambda: rng.uniform(0.5, 1.0, shape), 2: lambda: rng.normal(0.0, 0.05, shape),
                 3: lambda: rng.normal(0.0, 0.05, shape), 4: lambda: rng.uniform(0.8, 1.2, shape)}[k]()
        else:
            v = rng.normal(0.0, 0.01, shape)
        weights[name] = v.astype(np.float32)
    del g.node[:]
    g.node.extend(kept_nodes)
    used = {x for n in kept_nodes for x in n.input}
    keep = [i for i in g.initializer if i.name not in weights and i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    g.initializer.extend(numpy_helper.from_array(weights[n], n) for n in sorted(weights))
    init_names = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in init_names and i.name in used]
    del g.input[:]
    g.input.extend(inputs)
    if model.ir_version < 4:  # initializers need not be graph inputs from IR version 4 on
        model.ir_version = 4
    return weights


def _last_layer(model):
    """The final Softmax's input and the Conv/Gemm that feeds it through ops that commute
    with a positive scale (ReLU, pooling, reshape, dropout)."""
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    softmax = [n for n in g.node if n.op_type == "Softmax"]
    if not softmax:
        return None, None
    t = softmax[-1].input[0]
    while t in producers and producers[t].op_type in ("Relu", "MaxPool", "AveragePool",
                                                       "GlobalAveragePool", "Reshape", "Flatten",
                                                       "Dropout"):
        t = producers[t].input[0]
    last = producers.get(t)
    if last is None or last.op_type not in ("Conv", "Gemm"):
        return None, None
    return softmax[-1].input[0], last


def calibrate(model, weights, inputs, path: str):
    """Scale the last layer so the logits have std LOGIT_STD on the calibration inputs."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    logits_name, last = _last_layer(model)
    if last is None:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(logits_name))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    logits = np.stack([sess.run([logits_name], {in_name: x})[0] for x in inputs])
    std = float(logits.std())
    if not np.isfinite(std) or std == 0.0:
        raise StageError(STAGE, path, f"logits are degenerate before scaling (std {std})")
    producers = {o: n for n in model.graph.node for o in n.output}
    for t in last.input[1:3]:
        if t in producers and producers[t].op_type == "Reshape":  # inception_v1's classifier
            t = producers[t].input[0]
        if t in weights:
            weights[t] = (weights[t] * (LOGIT_STD / std)).astype(np.float32)
    for n in model.graph.initializer:
        if n.name in weights:
            n.CopyFrom(numpy_helper.from_array(weights[n.name], n.name))


def calibration_inputs(model, seed: int, count: int):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(10_000 + seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]


def check_logits(path: str, probs: list[np.ndarray]) -> dict:
    """Refuse degenerate weights: a saturated softmax, or an output that ignores its input."""
    pmax = [float(p.max()) for p in probs]
    top1 = [int(p.argmax()) for p in probs]
    if max(pmax) > 0.99:
        raise StageError(STAGE, path, f"softmax saturates (max probability {max(pmax):.4f}): "
                                      "the weights make the output one-hot; validation would prove nothing")
    spread = float(np.std(np.stack([p.ravel() for p in probs]), axis=0).mean())
    if spread == 0.0:
        raise StageError(STAGE, path, "every input gives the same output: the weights ignore the input")
    return {"max_probability": pmax, "top1": top1, "output_spread": spread}


def run(p: MaterializeParams, out: str) -> dict:
    import onnx
    import onnxruntime as ort

    src = zoo_path(p.zoo)
    if not os.path.isfile(src):
        raise StageError(STAGE, src, "zoo model not found in the onnx wheel")
    model = onnx.load(src)
    rng = np.random.default_rng(p.seed)
    weights = _replace_fills(model, rng)
    calibrate(model, weights, calibration_inputs(model, p.seed, CALIBRATION_INPUTS), src)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    probs = [sess.run(None, {in_name: x})[0] for x in calibration_inputs(model, p.seed + 1, 4)]
    stats = check_logits(out, probs)
    files.write_bytes(out, data)
    return stats
