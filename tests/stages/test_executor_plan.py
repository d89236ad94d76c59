"""The executor's static plan: hand-made programs for the arena planner, and small real
graphs lowered by TVM for the extraction from Relax."""
from __future__ import annotations

import random

import pytest

from wasmforge.errors import StageError
from wasmforge.stages import executor
from wasmforge.stages.executor_plan import (
    Call,
    Program,
    Tensor,
    check_plan,
    plan_arena,
    storage_intervals,
)


def chain(sizes):
    """x -> k0 -> s0 -> k1 -> s1 -> ...: each kernel reads the previous storage."""
    p = Program()
    x = p.tensor(Tensor((4,), "float32", "input", 0))
    p.inputs.append(("x", x))
    prev = x
    for i, n in enumerate(sizes):
        p.storages.append(n)
        t = p.tensor(Tensor((n // 4,), "float32", "storage", i))
        p.calls.append(Call(f"k{i}", [("tensor", prev), ("tensor", t)]))
        prev = t
    p.outputs.append(prev)
    return p


def test_chain_reuses_memory_and_never_overlaps_live_storages():
    p = chain([4096, 1024, 4096, 1024, 4096])
    offsets, arena = plan_arena(p)
    check_plan(p, offsets)
    # a chain needs at most two live buffers at a time
    assert arena <= 4096 + 4096
    assert arena < sum(executor.align(n) for n in p.storages)


def test_output_stays_live_to_the_end():
    p = chain([256, 256, 256])
    # a fourth kernel writes a scratch storage after the output was produced
    p.storages.append(256)
    scratch = p.tensor(Tensor((64,), "float32", "storage", 3))
    out = p.outputs[0]
    p.calls.append(Call("late", [("tensor", out), ("tensor", scratch)]))
    assert storage_intervals(p)[2] == (2, 4)   # output storage: produced at 2, live to the end
    offsets, _ = plan_arena(p)
    check_plan(p, offsets)
    assert offsets[3] != offsets[2]


def test_residual_keeps_both_operands():
    """a = k0(x); b = k1(a); c = add(a, b): a and b are alive together."""
    p = Program()
    x = p.tensor(Tensor((16,), "float32", "input", 0))
    p.inputs.append(("x", x))
    p.storages += [64, 64, 64]
    a, b, c = (p.tensor(Tensor((16,), "float32", "storage", i)) for i in range(3))
    p.calls += [Call("k0", [("tensor", x), ("tensor", a)]), Call("k1", [("tensor", a), ("tensor", b)]),
                Call("add", [("tensor", a), ("tensor", b), ("tensor", c)])]
    p.outputs.append(c)
    offsets, arena = plan_arena(p)
    check_plan(p, offsets)
    assert len({offsets[0], offsets[1], offsets[2]}) == 3
    assert arena == 3 * 64


def test_a_persistent_storage_is_live_for_the_whole_program_and_shares_no_byte():
    """A once-call's result (the Winograd weights) lives as long as the instance: no storage
    of any call may reuse its bytes, though it is read by one call only."""
    p = chain([4096, 4096, 4096, 4096])
    p.storages.append(8192)
    w = p.tensor(Tensor((2048,), "float32", "storage", len(p.storages) - 1))
    p.persistent.add(len(p.storages) - 1)
    p.calls.insert(0, Call("winograd_weight", [("tensor", w)]))
    p.num_once = 1
    assert storage_intervals(p)[len(p.storages) - 1] == (0, len(p.calls))
    offsets, arena = plan_arena(p)
    check_plan(p, offsets)
    ow = offsets[len(p.storages) - 1]
    for sid in range(4):
        assert offsets[sid] + 4096 <= ow or ow + 8192 <= offsets[sid]


def test_check_plan_catches_an_overlap():
    p = chain([256, 256, 256])
    with pytest.raises(AssertionError, match="alive together and overlap"):
        check_plan(p, {0: 0, 1: 0, 2: 512})


def test_random_programs_plan_safely():
    rng = random.Random(7)
    for _ in range(200):
        p = Program()
        x = p.tensor(Tensor((1,), "float32", "input", 0))
        p.inputs.append(("x", x))
        live = [x]
        for i in range(rng.randint(1, 25)):
            p.storages.append(rng.choice([64, 100, 256, 1000, 4096]))
            t = p.tensor(Tensor((p.storages[-1] // 4,), "float32", "storage", i))
            reads = rng.sample(live, min(len(live), rng.randint(1, 3)))
            p.calls.append(Call(f"k{i}", [("tensor", r) for r in reads] + [("tensor", t)]))
            live.append(t)
        p.outputs.append(live[-1])
        offsets, arena = plan_arena(p)
        check_plan(p, offsets)
        assert arena <= sum(executor.align(n) for n in p.storages)


def lower(onnx_path, tmp_path):
    from wasmforge.stages import importer, relax_build

    importer.run(onnx_path, importer.ImportParams(), str(tmp_path / "m.json"), str(tmp_path / "io.json"))
    relax_build.run(str(tmp_path / "m.json"), str(tmp_path / "no-log"), relax_build.BuildParams(),
                    str(tmp_path / "lowered.json"))
    import tvm

    return tvm.ir.load_json(open(tmp_path / "lowered.json").read())


def test_extract_from_a_lowered_onnx_graph(tiny_onnx, tmp_path):
    mod = lower(tiny_onnx, tmp_path)
    prog = executor.extract(mod, "tiny")
    assert [name for name, _ in prog.inputs] == ["x"]
    assert len(prog.outputs) == 1 and prog.tensors[prog.outputs[0]].shape == (1, 10)
    # every kernel called is a PrimFunc of the module, every tensor argument is planned
    import tvm

    prims = {gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert {c.kernel for c in prog.calls} <= prims
    consts = [t for t in prog.tensors if t.region == "const"]
    assert consts and all(prog.consts[t.ref].shape == t.shape for t in consts)
    offsets, arena = plan_arena(prog)
    check_plan(prog, offsets)
    # the residual input x is read by the add after the conv: it is an input, never in the arena
    assert prog.tensors[prog.inputs[0][1]].region == "input"
    src = executor.emit_c(prog, offsets, arena, *executor.layout_weights(prog),
                          {"inputs": [{"name": "x"}], "outputs": [{"name": "y"}]})
    assert "const wf_plan wasmforge_plan" in src and '"x"' in src


def test_extract_refuses_dynamic_shapes(tmp_path):
    import tvm
    from tvm.script import relax as R

    from wasmforge.stages import relax_build

    @tvm.script.ir_module
    class Dyn:
        @R.function
        def main(x: R.Tensor(("n", 4), "float32")):
            return R.add(x, x)

    p = relax_build.BuildParams()
    with relax_build.target(p):
        lowered = tvm.transform.Sequential(relax_build.passes(relax_build.target(p), False))(Dyn)
    with pytest.raises(StageError, match="dynamic shapes are not supported"):
        executor.extract(lowered, "dyn.json")
