"""Reference outputs: inputs with the outputs a model must give for them, declared beside the
model, so that a model onnxruntime cannot run (an old opset it dropped, an operator it lacks)
can still be validated.

Two formats are read:

- ONNX's test-data convention: a folder ``test_data_set_N/`` holding ``input_K.pb`` and
  ``output_K.pb`` (serialized ``TensorProto``), K in the order of the graph's inputs and
  outputs. A folder that holds ``test_data_set_*`` folders stands for all of them.
- an ``.npz`` holding one array per model input and output, named as in the graph.

Every problem is a ``ReferenceError`` naming the file.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

import numpy as np

_PB = re.compile(r"^(input|output)_(\d+)\.pb$")


class ReferenceError(ValueError):
    pass


@dataclass(frozen=True)
class ReferenceSet:
    """One set: the model's inputs and the outputs it must give, by name."""
    path: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


def expand(path: str) -> list[str]:
    """The reference sets a declared path stands for: an ``.npz``, a ``test_data_set_N``
    folder, or a folder of such folders (sorted). Raises when there are none."""
    if os.path.isfile(path):
        if not path.endswith(".npz"):
            raise ReferenceError(f"{path}: a reference is an .npz file or a test_data_set_N folder")
        return [path]
    if not os.path.isdir(path):
        raise ReferenceError(f"{path}: reference outputs not found")
    sets = sorted(d for d in glob.glob(os.path.join(path, "test_data_set_*")) if os.path.isdir(d))
    if sets:
        return sets
    if any(_PB.match(f) for f in os.listdir(path)):
        return [path]
    raise ReferenceError(f"{path}: holds neither input_K.pb/output_K.pb files nor test_data_set_N folders")


def files_of(path: str) -> list[str]:
    """The files one set reads (its part of the validate stage's key)."""
    if os.path.isfile(path):
        return [path]
    return sorted(os.path.join(path, f) for f in os.listdir(path) if _PB.match(f))


def read_tensor(path: str) -> np.ndarray:
    """A serialized ONNX ``TensorProto`` as an array."""
    import onnx
    from onnx import numpy_helper

    t = onnx.TensorProto()
    try:
        with open(path, "rb") as f:
            t.ParseFromString(f.read())
        return numpy_helper.to_array(t)
    except Exception as e:
        raise ReferenceError(f"{path}: not a serialized ONNX tensor ({type(e).__name__}: {e})") from None


def load(path: str, input_names: list[str], output_names: list[str]) -> ReferenceSet:
    """One reference set, its arrays named after the model's inputs and outputs. Every input
    must be given; at least one output."""
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:
            raise ReferenceError(f"{path}: cannot read the .npz ({type(e).__name__}: {e})") from None
        unknown = sorted(set(arrays) - set(input_names) - set(output_names))
        if unknown:
            raise ReferenceError(f"{path}: arrays {unknown} name no input or output of the model "
                                 f"(inputs {input_names}, outputs {output_names})")
        ins = {n: arrays[n] for n in input_names if n in arrays}
        outs = {n: arrays[n] for n in output_names if n in arrays}
    else:
        ins, outs = {}, {}
        for f in files_of(path):
            kind, k = _PB.match(os.path.basename(f)).groups()
            names, into = (input_names, ins) if kind == "input" else (output_names, outs)
            if int(k) >= len(names):
                raise ReferenceError(f"{f}: the model has {len(names)} {kind}s, no {kind} {k}")
            into[names[int(k)]] = read_tensor(f)
    missing = [n for n in input_names if n not in ins]
    if missing:
        raise ReferenceError(f"{path}: no value for the model's inputs {missing}")
    if not outs:
        raise ReferenceError(f"{path}: no reference output (expected one of {output_names})")
    return ReferenceSet(path, ins, outs)


def check_against(ref: ReferenceSet, decls: list[dict]) -> dict[str, np.ndarray]:
    """The set's inputs, checked against the module's declared inputs (name, shape, dtype)."""
    feeds = {}
    for d in decls:
        a = ref.inputs[d["name"]]
        if list(a.shape) != list(d["shape"]) or a.dtype != np.dtype(d["dtype"]):
            raise ReferenceError(f"{ref.path}: input {d['name']!r} is {a.dtype}{list(a.shape)}, the module takes "
                                 f"{d['dtype']}{list(d['shape'])} (pin the input's shape in the declaration)")
        feeds[d["name"]] = a
    return feeds
