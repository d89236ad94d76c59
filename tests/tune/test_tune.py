"""Autotuning measured in wasmtime, on a tiny model: a short real tuning run writes a log,
the next build applies it, and the module still validates."""
from __future__ import annotations

import json
import os
from collections import Counter

from conftest import make_tiny_onnx, sha


def records(log_dir):
    """A tuning log's records, parsed: [workload index, record] each."""
    with open(os.path.join(log_dir, "database_tuning_record.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def tuned_info(doit):
    return json.load(open(doit.path("tiny", "relax_build", "stage.json")))["result"]["tuning"]


def test_tune_writes_a_log_the_build_applies_and_that_resumes(doit, tmp_path):
    make_tiny_onnx(os.path.join(doit.decls, "tiny.onnx"))
    doit.declare("tiny.py", "from wasmforge.dsl import model\nmodel('tiny', onnx='tiny.onnx', tune_trials=10)\n")
    doit("build:tiny")                                     # default schedules first
    default_kernels = sha(doit.path("tiny", "emit", "kernels.o"))
    assert json.load(open(doit.path("tiny", "relax_build", "stage.json")))["result"]["tuning"] is None

    res = doit("tune:tiny")
    log = os.path.join(doit.decls, "tiny.tuning")
    records = [json.loads(line) for line in open(os.path.join(log, "database_tuning_record.json")) if line.strip()]
    assert len(records) >= 8
    assert "tune: " in res.stderr and "trials | task" in res.stderr and "min left" in res.stderr

    doit("build:tiny")
    info = tuned_info(doit)
    assert info["records"] == len(records) and info["ignored_other_target"] == 0
    assert any(k.startswith("fused_conv2d") for k in info["tuned_kernels"]), info
    assert sha(doit.path("tiny", "emit", "kernels.o")) != default_kernels   # tuned code differs
    assert json.load(open(doit.path("tiny", "report.json")))["passed"] is True

    again = doit("tune:tiny")                               # budget spent: nothing to do
    assert "nothing to do" in again.stderr
    more = doit("tune:tiny", "--trials", "16")              # resumes with the records it has
    assert f"({len(records)} already in" in more.stderr
    assert sum(1 for line in open(os.path.join(log, "database_tuning_record.json")) if line.strip()) > len(records)

    # --focus 1: only the kernel that costs the model the most time gets the new trials
    def per_workload():
        return Counter(json.loads(line)[0] for line in open(os.path.join(log, "database_tuning_record.json"))
                       if line.strip())
    before = per_workload()
    focused = doit("tune:tiny", "--trials", str(sum(before.values()) + 4), "--focus", "1")
    assert "tune: focus on " in focused.stderr
    grew = [w for w, n in per_workload().items() if n > before.get(w, 0)]
    assert len(grew) == 1, (before, per_workload())

    # --fresh: searched from scratch in a scratch database, whose records join the log at the end
    n = sum(per_workload().values())
    doit("tune:tiny", "--trials", str(n + 4), "--focus", "1", "--fresh")
    assert sum(per_workload().values()) > n
    doit("build:tiny")
    assert tuned_info(doit)["records"] == sum(per_workload().values())
    assert json.load(open(doit.path("tiny", "report.json")))["passed"] is True


def test_jobs_tune_side_by_side_and_every_record_lands_in_the_log_under_its_workload(doit):
    make_tiny_onnx(os.path.join(doit.decls, "tiny.onnx"))
    doit.declare("tiny.py", "from wasmforge.dsl import model\nmodel('tiny', onnx='tiny.onnx', tune_trials=12)\n")
    log = os.path.join(doit.decls, "tiny.tuning")

    def per_task():
        """record count per workload (by its TVMScript), through the log's own workload table"""
        from tvm.s_tir import meta_schedule as ms

        db = ms.database.JSONDatabase(path_workload=os.path.join(log, "database_workload.json"),
                                      path_tuning_record=os.path.join(log, "database_tuning_record.json"))
        return Counter(r.workload.mod.script() for r in db.get_all_tuning_records())

    # an empty log: each job's scratch database numbers its workloads from 0, and the merge
    # must re-index them to the log's
    first = doit("tune:tiny", "--jobs", "2")
    assert "2 jobs side by side" in first.stderr
    assert "tune[job 1/2]: " in first.stderr and "tune[job 2/2]: " in first.stderr
    counts = per_task()
    workloads = [json.loads(line) for line in open(os.path.join(log, "database_workload.json")) if line.strip()]
    assert sum(counts.values()) >= 10 and len(workloads) == len(counts) >= 2, (counts, len(workloads))
    assert len({w[0] for w in workloads}) == len(workloads)          # no workload twice

    # resumed from a copy of the log, the new records join it; with --fresh, from empty scratch
    n = sum(counts.values())
    doit("tune:tiny", "--trials", str(n + 8), "--jobs", "2")
    doit("tune:tiny", "--trials", str(n + 16), "--jobs", "2", "--fresh")
    after = per_task()
    assert sum(after.values()) >= n + 14 and set(after) == set(counts), (counts, after)
    assert not os.path.exists(os.path.join(log, "database_workload.json.tmp"))
    doit("build:tiny")
    assert tuned_info(doit)["records"] == sum(after.values())
    assert json.load(open(doit.path("tiny", "report.json")))["passed"] is True


def test_threads_tune_a_log_of_their_own_that_only_the_threads_variant_links(doit):
    """``tune --threads 2``: kernels tuned for 2 cores and measured on 2 threads, in the
    model's threads log, seeded from the one-thread log without copying it. The threads
    variant then builds its own kernels (relax_build_threads, emit_threads) from that log
    first; the portable module keeps its own."""
    from wasmforge.engines.host import WasmModel
    from wasmforge.stages.relax_build import BuildParams
    from wasmforge.tune import count_records, extract_tasks, task_cost_ms

    make_tiny_onnx(os.path.join(doit.decls, "tiny.onnx"))
    doit.declare("tiny.py", "from wasmforge.dsl import model\nmodel('tiny', onnx='tiny.onnx', tune_trials=8)\n")
    one, mt = os.path.join(doit.decls, "tiny.tuning"), os.path.join(doit.decls, "tiny.threads.tuning")
    doit("tune:tiny")
    n_one = count_records(one)
    doit("build:tiny")
    portable = sha(doit.path("tiny", "emit", "kernels.o"))
    assert not os.path.exists(doit.path("tiny", "emit_threads"))   # no threads log: the portable kernels

    res = doit("tune:tiny", "--threads", "2", "--trials", "8")
    assert "(0 already in" in res.stderr and "tiny.threads.tuning" in res.stderr
    assert "re-timing the tuned kernels' best schedules" in res.stderr
    rechecked = records(mt)
    assert all(r[1][2]["num-cores"] == 2 for r in rechecked)   # timed on 2 threads, every one
    assert count_records(one) == n_one                     # the one-thread log is untouched
    # the run ends re-timing each kernel's best against the one-thread log's best, side by
    # side: those two records are all that kernel keeps
    per_kernel = {}
    for r in rechecked:
        per_kernel.setdefault(r[0], []).append(r[1])
    assert per_kernel and all(len(v) <= 2 for v in per_kernel.values()), per_kernel
    one_traces = {json.dumps(json.loads(line)[1][0]) for line in open(os.path.join(one, "database_tuning_record.json"))}
    assert any(json.dumps(r[1][0]) in one_traces for r in rechecked)    # a one-thread schedule, re-timed
    # --recheck alone re-times them again, with no search: the same schedules, new times
    res = doit("tune:tiny", "--threads", "2", "--recheck")
    again = records(mt)
    assert sorted(json.dumps(r[1][0]) for r in again) == sorted(json.dumps(r[1][0]) for r in rechecked)
    times = lambda recs: {(r[0], json.dumps(r[1][0])): r[1][1] for r in recs}   # noqa: E731
    assert times(again).keys() == times(rechecked).keys() and times(again) != times(rechecked)
    assert "tune --recheck done" in res.stderr and "'kept': " in res.stderr
    res = doit("tune:tiny", "--recheck", check=False)
    assert res.returncode != 0 and "--recheck re-times the threads variant's log: give --threads T" in res.stderr

    doit("build:tiny")
    assert sha(doit.path("tiny", "emit", "kernels.o")) == portable
    built = json.load(open(doit.path("tiny", "relax_build_threads", "stage.json")))["result"]
    assert built["threads_tuning_log"] == ["database_workload.json", "database_tuning_record.json"]
    assert any(k.startswith("fused_conv2d") for k in built["tuning"]["tuned_kernels"]), built
    # a kernel takes the threads log's schedule when its time there (2 threads) beats the
    # one-thread log's best, and only then
    tasks = extract_tasks(doit.path("tiny", "import", "model.json"), BuildParams())
    on_one, on_two = task_cost_ms(one, tasks), task_cost_ms(mt, tasks)
    assert built["tuning"]["from_threads_log"] == sorted(n for n in on_two if on_two[n] < on_one[n])
    # (its kernels may still be the portable ones byte for byte: seeded from the one-thread
    # log, the search can time a one-thread schedule again, and win with it on 2 threads)
    report = json.load(open(doit.path("tiny", "report.threads.json")))
    assert report["passed"] is True and report["threads"] == 2
    assert {"relax_build_threads", "emit_threads", "link_threads"} <= set(report["stage_seconds"])
    # other kernels may sum in another order: checked against onnxruntime, not bit for bit
    assert not any(k.startswith("identical_to") for r in report["inputs"] for k in r["outputs"]["y"])
    with WasmModel(doit.path("tiny", "tiny.threads.wasm"), threads=2) as m:
        assert m.metadata["build"]["threads_tuning_log"] == built["threads_tuning_log"]
    # more one-thread tuning: the threads log's kernels are re-timed against the new one-thread
    # schedules (its times were taken against the old ones)
    res = doit("tune:tiny", "--trials", str(n_one + 6))
    assert "re-timing the threads log" in res.stderr and "against the new one-thread ones" in res.stderr
    assert count_records(one) > n_one
    after = records(mt)
    assert times(after) != times(again) and all(r[1][2]["num-cores"] == 2 for r in after)


def test_split_tasks_deals_the_costliest_first_to_each_job_in_turn():
    from wasmforge.tune import split_tasks

    assert split_tasks(["a", "b", "c", "d", "e"], 2) == [["a", "c", "e"], ["b", "d"]]
    assert split_tasks(["a"], 4) == [["a"]]
    assert split_tasks(["a", "b"], 1) == [["a", "b"]]


def test_the_search_population_scales_with_the_batch_up_to_metaschedules_default():
    from wasmforge.tune import search_population

    assert [search_population(n) for n in (2, 4, 16, 64)] == [64, 128, 512, 512]


def test_focus_picks_the_costliest_tasks_untuned_first():
    from math import inf

    from wasmforge.tune import focus_tasks

    cost = {"a": 1.0, "b": 30.0, "c": inf, "d": 5.0}
    assert focus_tasks(cost, 2) == ["c", "b"]
    assert focus_tasks(cost, 9) == ["c", "b", "d", "a"]
    # untuned tasks: the most work first (a new convolution before a layout transform)
    cost = {"copy": inf, "conv": inf, "tuned": 30.0}
    assert focus_tasks(cost, 2, {"copy": 1.0, "conv": 2e8, "tuned": 1e8}) == ["conv", "copy"]


def test_a_log_for_another_target_is_ignored_with_a_warning(doit):
    make_tiny_onnx(os.path.join(doit.decls, "tiny.onnx"))
    doit.declare("tiny.py", "from wasmforge.dsl import model\nmodel('tiny', onnx='tiny.onnx', tune_trials=6)\n")
    doit("tune:tiny")
    path = os.path.join(doit.decls, "tiny.tuning", "database_tuning_record.json")
    text = open(path).read()
    assert "+simd128" in text
    with open(path, "w") as f:                              # as if tuned without SIMD
        f.write(text.replace('"+simd128"', '"+sign-ext"'))
    res = doit("build:tiny")
    assert "tuning records ignored: recorded for" in res.stderr
    info = tuned_info(doit)
    assert info["tuned_kernels"] == [] and info["ignored_other_target"] == info["records"] > 0
    assert json.load(open(doit.path("tiny", "report.json")))["passed"] is True


def test_a_log_for_other_shapes_is_ignored_with_a_warning(doit):
    make_tiny_onnx(os.path.join(doit.decls, "tiny.onnx"))
    doit.declare("tiny.py", "from wasmforge.dsl import model\nmodel('tiny', onnx='tiny.onnx', tune_trials=6)\n")
    doit("tune:tiny")
    # the same log, declared for a model with other weights and shapes: no kernel matches
    make_tiny_onnx(os.path.join(doit.decls, "other.onnx"), hw=16)
    doit.declare("other.py", "from wasmforge.dsl import model\n"
                             "model('other', onnx='other.onnx', tuning_log='tiny.tuning')\n")
    res = doit("build:other")
    assert "match no kernel of this model" in res.stderr
    info = json.load(open(doit.path("other", "relax_build", "stage.json")))["result"]["tuning"]
    # the softmax has the same (1, 10) shape in both models, so its record does apply
    assert not any(k.startswith("fused_conv2d") for k in info["tuned_kernels"]), info
    assert info["ignored_no_kernel"] > 0


def test_a_record_applies_to_a_build_with_a_superset_of_its_features():
    from wasmforge.stages.relax_build import target_compatible

    build = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm", "mattr": ["+relaxed-simd", "+simd128"]}
    assert target_compatible({**build, "mattr": ["+simd128"]}, build)
    assert target_compatible(build, build)
    assert not target_compatible(build, {**build, "mattr": ["+simd128"]})     # could use relaxed ops
    assert not target_compatible({**build, "mtriple": "x86_64-linux-gnu"}, build)


def test_the_builder_makes_measurement_modules_and_kills_a_build_that_takes_too_long(tmp_path):
    import tvm
    from tvm import te
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    from wasmforge import toolchain, tune
    from wasmforge.stages import relax_build

    a = te.placeholder((64, 64), name="a")
    b = te.compute((64, 64), lambda i, j: a[i, j] * 2.0, name="b")
    mod = tvm.IRModule({"main": te.create_prim_func([a, b])})
    target = tvm.target.Target(tune.tune_target(relax_build.BuildParams()))
    inputs = [BuilderInput(mod, target)] * 2

    ok = tune.make_builder(str(tmp_path / "ok"), toolchain.clang(), toolchain.wasm_ld(), workers=2).build(inputs)
    assert [r.error_msg for r in ok] == [None, None]
    assert all(open(r.artifact_path, "rb").read(4) == b"\0asm" for r in ok)
    assert len({r.artifact_path for r in ok}) == 2                     # one folder per candidate
    assert tune.Measurer(repeat=1, min_repeat_ms=1).measure(ok[0].artifact_path, [
        tvm.s_tir.meta_schedule.arg_info.TensorInfo("float32", [64, 64])] * 2)[0] > 0

    slow = tune.make_builder(str(tmp_path / "slow"), toolchain.clang(), toolchain.wasm_ld(), timeout_s=0.05).build(inputs)
    assert all(r.artifact_path is None and "Timeout" in r.error_msg for r in slow), [r.error_msg for r in slow]


def make_blocked_onnx(path):
    """A first convolution on RGB (3x3, 3 -> 16: the blocked stem layout), a 1x1 16 -> 32 with
    stride 2 and a 3x3 32 -> 32 on its 4x4 output, each with relu, then pool, classifier of 16
    and softmax: two blocked convolutions (conv2d_NCHWc), a Winograd one (one 4x4 tile: a
    small grid, for a quick test; test_winograd_grid_schedules_compute_the_same_convolution
    covers the larger tiles) and a matrix product of one row (tests/compiler/test_grid.py
    covers the other kinds' spaces)."""
    import numpy as np
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, s, shape).astype(np.float32), n) for n, shape, s in (
        ("W1", (16, 3, 3, 3), 0.3), ("B1", (16,), 0.1), ("W2", (32, 16, 1, 1), 0.2), ("B2", (32,), 0.1),
        ("W3", (32, 32, 3, 3), 0.06), ("B3", (32,), 0.1),
        ("G", (16, 32), 0.3), ("C", (16,), 0.1))]
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "W3", "B3"], ["c3"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c3"], ["r3"]),
             helper.make_node("GlobalAveragePool", ["r3"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "G", "C"], ["l"], transB=1),
             helper.make_node("Softmax", ["l"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "blocked", [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_grid_candidates_keep_the_register_tile_small_and_cover_the_loops():
    from wasmforge.compiler.microkernel import candidates

    cands = candidates([1, 64, 14, 14, 16, 16, 1, 1, 16])     # a 1x1 256 -> 1024 at 14x14
    assert cands and len({json.dumps(c, sort_keys=True) for c in cands}) == len(cands)
    for c in cands:
        tiles = c["tiles"]
        assert [a * b * d * e for a, b, d, e in tiles[:5]] == [1, 64, 14, 14, 16]   # every loop covered
        assert [a * b for a, b in tiles[5:]] == [16, 1, 1, 16]
        assert all(t[2] == 1 for t in tiles[:5])                 # nothing between reduction and tile
        assert tiles[4][3] == 16 and tiles[2][3] * tiles[3][3] <= 7   # 16 lanes by 1-7 pixels
        assert all(t[1] == 1 for t in tiles[5:])                 # the reduction is one serial loop each
    assert {c["tiles"][1][0] for c in cands} == {2, 4, 8}        # parallel tasks
    assert {c["tiles"][3][3] for c in cands} == {1, 2, 7}        # 14 columns: no tile of 3 or 4
    # one block of output channels, or a number no split divides: the rows run in parallel
    for ext in ([1, 1, 8, 8, 16, 1, 3, 3, 3], [1, 125, 13, 13, 8, 32, 1, 1, 16]):
        cands = candidates(ext)
        assert {c["tiles"][1][0] for c in cands} == {1}
        assert all(c["tiles"][2][0] * c["tiles"][2][3] == ext[2] for c in cands)


def test_winograd_grid_schedules_compute_the_same_convolution():
    """Winograd GEMM candidates, on a kernel with an epilogue (add, relu), compute what the
    unscheduled kernel does: the GEMM re-laid, tiled, chunked or not; the inverse scalar or
    vectorized; the epilogue inlined. One candidate per code path (each is a native compile)."""
    import numpy as np
    import tvm
    from tvm import te, topi

    from wasmforge.compiler import conv_lowering, microkernel

    c, o, hw = 16, 32, 8
    data = te.placeholder((1, c, hw, hw), name="data")
    wt = te.placeholder((6, 6, c, o), name="wt")
    conv = conv_lowering.conv2d_winograd(data, wt, (1, 1), (1, 1, 1, 1), (1, 1))
    out = topi.nn.relu(topi.add(conv, te.placeholder((1, o, 1, 1), name="bias")))
    func = te.create_prim_func([data, wt, *out.op.input_tensors[0].op.input_tensors[1:], out])
    mod = tvm.IRModule({"main": func})
    assert microkernel.conv_extents(mod) is None and microkernel.gemm_extents(mod) == [6, 6, o, 4, c]
    cands, schedule = microkernel.space(mod)
    assert schedule is microkernel.winograd_schedule
    assert {(k["lanes"], k["p_tile"]) for k in cands} == {(16, 1), (16, 2), (16, 4), (8, 1), (8, 2), (8, 4)}
    assert {k["ci_chunk"] for k in cands} == {None, 1, 2, 4}
    assert {k["inverse_lanes"] for k in cands} == {None, 4}
    rng = np.random.default_rng(0)
    args = [rng.standard_normal([int(d) for d in b.shape]).astype(np.float32) for b in (data, wt)]
    args.append(rng.standard_normal((1, o, 1, 1)).astype(np.float32))

    def run(m):
        got = tvm.runtime.tensor(np.zeros((1, o, hw, hw), np.float32))
        tvm.compile(m, target="llvm")(*[tvm.runtime.tensor(a) for a in args], got)
        return got.numpy()

    want = run(mod)
    assert (want > 0).any() and (want == 0).any()       # the relu did something
    paths = [(16, 1, None, None), (8, 2, 2, 4), (16, 4, 1, 4), (8, 4, None, 4), (16, 2, 4, None)]
    picked = [k for k in cands if (k["lanes"], k["p_tile"], k["ci_chunk"], k["inverse_lanes"]) in paths]
    assert len(picked) == len(paths)
    for cand in picked:
        np.testing.assert_allclose(run(schedule(mod, cand).mod), want, rtol=1e-5, atol=1e-5, err_msg=str(cand))


def test_grid_times_register_tiled_convolutions_and_the_build_applies_the_winners(doit):
    """``tune --grid``: each blocked and Winograd convolution's register-tiled schedules, the
    classifier's product tiles and the Winograd weight transform's parallel loop or none,
    timed; with no log, the fastest (the default schedule among them) goes in; with one, a schedule goes in only when it beat
    the log's best side by side, at the log best's time scaled by that ratio. The build applies them. With
    ``--threads 2``, the same for the threads variant, into its own log."""
    make_blocked_onnx(os.path.join(doit.decls, "blk.onnx"))
    doit.declare("blk.py", "from wasmforge.dsl import model\nmodel('blk', onnx='blk.onnx', tune_trials=6)\n")
    log, mt = os.path.join(doit.decls, "blk.tuning"), os.path.join(doit.decls, "blk.threads.tuning")
    rec_path = os.path.join(log, "database_tuning_record.json")

    # the threads variant first, with no log at all: the fastest on 2 threads goes in its log
    res = doit("tune:blk", "--grid", "--threads", "2")
    assert "schedules for 5 kernels" in res.stderr and not os.path.exists(rec_path)
    on_two = records(mt)
    assert len(on_two) == 5 and all(r[1][2]["num-cores"] == 2 for r in on_two)

    res = doit("tune:blk", "--grid")
    assert "schedules for 5 kernels" in res.stderr and "tune --grid done" in res.stderr
    first = records(log)
    assert len(first) == 5 and len({r[0] for r in first}) == 5   # one record per kernel
    assert all(r[1][2]["num-cores"] == 1 and r[1][1][0] > 0 for r in first)
    assert "re-timing the threads log" in res.stderr and "against the new one-thread ones" in res.stderr
    # with no log, each kernel's default schedule races the grid's finalists, and the verdict says by how much
    verdicts = [line for line in res.stderr.splitlines() if line.startswith("tune --grid: ") and "'kept'" in line]
    assert len(verdicts) == 5 and all("'default_ms'" in v and "'ratio'" in v for v in verdicts), verdicts
    doit("build:blk")
    info = json.load(open(doit.path("blk", "relax_build", "stage.json")))["result"]["tuning"]
    assert sum(k.startswith("fused_conv2d_NCHWc") for k in info["tuned_kernels"]) == 2, info
    assert sum(k.startswith("fused_conv2d_winograd") for k in info["tuned_kernels"]) == 1, info
    assert sum("matmul" in k for k in info["tuned_kernels"]) == 1, info
    assert "winograd_weight" in info["tuned_kernels"], info     # (its once-call: a kernel with no product)
    # every kernel of the grid has a record: none takes a default schedule instead
    with open(doit.path("blk", "relax_build", "stage.json")) as f:
        assert json.load(f)["result"]["default_schedules"] == []
    assert json.load(open(doit.path("blk", "report.json")))["passed"] is True
    assert json.load(open(doit.path("blk", "report.threads.json")))["passed"] is True

    # a search, then the grid against its best (on the blocked convolutions only: --only):
    # a grid record goes in only below the best's time
    doit("tune:blk")
    before = records(log)
    with open(os.path.join(log, "database_workload.json")) as f:
        workloads = f.read()
    best = {}
    for w, r in before:
        best[w] = min(best.get(w, float("inf")), sum(r[1]) / len(r[1]))
    res = doit("tune:blk", "--grid", "--only", "conv2d_NCHWc")
    added = records(log)[len(before):]
    verdicts = [line for line in res.stderr.splitlines() if line.startswith("tune --grid: fused_conv2d")]
    assert len(verdicts) == 2 and all("'log_ms'" in v and "NCHWc" in v for v in verdicts), verdicts
    assert len(added) == sum("'kept': 'grid'" in v for v in verdicts) <= 2
    assert all(r[1][0] < best[w] for w, r in added)
    with open(os.path.join(log, "database_workload.json")) as f:
        assert f.read() == workloads          # the same kernels: records added under their workloads
    doit("build:blk")
    assert json.load(open(doit.path("blk", "report.json")))["passed"] is True
    # it does not search: search options with it are refused, not ignored
    for extra in (["--trials", "9"], ["--threads", "2", "--recheck"]):
        res = doit("tune:blk", "--grid", *extra, check=False)
        assert res.returncode != 0 and "--grid" in res.stderr
    res = doit("tune:blk", "--recheck", "--threads", "2", "--trials", "9", check=False)
    assert res.returncode != 0 and "--recheck does not search" in res.stderr
    # --only: a name no kernel has is an error that lists the kernels; without --grid, refused
    res = doit("tune:blk", "--grid", "--only", "no_such_kernel", check=False)
    assert res.returncode != 0 and "'no_such_kernel' matches no kernel" in res.stderr
    assert "fused_conv2d_winograd" in res.stderr
    res = doit("tune:blk", "--only", "winograd", check=False)
    assert res.returncode != 0 and "give --grid" in res.stderr
