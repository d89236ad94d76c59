"""Stage 1, import: ONNX -> Relax IRModule (``tvm.relax.frontend.onnx``).

Output: ``model.json`` (the IRModule with its weights bound as constants, from
``tvm.ir.save_json``) and ``io.json`` (input and output names, static shapes, dtypes).
Refuses, naming the file: a missing, truncated or corrupt ONNX file, an input with a dynamic
dimension that the declaration does not pin, and operators TVM cannot import.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from wasmforge.errors import StageError
from wasmforge.store import files

STAGE = "import"
CODE = (__file__,)   # what the stage runs: part of its key

_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64",
                9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


@dataclass(frozen=True)
class ImportParams:
    inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()   # static shape overrides


def load_onnx(path: str):
    """Load and check an ONNX file; every failure is a StageError naming the file."""
    import onnx

    if not os.path.isfile(path):
        raise StageError(STAGE, path, "model file not found")
    try:
        model = onnx.load(path)
    except Exception as e:  # protobuf raises DecodeError, onnx raises others
        raise StageError(STAGE, path, f"not a valid ONNX file (truncated or corrupt?): {type(e).__name__}: {e}") from None
    if not model.graph.node:
        raise StageError(STAGE, path, "not a valid ONNX file: the graph has no nodes (truncated or empty?)")
    check_opsets(model, path)
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise StageError(STAGE, path, f"ONNX checker rejects the model: {e}") from None
    return model


STANDARD_DOMAINS = ("", "ai.onnx")


def check_opsets(model, path: str) -> None:
    """Refuse what no runtime here can run: an ONNX opset newer than the onnx package knows
    (onnxruntime, which validates the module, knows no newer one either), and operators of
    a domain other than the standard one."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in STANDARD_DOMAINS and imp.version > newest:
            raise StageError(STAGE, path, f"the model imports ONNX opset {imp.version}, newer than any this "
                                          f"toolchain supports: the newest is opset {newest} (onnx "
                                          f"{onnx.__version__}); export the model with opset {newest} or older")
    for node in model.graph.node:
        if node.domain not in STANDARD_DOMAINS:
            raise StageError(STAGE, path, f"node {node.name or node.op_type!r} is operator {node.op_type!r} of "
                                          f"domain {node.domain!r}: only the standard ONNX operators (domain "
                                          "ai.onnx) can be built")


def graph_inputs(model, overrides: dict[str, tuple[int, ...]], path: str) -> list[dict]:
    """The real inputs (not initializers) with static shapes; dynamic dimensions must be
    pinned by the declaration."""
    inits = {i.name for i in model.graph.initializer}
    out = []
    names = [i.name for i in model.graph.input if i.name not in inits]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise StageError(STAGE, path, f"the declaration pins shapes of {unknown}, which are not "
                                      f"inputs of the model (inputs: {names})")
    for i in model.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        dtype = _ONNX_DTYPES.get(tt.elem_type)
        if dtype is None:
            raise StageError(STAGE, path, f"input {i.name!r} has an unsupported element type {tt.elem_type}")
        if i.name in overrides:
            shape = list(overrides[i.name])
            if len(shape) != len(tt.shape.dim):
                raise StageError(STAGE, path, f"input {i.name!r} has rank {len(tt.shape.dim)}, "
                                              f"the declaration pins rank {len(shape)}: {shape}")
        else:
            shape = []
            for d in tt.shape.dim:
                if d.HasField("dim_value") and d.dim_value > 0:
                    shape.append(int(d.dim_value))
                else:
                    sym = d.dim_param or "?"
                    raise StageError(
                        STAGE, path,
                        f"input {i.name!r} has a dynamic dimension {sym!r}; dynamic shapes are not "
                        f"supported: pin it in the declaration, e.g. inputs={{{i.name!r}: (1, ...)}}")
        out.append({"name": i.name, "shape": shape, "dtype": dtype})
    if not out:
        raise StageError(STAGE, path, "the model has no inputs")
    return out


def canonicalize(model) -> int:
    """Rewrite ONNX ``Sum`` (n-ary, which TVM imports as broadcast_to + stack + sum, a
    reduction nothing fuses with) into a chain of binary ``Add`` (same broadcasting, same
    result), so a residual add and the ReLU after it fuse into the convolution before them.
    Returns the number of nodes rewritten."""
    from onnx import helper

    nodes, changed = [], 0
    for n in model.graph.node:
        if n.op_type != "Sum" or len(n.input) < 2:
            nodes.append(n)
            continue
        changed += 1
        acc = n.input[0]
        for i, x in enumerate(n.input[1:]):
            last = i == len(n.input) - 2
            out = n.output[0] if last else f"{n.output[0]}__wasmforge_sum{i}"
            nodes.append(helper.make_node("Add", [acc, x], [out], name=f"{n.name}__add{i}" if n.name else ""))
            acc = out
    if changed:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return changed


def run(onnx_path: str, p: ImportParams, out_module: str, out_io: str) -> dict:
    model = load_onnx(onnx_path)
    inputs = graph_inputs(model, dict(p.inputs), onnx_path)
    canonicalize(model)

    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    shape_dict = {i["name"]: i["shape"] for i in inputs}
    dtype_dict = {i["name"]: i["dtype"] for i in inputs}
    try:
        mod = from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict, keep_params_in_input=False)
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise StageError(STAGE, onnx_path, "TVM cannot import the model: "
                                           + (msg[-1] if msg else type(e).__name__)) from None
    ret = mod["main"].ret_ty
    fields = list(ret.fields) if hasattr(ret, "fields") else [ret]
    names = [o.name for o in model.graph.output]
    outputs = []
    for name, si in zip(names, fields):
        shape = getattr(si, "shape", None)
        values = getattr(shape, "values", None)
        if values is None or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
            raise StageError(STAGE, onnx_path, f"output {name!r} has no static shape after import ({si})")
        outputs.append({"name": name, "shape": [int(v) for v in values], "dtype": str(si.dtype)})
    files.write_bytes(out_module, tvm.ir.save_json(mod).encode())
    io = {"inputs": inputs, "outputs": outputs}
    files.write_json(out_io, io)
    return io
