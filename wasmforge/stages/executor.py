"""Stage 4, executor: the lowered Relax ``main`` -> a static plan, emitted as C tables.

After the build pipeline, the ``main`` of a static-shape model is straight-line code:
``vm.alloc_storage``, ``vm.alloc_tensor``, kernel calls, ``vm.builtin.reshape`` views,
``vm.kill_object``, input checks and constants. ``extract`` turns it into a ``Program``
(storages, tensors, calls, constants, inputs, outputs; kernels on constants alone, such as
the Winograd weight transform, become once-calls that an instance runs on its first run); ``executor_plan.plan_arena`` gives
every storage a fixed offset in one arena, sharing bytes between storages whose lifetimes do
not overlap; ``emit_c`` writes the tables the runtime's interpreter walks (``wasmforge_plan.h``).
Nothing is allocated while the model runs. Dynamic shapes are refused.

Outputs: ``executor.c``, ``weights.bin`` (every constant, 64-byte aligned), ``weights.S``
(``.incbin`` of weights.bin, so 100 MB of weights never go through the C parser) and
``plan.json`` (the plan, human-readable, for tests and reports).
"""
from __future__ import annotations

import json
import os

from wasmforge.errors import StageError
from wasmforge.stages import executor_plan
from wasmforge.stages.executor_plan import (
    ALIGN,
    BEYOND_WASM32,
    DL_DTYPES,
    WASM32_MEMORY,
    Call,
    Program,
    Tensor,
    align,
    check_plan,
    nbytes,
    plan_arena,
    storage_intervals,
    tensor_beyond_wasm32,
)
from wasmforge.store import files

STAGE = "executor"
CODE = (__file__, executor_plan.__file__)   # what the stage runs: part of its key


# ---------------------------------------------------------------- from Relax

def _static(shape_expr, what: str, path: str) -> tuple[int, ...]:
    vals = getattr(shape_expr, "values", None)
    if vals is None:
        raise StageError(STAGE, path, f"{what}: shape is not known at compile time "
                                      "(dynamic shapes are not supported)")
    out = []
    for v in vals:
        if not hasattr(v, "value") or not isinstance(v.value, int):
            raise StageError(STAGE, path, f"{what}: dimension {v} is symbolic "
                                          "(dynamic shapes are not supported)")
        out.append(int(v.value))
    return tuple(out)


def _op_name(op) -> str:
    for attr in ("global_symbol", "name_hint", "name"):
        if hasattr(op, attr):
            return str(getattr(op, attr))
    return type(op).__name__


_IGNORED = {"relax.null_value", "relax.vm.kill_object", "vm.builtin.check_tensor_info",
            "vm.builtin.match_shape", "vm.builtin.check_shape_info", "vm.builtin.check_prim_value_info",
            "vm.builtin.check_tuple_info"}


def extract(mod, path: str) -> Program:
    """Walk the lowered ``main`` of ``mod`` into a Program."""
    import numpy as np
    import tvm
    from tvm import relax, tirx

    main = mod["main"]
    prog = Program()
    env: dict = {}          # Var -> ("tensor", tid) | ("storage", sid) | ("tuple", [..]) | None
    consts: dict = {}       # GenericConst -> tensor id

    def const_tensor(c) -> int:
        if c not in consts:
            arr = c.value.numpy()
            if str(arr.dtype) not in DL_DTYPES:
                raise StageError(STAGE, path, f"constant of unsupported dtype {arr.dtype}")
            prog.consts.append(np.ascontiguousarray(arr))
            consts[c] = prog.tensor(Tensor(tuple(arr.shape), str(arr.dtype), "const", len(prog.consts) - 1))
        return consts[c]

    def value_of(x):
        if isinstance(x, tvm.ir.expr.Var):
            if x not in env:
                raise StageError(STAGE, path, f"lowered main uses {x.name} before defining it")
            return env[x]
        if isinstance(x, tvm.ir.expr.GenericConst) and hasattr(x.value, "numpy"):
            return ("tensor", const_tensor(x))
        if isinstance(x, tvm.ir.expr.Tuple):
            return ("tuple", [value_of(f) for f in x.fields])
        if isinstance(x, tvm.ir.expr.TupleGetItem):
            tup = value_of(x.tuple_value)
            return tup[1][x.index]
        if isinstance(x, (tirx.IntImm,)) or type(x).__name__ == "IntImm":
            return ("int", int(x.value))
        if type(x).__name__ == "FloatImm":
            return ("float", float(x.value))
        if hasattr(x, "value") and type(x).__name__ == "PrimValue":
            return value_of(x.value)
        raise StageError(STAGE, path, f"unsupported argument in lowered main: {type(x).__name__} {x}")

    for i, p in enumerate(main.params):
        ty = p.ty
        shape = _static(getattr(ty, "shape", None), f"input {p.name}", path)
        env[p] = ("tensor", prog.tensor(Tensor(shape, str(ty.dtype), "input", i)))
        prog.inputs.append((p.name, env[p][1]))

    derived: set[int] = set()   # tensors once-calls write
    once: list[Call] = []

    def constant(tid: int) -> bool:
        return prog.tensors[tid].region == "const" or tid in derived

    def once_call(args) -> bool:
        """A kernel whose inputs are all constants writes a constant (destination-passing:
        its output is the last argument): it runs once, into a storage of its own."""
        tensors = [v for kind, v in args if kind == "tensor"]
        if not tensors or prog.tensors[tensors[-1]].region != "storage" or not all(map(constant, tensors[:-1])):
            return False
        out = prog.tensors[tensors[-1]]
        prog.storages.append(nbytes(out.shape, out.dtype))
        prog.persistent.add(len(prog.storages) - 1)
        prog.tensors[tensors[-1]] = Tensor(out.shape, out.dtype, "storage", len(prog.storages) - 1, 0)
        derived.add(tensors[-1])
        return True

    body = main.body
    for block in body.blocks:
        for b in block.bindings:
            v = b.value
            if not isinstance(v, relax.Call):
                env[b.var] = value_of(v)     # aliases, tuples, constants
                continue
            name = _op_name(v.op)
            if name in _IGNORED:
                env[b.var] = None
            elif name == "relax.vm.alloc_storage":
                size = _static(v.args[0], f"storage {b.var.name}", path)
                prog.storages.append(size[0])
                env[b.var] = ("storage", len(prog.storages) - 1)
            elif name == "relax.vm.alloc_tensor":
                storage = value_of(v.args[0])
                shape = _static(v.args[2], f"tensor {b.var.name}", path)
                dtype = str(v.args[3].value)
                env[b.var] = ("tensor", prog.tensor(Tensor(shape, dtype, "storage", storage[1],
                                                           int(v.args[1].value))))
            elif name == "relax.builtin.stop_lift_params":   # kept from FoldConstant: the value itself
                env[b.var] = value_of(v.args[0])
            elif name == "vm.builtin.reshape":
                src = prog.tensors[value_of(v.args[0])[1]]
                shape = _static(v.args[1], f"reshape {b.var.name}", path)
                env[b.var] = ("tensor", prog.tensor(Tensor(shape, src.dtype, src.region, src.ref, src.offset)))
            elif isinstance(v.op, tvm.ir.GlobalVar):
                fn = mod[v.op]
                if not isinstance(fn, tirx.PrimFunc):
                    raise StageError(STAGE, path, f"call of a non-kernel function {name}")
                args = []
                for a in v.args:
                    kind, val = value_of(a)
                    if kind not in ("tensor", "int", "float"):
                        raise StageError(STAGE, path, f"kernel {name}: unsupported argument kind {kind}")
                    args.append((kind, val))
                (once if once_call(args) else prog.calls).append(Call(name, args))
                env[b.var] = None
            else:
                raise StageError(STAGE, path, f"unsupported operation in lowered main: {name} "
                                              "(not a static-shape model the executor can plan)")
    # once-calls read constants only, and no other call writes what they write: they can go first
    prog.calls[:0] = once
    prog.num_once = len(once)
    ret = value_of(body.body)
    rets = ret[1] if ret[0] == "tuple" else [ret]
    for r in rets:
        if r is None or r[0] != "tensor":
            raise StageError(STAGE, path, f"main returns a non-tensor value {r}")
        prog.outputs.append(r[1])
    return prog


# ---------------------------------------------------------------- to C

def layout_weights(prog: Program) -> tuple[list[int], int]:
    offs, off = [], 0
    for arr in prog.consts:
        offs.append(off)
        off = align(off + arr.nbytes)
    return offs, off


def write_weights(prog: Program, offs: list[int], total: int, path: str) -> None:
    with files.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for arr, off in zip(prog.consts, offs):
                f.seek(off)
                f.write(arr.tobytes())
            f.truncate(total)


def _c_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid C string literal for our names


def emit_c(prog: Program, arena_offsets: dict[int, int], arena_bytes: int,
           weight_offsets: list[int], weights_bytes: int, io: dict) -> str:
    kernels = sorted({c.kernel for c in prog.calls})
    kidx = {k: i for i, k in enumerate(kernels)}
    region = {"storage": "WF_REGION_ARENA", "const": "WF_REGION_WEIGHTS", "input": "WF_REGION_INPUT"}
    shapes: list[int] = []
    trows = []
    for t in prog.tensors:
        if t.region == "storage":
            off, index = arena_offsets.get(t.ref, 0) + t.offset, 0
        elif t.region == "const":
            off, index = weight_offsets[t.ref], 0
        else:
            off, index = 0, t.ref
        code, bits = DL_DTYPES[t.dtype]
        trows.append(f"  {{{region[t.region]}, {index}u, {off}u, {len(t.shape)}, "
                     f"{{{code}, {bits}, 1}}, {len(shapes)}u}},")
        shapes.extend(t.shape or ())
    arows, crows = [], []
    for c in prog.calls:
        crows.append(f"  {{{kidx[c.kernel]}u, {len(arows)}u, {len(c.args)}u}},")
        for kind, v in c.args:
            if kind == "tensor":
                arows.append(f"  {{WF_ARG_TENSOR, {v}u, 0, 0.0}},")
            elif kind == "int":
                arows.append(f"  {{WF_ARG_INT, 0u, {int(v)}LL, 0.0}},")
            else:
                arows.append(f"  {{WF_ARG_FLOAT, 0u, 0, {float(v)!r}}},")
    lines = ["/* Generated by wasmforge's executor stage. Do not edit. */",
             '#include "wasmforge_plan.h"', "",
             "extern const uint8_t wasmforge_weights[];",
             "/* Defined in the kernel object. Naming it here makes a linker that pulls this",
             "   executor out of lib<model>.a pull the kernels too: nothing else names them,",
             "   since the executor finds kernels by name in the system-lib registry. */",
             "extern void* __tvm_ffi__library_ctx;",
             "__attribute__((used)) static void* const* const wf_keep_kernels = &__tvm_ffi__library_ctx;", "",
             f"static uint8_t arena[{max(arena_bytes, 1)}] __attribute__((aligned({ALIGN})));"]
    io_rows = {"inputs": [], "outputs": []}
    for kind, tids in (("inputs", [tid for _, tid in prog.inputs]), ("outputs", prog.outputs)):
        for i, tid in enumerate(tids):
            t = prog.tensors[tid]
            n = nbytes(t.shape, t.dtype)
            buf = f"{kind[:-1]}{i}"
            lines.append(f"static uint8_t {buf}[{max(align(n), ALIGN)}] __attribute__((aligned({ALIGN})));")
            io_rows[kind].append(f"  {{{_c_str(io[kind][i]['name'])}, {buf}, {n}u, {tid}u}},")
    lines += ["", f"static const char* const kernel_names[{max(len(kernels), 1)}] = {{"]
    lines += [f"  {_c_str(k)}," for k in kernels] or ["  0,"]
    lines += ["};", f"static void* kernel_ptrs[{max(len(kernels), 1)}];",
              f"static const int64_t shapes[{max(len(shapes), 1)}] = {{"]
    lines += ["  " + ", ".join(f"{s}LL" for s in shapes[i:i + 16]) + "," for i in range(0, len(shapes), 16)] or ["  0,"]
    lines += ["};", f"static const wf_tensor tensors[{max(len(trows), 1)}] = {{"] + (trows or ["  {0},"])
    lines += ["};", f"static DLTensor dltensors[{max(len(trows), 1)}];",
              f"static const wf_arg args[{max(len(arows), 1)}] = {{"] + (arows or ["  {0},"])
    lines += ["};", f"static const wf_call calls[{max(len(crows), 1)}] = {{"] + (crows or ["  {0},"])
    lines += ["};", f"static const wf_io inputs[{len(io_rows['inputs'])}] = {{"] + io_rows["inputs"]
    lines += ["};", f"static const wf_io outputs[{len(io_rows['outputs'])}] = {{"] + io_rows["outputs"]
    max_args = max((len(c.args) for c in prog.calls), default=0)
    lines += ["};", "", "const wf_plan wasmforge_plan = {",
              f"  {len(kernels)}u, kernel_names, kernel_ptrs,",
              f"  {len(prog.tensors)}u, tensors, dltensors, shapes,",
              f"  {len(arows)}u, args, {len(crows)}u, calls, {max_args}u, {prog.num_once}u,",
              f"  {len(prog.inputs)}u, inputs, {len(prog.outputs)}u, outputs,",
              f"  arena, {arena_bytes}u, wasmforge_weights, {weights_bytes}u,", "};", ""]
    return "\n".join(lines)


def emit_asm(weights_bin_name: str, weights_bytes: int) -> str:
    return "\n".join([
        "/* Generated by wasmforge's executor stage: the weights as one data segment. */",
        '\t.section\t.rodata.wasmforge_weights,"",@',
        "\t.globl\twasmforge_weights",
        "\t.type\twasmforge_weights,@object",
        f"\t.p2align\t{ALIGN.bit_length() - 1}",
        "wasmforge_weights:",
        f'\t.incbin\t"{weights_bin_name}"',
        # one byte of padding so an empty weight blob still defines the symbol
        "\t.byte\t0",
        f"\t.size\twasmforge_weights, {weights_bytes + 1}", ""])


# ---------------------------------------------------------------- the stage

def check_io(prog: Program, io: dict, path: str) -> None:
    """The plan's inputs and outputs must be the model's, in order, with the same shapes."""
    for kind, tids in (("inputs", [t for _, t in prog.inputs]), ("outputs", prog.outputs)):
        declared = io[kind]
        if len(declared) != len(tids):
            raise StageError(STAGE, path, f"main has {len(tids)} {kind}, the model {len(declared)}")
        for d, tid in zip(declared, tids):
            t = prog.tensors[tid]
            if list(t.shape) != list(d["shape"]) or t.dtype != d["dtype"]:
                raise StageError(STAGE, path, f"{kind[:-1]} {d['name']!r}: plan has {t.shape} {t.dtype}, "
                                              f"the model {d['shape']} {d['dtype']}")


def check_memory(prog: Program, io: dict, arena_bytes: int, weights_bytes: int, path: str) -> None:
    """Refuse a plan a wasm32 module cannot hold: a tensor of 4 GiB or more, or inputs,
    outputs, arena and weights that together exceed the 4 GiB address space."""
    named = [(f"input {d['name']!r}", tid) for d, (_, tid) in zip(io["inputs"], prog.inputs)]
    named += [(f"output {d['name']!r}", tid) for d, tid in zip(io["outputs"], prog.outputs)]
    for what, tid in named:
        if problem := tensor_beyond_wasm32(what, prog.tensors[tid].shape, prog.tensors[tid].dtype):
            raise StageError(STAGE, path, problem)
    io_bytes = sum(align(nbytes(prog.tensors[tid].shape, prog.tensors[tid].dtype)) for _, tid in named)
    total = arena_bytes + weights_bytes + io_bytes
    if total >= WASM32_MEMORY:
        raise StageError(STAGE, path, f"the model needs {total:,} bytes of memory (arena {arena_bytes:,}, "
                                      f"weights {weights_bytes:,}, inputs and outputs {io_bytes:,}): "
                                      f"{BEYOND_WASM32}")


def run(lowered_json: str, io_json: str, out_dir: str) -> dict:
    import tvm

    with open(lowered_json) as f:
        mod = tvm.ir.load_json(f.read())
    io = files.read_json(io_json)
    prog = extract(mod, lowered_json)
    check_io(prog, io, lowered_json)
    offsets, arena_bytes = plan_arena(prog)
    check_plan(prog, offsets)
    woffs, wbytes = layout_weights(prog)
    check_memory(prog, io, arena_bytes, wbytes, lowered_json)
    write_weights(prog, woffs, wbytes, os.path.join(out_dir, "weights.bin"))
    files.write_bytes(os.path.join(out_dir, "weights.S"), emit_asm("weights.bin", wbytes).encode())
    files.write_bytes(os.path.join(out_dir, "executor.c"),
                      emit_c(prog, offsets, arena_bytes, woffs, wbytes, io).encode())
    naive = sum(align(prog.storages[s]) for s in storage_intervals(prog))
    plan = {"calls": [{"kernel": c.kernel, "args": c.args} for c in prog.calls], "once_calls": prog.num_once,
            "persistent_bytes": sum(align(prog.storages[s]) for s in prog.persistent),
            "kernels": sorted({c.kernel for c in prog.calls}),
            "arena_bytes": arena_bytes, "arena_bytes_without_sharing": naive,
            "weights_bytes": wbytes, "constants": len(prog.consts),
            "storages": len(prog.storages), "tensors": len(prog.tensors)}
    files.write_json(os.path.join(out_dir, "plan.json"), plan)
    return {k: v for k, v in plan.items() if k not in ("calls", "kernels")}
