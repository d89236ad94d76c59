"""A register-tiled default schedule for matrix products: dense layers (``MatMul`` with
constant weights, ``Gemm``), batched ones (attention's ``Q K^T`` and ``P V``), with their
element-wise epilogues (bias, GELU, residual add) fused in.

The block is ``C[b..., i, j] = sum over k of A[b..., i, k] * B[b..., k, j]``, with ``j``
contiguous in ``B`` (TVM's ``matmul`` block, whether ``B`` is a weight or a tensor). The
tile is ``rows`` rows of ``A`` by ``cols`` columns of ``B`` (a few 4-lane vectors),
accumulated over the whole ``k`` loop, which is not unrolled: each iteration loads one
value of ``A`` per row and one vector row of ``B``, and does its multiply-adds on
accumulators that stay in registers (the same reasoning as ``microkernel``'s convolution
tiles: Cranelift keeps loads where they are, so an unrolled reduction spills). The loop
over column tiles is outside the loop over row tiles, so the ``k x cols`` panel of ``B``
stays in cache while every row tile uses it. The outer loops are fused into one parallel
loop: the threads variant runs the tiles on every core. The epilogue runs on each tile
while it is hot, unless it holds many constants (a GELU: ``tiles.heavy``), which run
after the tiles in a loop of their own; a product without one accumulates in a small
local buffer and then stores it.

A product of one row by weights beyond the caches (a classifier's fully connected layers)
is bound by reading the weights, and is streamed instead (``stream_candidate``): each
weight row read whole and in order, 8 rows added into a vector of sums between its load and
store, the sums of a chunk of columns in L1 (AlexNet's 151 MB layer: 20 -> 7 ms on one
thread, Zen 5).

Pure functions: ``extents`` finds the block and its shape, ``candidate`` picks the tile by
rule, ``candidates`` lists what ``tune --grid`` times, ``schedule`` applies one (a traced
``Schedule``).
"""
from __future__ import annotations

from wasmforge.compiler import tiles

BLOCK = "matmul"
# (rows, cols) register tiles, preferred first: 2 x 16 (8 accumulator vectors, 4 of B, a
# broadcast of A: 13 of x86-64's 16 vector registers) and its neighbours for shapes it does
# not divide; cols a multiple of 4 lanes. Per 8 multiply-adds, 2 x 16 broadcasts 2 values of
# A where 4 x 8 and 8 x 8 broadcast 4, and loads 4 vectors of B where they load 2 or 1. On
# an Intel Xeon (family 6 model 167) the broadcasts are what costs: with 2 x 16 instead of
# 4 x 8 (and 8 x 8 where B's rows lie 4 KB apart), a text encoder (products of 128 rows by
# 256 -> 1024 with its GELU, 1024 -> 256, 256 -> 256) ran in 0.79 of its time on one thread
# and 0.80 on two (the modules alternated), and `tune --grid` picked 2 x 16 for all 9 of its
# products. On Zen 5, 2 x 16, 4 x 16, 6 x 8 and 8 x 8 had measured within noise of 4 x 8 on
# the same encoder, and 8 x 8 on the aliased rows 0.98 of the model's time.
TILES = ((2, 16), (4, 8), (4, 4), (2, 8), (1, 16), (2, 4), (1, 8), (1, 4))


def extents(mod) -> dict | None:
    """The matrix product in ``mod``: ``{"batch": [...], "rows": M, "cols": N, "depth": K}``,
    or None when ``mod`` has no ``matmul`` block of that form (static shapes, one reduction
    loop last, ``B`` read along ``j``)."""
    from tvm import s_tir, tirx

    sch = s_tir.Schedule(mod)
    if BLOCK not in tiles.block_names(sch):
        return None
    block = sch.get(sch.get_sblock(BLOCK))
    iters = list(block.iter_vars)
    kinds = [iv.iter_type for iv in iters]
    if len(iters) < 3 or kinds[-1] != tirx.IterVar.CommReduce or tirx.IterVar.CommReduce in kinds[:-1]:
        return None
    try:
        ext = [int(iv.dom.extent) for iv in iters]
    except TypeError:      # a symbolic extent (a dynamic shape)
        return None
    loops = sch.get_loops(sch.get_sblock(BLOCK))
    if len(loops) != len(iters):
        return None
    j, k = iters[-2].var, iters[-1].var

    def last_two(region):
        return [r.min for r in region.region[-2:]]

    reads = [last_two(r) for r in block.reads]
    a_ok = any(len(r) == 2 and r[1].same_as(k) for r in reads)
    b_ok = any(len(r) == 2 and r[0].same_as(k) and r[1].same_as(j) for r in reads)
    if not (a_ok and b_ok):
        return None
    return {"batch": ext[:-3], "rows": ext[-3], "cols": ext[-2], "depth": ext[-1]}


# A product of one row by a weight matrix beyond the caches (AlexNet's and VGG's fully
# connected layers: 9216 x 4096 is 151 MB) is bound by reading the weights. The tile's
# column panels read them a short row at a time, rows 16 KB apart; streaming instead reads
# each weight row whole and in order: the reduction outermost, every output column's sum
# (a chunk of them per parallel task) kept in the L1 cache.
STREAM_MIN_WEIGHTS = 1 << 20    # elements of B (4 MB)
STREAM_TASKS = 2                # column chunks, run in parallel
LANES = 4
STREAM_ROWS = (8, 4, 2, 1)      # weight rows added into a vector of sums between its load and store


def stream_candidate(ext: dict) -> dict | None:
    if ext["rows"] != 1 or any(b != 1 for b in ext["batch"]) or ext["cols"] * ext["depth"] < STREAM_MIN_WEIGHTS:
        return None
    rows = next(r for r in STREAM_ROWS if ext["depth"] % r == 0)
    for tasks in (STREAM_TASKS, 1):
        if ext["cols"] % (tasks * LANES) == 0:
            return {"stream": ext["cols"] // tasks, "rows_at_once": rows}
    return None


def candidate(ext: dict) -> dict | None:
    """The schedule for a product of this shape: streaming for one row by large weights
    (``stream_candidate``), else the first of ``TILES`` that divides it."""
    if (stream := stream_candidate(ext)) is not None:
        return stream
    for rows, cols in TILES:
        if ext["rows"] % rows == 0 and ext["cols"] % cols == 0:
            return {"rows": rows, "cols": cols}
    return None


STREAM_GRID_TASKS = (1, 2, 4)


def candidates(ext: dict) -> list[dict]:
    """``tune --grid``'s space for a product of this shape: the rule's pick, every register
    tile of ``TILES`` (and 8 x 8) that divides it and, for one row by large weights, the
    streamed schedule in 1, 2 or 4 column chunks with each ``STREAM_ROWS`` count."""
    cands = [candidate(ext)]
    if stream_candidate(ext) is not None:
        cands += [{"stream": ext["cols"] // tasks, "rows_at_once": rows}
                  for tasks in STREAM_GRID_TASKS for rows in STREAM_ROWS
                  if ext["cols"] % (tasks * LANES) == 0 and ext["depth"] % rows == 0]
    cands += [{"rows": rows, "cols": cols} for rows, cols in ((8, 8), *TILES)
              if ext["rows"] % rows == 0 and ext["cols"] % cols == 0]
    return tiles.unique(cands)


def stream_schedule(mod, cand: dict):
    """One row by large weights: per chunk of ``cand["stream"]`` columns (in parallel), the
    reduction outermost, each weight row's chunk read in order into the chunk's sums (4
    lanes a step), then the epilogue on the chunk."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    mm = sch.get_sblock(BLOCK)
    last = tiles.epilogue(sch, BLOCK)
    *batch, i, j, k = sch.get_loops(mm)
    jo, ji = sch.split(j, [None, cand["stream"]], preserve_unit_iters=True)
    jv, jl = sch.split(ji, [None, LANES], preserve_unit_iters=True)
    ko, ki = sch.split(k, [None, cand["rows_at_once"]], preserve_unit_iters=True)
    sch.reorder(*batch, i, jo, ko, jv, ki, jl)
    sch.unroll(ki)
    if last is not None:
        sch.reverse_compute_at(last, jo, preserve_unit_loops=True)
        lo, li = sch.split(sch.get_loops(last)[-1], [None, LANES], preserve_unit_iters=True)
        sch.vectorize(li)
    sch.parallel(sch.fuse(*batch, i, jo))
    sch.vectorize(jl)
    sch.decompose_reduction(mm, ko)
    return sch


def schedule(mod, cand: dict):
    """``mod``'s matrix product tiled as ``cand`` says, its epilogue fused per tile."""
    from tvm import s_tir

    if "stream" in cand:
        return stream_schedule(mod, cand)
    sch = s_tir.Schedule(mod)
    mm = sch.get_sblock(BLOCK)
    last = tiles.epilogue(sch, BLOCK)
    *batch, i, j, k = sch.get_loops(mm)
    io, ii = sch.split(i, [None, cand["rows"]], preserve_unit_iters=True)
    jo, ji = sch.split(j, [None, cand["cols"]], preserve_unit_iters=True)
    sch.reorder(*batch, jo, io, k, ii, ji)
    tiles.finish(sch, mm, last, io, [*batch, jo, io], ii, ji, k)
    return sch


# ``(candidate, schedule)`` for a matrix product no tuning record covers, or None
default_candidate = tiles.by_rule(extents, candidate, schedule)
# ``(candidates, schedule)`` for ``tune --grid``, or None
space = tiles.by_grid(extents, candidates, schedule)
