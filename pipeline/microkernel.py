"""Register-tiled schedules for the blocked convolutions (``conv2d_NCHWc``), for ``tune --grid``.

Why MetaSchedule's own search misses them: wasmtime's Cranelift keeps a wasm function's loads
where they are and computes the pure arithmetic they feed where its results are needed. A
kernel whose inner loop is unrolled (what the search mostly keeps) loads every operand of the
unrolled body first and then computes, so its accumulators and operands cannot all stay in
the 16 vector registers of x86-64, and they spill to the stack. The schedules here have a
small register tile instead: one block of output channels (16 lanes: 4 vectors) times 1 to 7
output pixels, accumulated over a reduction loop that is *not* unrolled, so each iteration
loads one input value per pixel and the block's weights and does its multiply-adds with the
accumulators in registers. The space is small (tens of schedules a kernel), so ``tune.grid``
times all of it rather than searching it.

Pure functions only: ``conv_extents`` reads a workload, ``candidates`` lists the space,
``schedule`` applies one candidate (as a traced ``Schedule``, so it can be a tuning record).
"""

from __future__ import annotations

CONV_BLOCK = "conv2d_NCHWc"   # the block conv_lowering.conv2d_nchwc computes
# output pixels per register tile (rows, columns). Up to 2 pixels (8 accumulators) fit the
# registers with the block's 4 weight vectors; 3 to 7 spill a few, and still win where the
# image is too small for more tiles of 2 (the 7x7 layers: 7 pixels, 28 accumulators)
PIXEL_TILES = ((1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (1, 4), (2, 2), (1, 7), (7, 1))
PARALLEL_SPLITS = (2, 4, 8)   # tasks of the outer parallel loop (output channel blocks)


def conv_extents(mod) -> list[int] | None:
    """The loop extents ``[b, oc, y, x, ob, rc, rh, rw, rb]`` of the workload's blocked
    convolution, or None when it has none (not a kernel this space covers)."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    if CONV_BLOCK not in [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]:
        return None     # (a Winograd kernel, a pool, ...)
    loops = sch.get_loops(sch.get_sblock(CONV_BLOCK))
    if len(loops) != 9:
        return None
    try:
        return [int(sch.get(lp).extent) for lp in loops]
    except TypeError:   # a symbolic extent (a dynamic shape)
        return None


def candidates(extents: list[int]) -> list[dict]:
    """The schedules to time for a convolution with these loop extents. Each is a dict:
    ``tiles`` (per loop, the split factors: four levels for the spatial loops, two for the
    reduction ones) and ``pixels_outer`` (the tile loops run pixels outside channel blocks,
    so the input is read once and the weights many times, instead of the other way round)."""
    b, oc, y, x, ob, rc, rh, rw, rb = extents
    out = []
    for ty, tx in PIXEL_TILES:
        if y % ty or x % tx:
            continue
        for par in [n for n in PARALLEL_SPLITS if oc % n == 0] or [1]:
            for pixels_outer in (False, True):
                out.append({"tiles": [[1, b, 1, 1], [par, oc // par, 1, 1], [1, y // ty, 1, ty], [1, x // tx, 1, tx],
                                      [1, 1, 1, ob], [rc, 1], [rh, 1], [rw, 1], [rb, 1]],
                            "pixels_outer": pixels_outer})
    return out


def schedule(mod, cand: dict):
    """``mod``'s convolution scheduled as ``cand`` says, its element-wise epilogue (batch
    norm, residual add, relu) fused into the tile loop; returns the (traced) Schedule.

    Loop nest: the outer channel blocks in parallel; the tile loops over channel blocks and
    pixels; then the whole reduction (input channel blocks, kernel rows and columns, the 16
    channels of a block), serial and not unrolled; inside it, the register tile: 1-7 pixels
    by the 16 output lanes (vectorized); the epilogue after each tile, while it is hot."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    conv = sch.get_sblock(CONV_BLOCK)
    root = sch.get_sblock("root")
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(root)]
    after = names[names.index(CONV_BLOCK) + 1:]
    for name in reversed(after[:-1]):      # the epilogue's chain, into its last block
        sch.compute_inline(sch.get_sblock(name))
    splits = [sch.split(lp, factors=f, preserve_unit_iters=True)
              for lp, f in zip(sch.get_loops(conv), cand["tiles"])]
    spatial, reduce = splits[:5], splits[5:]
    tile = [s[1] for s in spatial]                       # b, oc, y, x, ob
    if cand["pixels_outer"]:
        tile = [tile[0], tile[2], tile[3], tile[1], tile[4]]
    order = ([s[0] for s in spatial] + tile + [r[0] for r in reduce] + [s[2] for s in spatial]
             + [r[1] for r in reduce] + [s[3] for s in spatial])
    sch.reorder(*order)
    if after:
        sch.reverse_compute_at(sch.get_sblock(after[-1]), order[9], preserve_unit_loops=True)
    outer = sch.fuse(*order[:5])
    sch.parallel(outer)
    sch.vectorize(order[-1])
    if after:
        sch.vectorize(sch.get_loops(sch.get_sblock(after[-1]))[-1])
    sch.decompose_reduction(conv, sch.get_loops(conv)[6])   # zero the tile before the reduction
    return sch
