"""The models the repository writes (wasmforge/generators.py): valid ONNX that onnxruntime
runs, the same bytes from the same seed, and what they are for in them."""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from wasmforge import generators


@pytest.mark.parametrize("name, ops", [
    ("text_encoder", {"Gather", "LayerNormalization", "Softmax", "Erf", "MatMul", "Tanh"}),
    ("mobilenet_v2", {"Conv", "Clip", "Add", "GlobalAveragePool", "Gemm", "Softmax"})])
def test_a_generated_model_is_deterministic_and_runs(tmp_path, name, ops):
    import onnx
    import onnxruntime as ort

    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    generators.run(name, 0, str(a))
    generators.run(name, 0, str(b))
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    model = onnx.load(str(a))
    assert ops <= {n.op_type for n in model.graph.node}
    sess = ort.InferenceSession(str(a), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = (np.random.default_rng(1).integers(0, 1000, inp.shape) if "int" in inp.type
         else np.random.default_rng(1).standard_normal(inp.shape)).astype(np.int64 if "int" in inp.type else np.float32)
    (y,) = sess.run(None, {inp.name: x})
    assert np.isfinite(y).all() and y.std() > 0


def test_mobilenet_v2_has_depthwise_convolutions_and_spread_logits():
    model = generators.mobilenet_v2(0)
    groups = Counter(next((a.i for a in n.attribute if a.name == "group"), 1) > 1
                     for n in model.graph.node if n.op_type == "Conv")
    assert groups[True] == 17 and groups[False] == 35       # 17 inverted residual blocks
