"""A register-tiled default schedule for blocked depthwise convolutions
(``conv_lowering.depthwise_conv2d_nchwc``: MobileNet's 3x3 convolutions, one channel each).

The block is ``out[n, c, y, x, j] = sum over rh, rw of data[n, c, y*s + rh, x*s + rw, j] *
w[c, rh, rw, j]``: the ``b`` lanes ``j`` of a channel block are ``b`` channels, each with its
own filter, so the lanes are the vector and there is no reduction over channels. The tile is
a few output pixels along the row by the block's lanes (up to 8 accumulator vectors), over a
reduction of the kernel's rows and columns that is not unrolled (as ``microkernel``'s
convolution tiles: Cranelift keeps loads where they are, so an unrolled body spills); the
epilogue (bias, ReLU6) runs on each tile while it is hot. The channel blocks and rows are one
parallel loop: the threads variant splits it over every core.

Pure functions: ``extents`` finds the block, ``candidate`` picks the tile by rule,
``candidates`` lists what ``tune --grid`` times, ``schedule`` applies one (a traced
``Schedule``).
"""
from __future__ import annotations

from wasmforge.compiler import tiles
from wasmforge.compiler.conv_lowering import DEPTHWISE_BLOCK as BLOCK

MAX_ACCUMULATORS = 8    # 4-lane vectors a tile keeps in registers
PIXEL_TILES = (8, 7, 4, 3, 2, 1)   # output pixels along the row, preferred first


def extents(mod) -> list[int] | None:
    """The loop extents ``[n, c, y, x, j, rh, rw]`` of the depthwise block, or None."""
    return tiles.loop_extents(mod, BLOCK, 7)


def candidate(ext: list[int]) -> dict | None:
    """The widest pixel tile that divides the row and keeps at most ``MAX_ACCUMULATORS``
    vectors of ``j`` lanes."""
    _n, _c, _y, x, lanes, _rh, _rw = ext
    if lanes % 4:
        return None
    for px in PIXEL_TILES:
        if x % px == 0 and px * lanes // 4 <= MAX_ACCUMULATORS:
            return {"pixels": px}
    return None


GRID_MAX_ACCUMULATORS = 16   # the grid also times tiles that spill a few


def candidates(ext: list[int]) -> list[dict]:
    """``tune --grid``'s space: the rule's pick, then every pixel tile of ``PIXEL_TILES`` that
    divides the row and keeps at most ``GRID_MAX_ACCUMULATORS`` vectors."""
    _n, _c, _y, x, lanes, _rh, _rw = ext
    if lanes % 4:
        return []
    return tiles.unique([candidate(ext)] + [{"pixels": px} for px in PIXEL_TILES
                                            if x % px == 0 and px * lanes // 4 <= GRID_MAX_ACCUMULATORS])


def schedule(mod, cand: dict):
    """``mod``'s depthwise convolution tiled as ``cand`` says, its epilogue fused per tile."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    conv = sch.get_sblock(BLOCK)
    last = tiles.epilogue(sch, BLOCK)
    tiles.parallel_padding(sch)
    n, c, y, x, j, rh, rw = sch.get_loops(conv)
    xo, xi = sch.split(x, [None, cand["pixels"]], preserve_unit_iters=True)
    sch.reorder(n, c, y, xo, rh, rw, xi, j)
    tiles.finish(sch, conv, last, xo, [n, c, y], xi, j, rh)
    return sch


# ``(candidate, schedule)`` for a depthwise convolution no tuning record covers, or None
default_candidate = tiles.by_rule(extents, candidate, schedule)
# ``(candidates, schedule)`` for ``tune --grid``, or None
space = tiles.by_grid(extents, candidates, schedule)
