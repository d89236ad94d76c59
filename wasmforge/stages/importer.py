"""Stage 1, import: ONNX -> Relax IRModule (``tvm.relax.frontend.onnx``).

Output: ``model.json`` (the IRModule with its weights bound as constants, from
``tvm.ir.save_json``) and ``io.json`` (input and output names, static shapes, dtypes).
Refuses, naming the file: a missing, truncated or corrupt ONNX file, external data outside
the model's folder or shorter than declared, string and complex tensors, an input with a
dynamic dimension that the declaration does not pin or beyond 4 GiB, an output that is an
input, and operators TVM cannot import (naming the operator). ``compiler/frontend.py``
rewrites what TVM's ONNX frontend imports badly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from wasmforge.compiler import frontend
from wasmforge.errors import StageError
from wasmforge.stages import executor_plan
from wasmforge.store import files

STAGE = "import"
CODE = (__file__, frontend.__file__, executor_plan.__file__)   # what the stage runs: part of its key

_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64",
                9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


@dataclass(frozen=True)
class ImportParams:
    inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()   # static shape overrides


def load_onnx(path: str):
    """Load and check an ONNX file; every failure is a StageError naming the file."""
    import onnx
    from onnx import external_data_helper

    if not os.path.isfile(path):
        raise StageError(STAGE, path, "model file not found")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError, onnx raises others
        raise StageError(STAGE, path, f"not a valid ONNX file (truncated or corrupt?): {type(e).__name__}: {e}") from None
    if not model.graph.node:
        raise StageError(STAGE, path, "not a valid ONNX file: the graph has no nodes (truncated or empty?)")
    check_opsets(model, path)
    check_tensors(model, path)
    if check_external_data(model, path):
        try:
            external_data_helper.load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
        except Exception as e:
            raise StageError(STAGE, path, f"cannot read the model's external data: {type(e).__name__}: {e}") from None
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise StageError(STAGE, path, f"ONNX checker rejects the model: {e}") from None
    return model


def check_external_data(model, path: str) -> int:
    """Every tensor stored outside the ONNX file must name a regular file inside the model's
    folder (after following symbolic links) that holds the bytes it says. Returns how many
    tensors are stored outside."""
    import onnx
    from onnx import external_data_helper

    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    count = 0
    for t in external_data_helper._get_all_tensors(model):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        count += 1
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        what = f"tensor {t.name!r} stores its data in {loc!r}"
        full = os.path.realpath(os.path.join(folder, loc))
        if not loc or os.path.isabs(loc) or os.path.commonpath([full, folder]) != folder:
            raise StageError(STAGE, path, f"{what}, outside the model's folder {folder}: external data must be a "
                                          "file beside the model or below its folder")
        if not os.path.exists(full):
            raise StageError(STAGE, path, f"{what}: file not found in {folder}")
        if not os.path.isfile(full):
            raise StageError(STAGE, path, f"{what}: not a regular file")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", 0))
        except ValueError:
            raise StageError(STAGE, path, f"{what}: offset {info.get('offset')!r} and length "
                                          f"{info.get('length')!r} must be integers") from None
        size = os.path.getsize(full)
        if offset < 0 or length < 0 or offset + length > size:
            raise StageError(STAGE, path, f"{what} at offset {offset}, length {length}: the file holds only "
                                          f"{size} bytes (truncated?)")
    return count


# element types no kernel computes on, in tensors the model holds (its inputs are checked by name)
UNCOMPUTABLE = {8: "string", 14: "complex64", 15: "complex128"}


def dtype_name(elem_type: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"unknown element type {elem_type}"


def check_tensors(model, path: str) -> None:
    """Refuse initializers of a type nothing here computes with: strings and complex numbers."""
    for t in model.graph.initializer:
        if t.data_type in UNCOMPUTABLE:
            raise StageError(STAGE, path, f"initializer {t.name!r} is a {UNCOMPUTABLE[t.data_type]} tensor: only "
                                          "numeric tensors can be compiled")


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
            raise StageError(STAGE, path, f"input {i.name!r} has element type {dtype_name(tt.elem_type)}, which "
                                          f"cannot be compiled (inputs may be: {', '.join(_ONNX_DTYPES.values())})")
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
                elif d.HasField("dim_value"):
                    raise StageError(STAGE, path, f"input {i.name!r} has a dimension of {d.dim_value}: every "
                                                  "dimension must be at least 1")
                else:
                    sym = d.dim_param or "?"
                    raise StageError(
                        STAGE, path,
                        f"input {i.name!r} has a dynamic dimension {sym!r}; dynamic shapes are not "
                        f"supported: pin it in the declaration, e.g. inputs={{{i.name!r}: (1, ...)}}")
        if problem := executor_plan.tensor_beyond_wasm32(f"input {i.name!r}", shape, dtype):
            raise StageError(STAGE, path, problem)
        out.append({"name": i.name, "shape": shape, "dtype": dtype})
    if not out:
        raise StageError(STAGE, path, "the model has no inputs")
    given = {i.name for i in model.graph.input} | inits
    for o in model.graph.output:
        if o.name in given:
            raise StageError(STAGE, path, f"output {o.name!r} is the model's own input or constant "
                                          f"{o.name!r}: the model computes nothing for it")
    return out


def failing_node(e: BaseException) -> str:
    """The ONNX node TVM's importer was converting when it raised ``e`` (its converter loop
    holds it as ``node``), as "operator 'Expand' (node 'n')"; else "the model"."""
    tb, node = e.__traceback__, None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("node")
        if hasattr(candidate, "op_type") and hasattr(candidate, "input"):
            node = candidate
        tb = tb.tb_next
    if node is None:
        return "the model"
    return f"operator {node.op_type!r}" + (f" (node {node.name!r})" if node.name else "")


def run(onnx_path: str, p: ImportParams, out_module: str, out_io: str) -> dict:
    model = load_onnx(onnx_path)
    inputs = graph_inputs(model, dict(p.inputs), onnx_path)
    frontend.canonicalize(model)

    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    shape_dict = {i["name"]: i["shape"] for i in inputs}
    dtype_dict = {i["name"]: i["dtype"] for i in inputs}
    try:
        with frontend.converters():
            mod = from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict, keep_params_in_input=False)
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise StageError(STAGE, onnx_path, f"TVM cannot import {failing_node(e)}: "
                                           + (msg[-1] if msg else type(e).__name__)) from None
    mod = frontend.fast_erf(frontend.constant_powers(frontend.pairwise_max_min(mod)))
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
