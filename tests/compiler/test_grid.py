"""``tune --grid``'s space beyond the convolutions (``microkernel.grid_space``): matrix
products, depthwise and NCHW 1x1 convolutions, and kernels with no product. Each kind's
space starts with the default schedule's own pick, and every candidate, compiled for the
host and run, computes what the unscheduled kernel does."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import run_on_host as run

from wasmforge.compiler import (
    conv_lowering,
    dense,
    depthwise,
    microkernel,
    pointwise,
    spatial,
)


def product():
    """8 x 12 by 12 x 16, with a bias and a ReLU (the block named as Relax's legalized matmul)."""
    from tvm import te, topi

    a, b, bias = te.placeholder((8, 12), name="a"), te.placeholder((12, 16), name="b"), te.placeholder((16,), name="bias")
    k = te.reduce_axis((0, 12), "k")
    mm = te.compute((8, 16), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name=dense.BLOCK)
    return [a, b, bias], topi.nn.relu(topi.add(mm, bias)), (8, 16)


def blocked_conv():
    """A blocked 1x1 convolution, 2 blocks of 8 in to 10 blocks of 8 out, on a 5 x 5 image:
    no tile of 2 pixels divides it, so the one-pixel tiles take several blocks; ReLU."""
    from tvm import te, topi

    data, kernel = te.placeholder((1, 2, 5, 5, 8), name="data"), te.placeholder((10, 2, 1, 1, 8, 8), name="kernel")
    out = topi.nn.relu(conv_lowering.conv2d_nchwc(data, kernel, (1, 1), (0, 0, 0, 0), (1, 1)))
    return [data, kernel], out, (1, 10, 5, 5, 8)


def depthwise_conv():
    """A blocked 3x3 depthwise convolution over 8 channels (2 blocks of 4) on an 8 x 8 image, ReLU."""
    from tvm import te, topi

    data, kernel = te.placeholder((1, 2, 10, 10, 4), name="data"), te.placeholder((2, 1, 3, 3, 1, 4), name="kernel")
    out = topi.nn.relu(conv_lowering.depthwise_conv2d_nchwc(data, kernel, (1, 1), (0, 0, 0, 0), (1, 1)))
    return [data, kernel], out, (1, 2, 8, 8, 4)


def pointwise_conv():
    """A 1x1 16 -> 8 NCHW convolution in 2 groups on 4 rows of 6, ReLU."""
    from tvm import te, topi

    data, kernel = te.placeholder((1, 16, 4, 6), name="data"), te.placeholder((8, 8, 1, 1), name="kernel")
    return [data, kernel], topi.nn.relu(topi.nn.group_conv2d_nchw(data, kernel, 1, 0, 1, 2)), (1, 8, 4, 6)


def pool():
    """A 3x3 stride-1 padded max pool over 8 x 24 x 24 (4608 outputs: enough for a parallel loop)."""
    from tvm import te, topi

    data = te.placeholder((1, 8, 24, 24), name="data")
    return [data], topi.nn.pool2d(data, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), "max", layout="NCHW"), (1, 8, 24, 24)


KINDS = {
    "product": (product, dense),
    "depthwise": (depthwise_conv, depthwise),
    "pointwise": (pointwise_conv, pointwise),
    "pool": (pool, spatial),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_grid_candidate_computes_the_kernel_and_the_default_comes_first(kind):
    import tvm
    from tvm import te

    make, module = KINDS[kind]
    inputs, out, shape = make()
    mod = tvm.IRModule({"main": te.create_prim_func([*inputs, out])})
    cands, schedule = microkernel.grid_space(mod)
    assert schedule is module.schedule and len(cands) >= 2
    assert len({repr(sorted(c.items())) for c in cands}) == len(cands)       # no candidate twice
    assert (cands[0], schedule) == module.default_candidate(mod)             # the rule's pick first
    rng = np.random.default_rng(len(kind))
    arrays = [rng.standard_normal([int(d) for d in t.shape]).astype(np.float32) for t in inputs]
    want = run(mod, arrays, shape)
    assert (want > 0).any() and (want <= 0).any() or kind == "pool"
    for cand in cands:
        np.testing.assert_allclose(run(schedule(mod, cand).mod, arrays, shape), want, rtol=1e-5, atol=1e-5,
                                   err_msg=str(cand))
        assert applies(mod, schedule(mod, cand)), cand


def applies(mod, sch) -> bool:
    """Whether a tuning record of ``sch`` is one the build finds for ``mod`` (what
    ``tune --grid`` writes when the candidate wins: a database skips an empty trace)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.MemoryDatabase()
    target = tvm.target.Target("llvm")
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(mod), [1e-3], target))
    return db.query_tuning_record(mod, target, "main") is not None


def test_one_pixel_tiles_of_several_channel_blocks_compute_the_convolution():
    import tvm
    from tvm import te

    inputs, out, shape = blocked_conv()
    mod = tvm.IRModule({"main": te.create_prim_func([*inputs, out])})
    cands, schedule = microkernel.grid_space(mod)
    assert schedule is microkernel.schedule
    assert {c["tiles"][1][3] for c in cands} == {1, 5}                  # 10 blocks in 2 tasks of 5
    assert microkernel.default_candidate(mod)[0]["tiles"][1] == [2, 1, 1, 5]
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal([int(d) for d in t.shape]).astype(np.float32) for t in inputs]
    want = run(mod, arrays, shape)
    for cand in cands:
        np.testing.assert_allclose(run(schedule(mod, cand).mod, arrays, shape), want, rtol=1e-5, atol=1e-5,
                                   err_msg=str(cand))


def test_a_one_pixel_tile_takes_the_most_channel_blocks_its_accumulators_allow():
    import tvm

    # SqueezeNet's classifier: 125 blocks of 8 on 13 x 13, whose sides no tile of 2 divides
    cand, _ = microkernel.default_candidate(tvm.IRModule({"main": _blocked(125, 13)}))
    assert cand["tiles"][1] == [1, 25, 1, 5] and cand["tiles"][2][3] * cand["tiles"][3][3] == 1
    assert microkernel.channel_tiles(64, 16) == (1,)                # blocks of 16: one at a time
    assert microkernel.channel_tiles(64, 4) == (1, 2, 4)
    assert microkernel.channel_tiles(125, 8) == (1, 5)
    assert microkernel.channel_tiles(7, 8) == (1,)


def test_an_image_of_odd_sides_takes_tiles_of_three_rows_where_3_divides_them():
    import tvm

    # SqueezeNet's first convolution: 111 x 111, which no tile of 2 divides
    cand, _ = microkernel.default_candidate(tvm.IRModule({"main": _blocked(4, 111)}))
    assert (cand["tiles"][2][3], cand["tiles"][3][3]) == (3, 1)
    cand, _ = microkernel.default_candidate(tvm.IRModule({"main": _blocked(4, 28)}))
    assert (cand["tiles"][2][3], cand["tiles"][3][3]) == (1, 2)         # even sides: 2 along the row
    cand, _ = microkernel.default_candidate(tvm.IRModule({"main": _blocked(4, 13)}))
    assert (cand["tiles"][2][3], cand["tiles"][3][3]) == (1, 1)         # neither, in blocks of 8


def test_an_image_no_tile_divides_takes_tiles_of_two_that_overhang_it():
    """Blocks of 16 on 5 x 5: tiles of 2 pixels, 3 a row, the last one's second pixel past
    the edge; every candidate computes the convolution (and its ReLU) to the image's edge."""
    import tvm
    from tvm import te, topi

    data, kernel = te.placeholder((1, 2, 5, 5, 16), name="data"), te.placeholder((4, 2, 1, 1, 16, 16), name="kernel")
    out = topi.nn.relu(conv_lowering.conv2d_nchwc(data, kernel, (1, 1), (0, 0, 0, 0), (1, 1)))
    mod = tvm.IRModule({"main": te.create_prim_func([data, kernel, out])})
    cands, schedule = microkernel.grid_space(mod)
    assert {(c["tiles"][2][3], c["tiles"][3][3]) for c in cands} == {(1, 1), (1, 2), (2, 1)}
    cand = microkernel.default_candidate(mod)[0]
    assert cand["tiles"][2][3] == 1 and cand["tiles"][3] == [1, 3, 1, 2]          # the rule: (1, 2)
    assert microkernel.pixel_tiles(5, 5, 8) == [(1, 1)]                 # blocks of 8: several a tile instead
    assert microkernel.pixel_tiles(5, 6, 16) == [(1, 1), (1, 2), (1, 3)]   # tiles divide the row: no overhang
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal([int(d) for d in t.shape]).astype(np.float32) for t in (data, kernel)]
    want = run(mod, arrays, (1, 4, 5, 5, 16))
    assert (want > 0).any() and (want == 0).any()
    for c in cands:
        np.testing.assert_allclose(run(schedule(mod, c).mod, arrays, (1, 4, 5, 5, 16)), want, rtol=1e-5, atol=1e-5,
                                   err_msg=str(c))
        assert applies(mod, schedule(mod, c)), c


def _blocked(out_blocks: int, hw: int):
    from tvm import te

    data, kernel = te.placeholder((1, 4, hw, hw, 8), name="data"), te.placeholder((out_blocks, 4, 1, 1, 8, 8), name="kernel")
    return te.create_prim_func([data, kernel, conv_lowering.conv2d_nchwc(data, kernel, (1, 1), (0, 0, 0, 0), (1, 1))])


def test_the_spaces_cover_the_tiles_that_divide_the_kernel():
    ext = {"batch": [1], "rows": 8, "cols": 16, "depth": 12}
    tiles = {(c["rows"], c["cols"]) for c in dense.candidates(ext)}
    assert tiles == {(8, 8), (4, 8), (2, 16), (4, 4), (2, 8), (1, 16), (2, 4), (1, 8), (1, 4)}
    # one row by large weights: the streamed schedule in 1, 2, 4 chunks, 8/4/2/1 rows at once, and the tiles
    fc6 = {"batch": [], "rows": 1, "cols": 4096, "depth": 9216}
    streams = [c for c in dense.candidates(fc6) if "stream" in c]
    assert dense.candidates(fc6)[0] == {"stream": 2048, "rows_at_once": 8} and len(streams) == 12
    assert {c["stream"] for c in streams} == {4096, 2048, 1024}
    assert dense.candidates({"batch": [1], "rows": 6, "cols": 6, "depth": 20}) == []     # no 4 lanes
    # depthwise: the rule's tile (8 vectors at most) first, then every pixel tile that divides the row
    # within 16 vectors: 7 pixels by 8 lanes (14 vectors) only in the grid
    assert depthwise.candidates([1, 4, 14, 14, 8, 3, 3]) == [{"pixels": 2}, {"pixels": 7}, {"pixels": 1}]
    assert depthwise.candidates([1, 4, 16, 16, 4, 3, 3])[0] == {"pixels": 8}
    # 1x1 NCHW on 7 rows of 7: 1 or 2 channels by all 7 rows (4 by 49 pixels would be 52 vectors;
    # one row of 7, too few pixels)
    ext = {"block": "group_conv2d_nchw", "out": 8, "height": 7, "width": 7, "depth": 8}
    cands = pointwise.candidates(ext)
    assert cands[0] == pointwise.candidate(ext) == {"block": "group_conv2d_nchw", "rows": 2, "image_rows": 7}
    rows = {(c["rows"], c["image_rows"]) for c in cands if "image_rows" in c}
    assert rows == {(1, 7), (2, 7)} and all((c["rows"], c["cols"]) != (4, 8) for c in cands if "cols" in c)
    assert all(c["rows"] * -(-c["image_rows"] * 7 // 4) <= pointwise.GRID_MAX_ACCUMULATORS for c in cands
               if "image_rows" in c)
    # no product: the rule, or serial; a kernel too small for a parallel loop has no space
    assert spatial.candidates({"elements": 8192, "blocks": 2, "reductions": 0}) == [{"vectorize": True}, {"serial": True}]
    assert spatial.candidates({"elements": 100, "blocks": 1, "reductions": 0}) == []
