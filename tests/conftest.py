"""Shared fixtures: small hand-made ONNX models and a runner for the real doit graph in a
temporary build folder (WASMFORGE_BUILD) with extra declarations (WASMFORGE_MODELS)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_tiny_onnx(path, *, dynamic_batch=False, op=None, seed=0):
    """conv -> relu -> (residual add) -> maxpool -> flatten -> gemm -> softmax, 1x3x8x8 input."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (3, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(0, 0.1, (3,)).astype(np.float32), "B"),
        numpy_helper.from_array(rng.normal(0, 0.3, (10, 3 * 4 * 4)).astype(np.float32), "G"),
        numpy_helper.from_array(rng.normal(0, 0.1, (10,)).astype(np.float32), "C"),
        numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Add", ["r", "x"], ["a"]),
        helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "G", "C"], ["l"], transB=1),
        helper.make_node("Softmax", ["l"], ["y"], axis=1),
    ]
    if op is not None:   # an extra operator on the output, e.g. one TVM cannot import
        nodes[-1] = helper.make_node("Softmax", ["l"], ["s"], axis=1)
        nodes.append(helper.make_node(op, ["s"], ["y"]))
    batch = "N" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", T.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", T.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture
def tiny_onnx(tmp_path):
    return make_tiny_onnx(tmp_path / "tiny.onnx")


class Doit:
    """Runs the project's real task graph: ``python -m doit`` on dodo.py, in its own build
    folder, with model declarations from ``decls``."""

    def __init__(self, build, decls):
        self.build, self.decls = str(build), str(decls)
        os.makedirs(self.decls, exist_ok=True)

    def env(self, **extra):
        env = dict(os.environ, WASMFORGE_BUILD=self.build, WASMFORGE_MODELS=self.decls)
        env.update(extra)
        return env

    def declare(self, filename, text):
        with open(os.path.join(self.decls, filename), "w") as f:
            f.write(text)

    def __call__(self, *args, check=True, **env):
        res = subprocess.run([sys.executable, "-m", "doit", "-f", os.path.join(ROOT, "dodo.py"), *args],
                             cwd=ROOT, env=self.env(**env), capture_output=True, text=True, timeout=1800)
        if check and res.returncode != 0:
            raise AssertionError(f"doit {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def path(self, *parts):
        return os.path.join(self.build, *parts)


@pytest.fixture
def doit(tmp_path):
    return Doit(tmp_path / "build", tmp_path / "decls")
