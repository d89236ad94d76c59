"""A register-tiled default schedule for the 1x1 convolutions that stay NCHW: grouped ones
whose groups a channel block would cross (ShuffleNet's 4 groups of 34 or 68 channels), or
any a model declares with ``conv_block = 0``.

A 1x1, stride-1, unpadded convolution in NCHW is a matrix product per group:
``out[o, p] = sum over c of w[o, c] * in[group(o) + c, p]`` over the pixels ``p`` of the
image, which are contiguous. So the tile is a few output channels by a vector of pixels of one
row (a tile never straddles rows: the epilogue computed under it covers exactly the tile),
accumulated over the input channels in a loop that is not unrolled (as ``dense``: each
iteration broadcasts one weight per output channel and loads one vector of pixels), the
per-channel epilogue (bias, batch norm, ReLU) applied to each tile while it is hot, and the
tiles in one parallel loop.

Pure functions: ``extents`` finds the block, ``candidate`` picks the tile by rule,
``schedule`` applies it (a traced ``Schedule``).
"""
from __future__ import annotations

from wasmforge.compiler import tiles

BLOCKS = ("conv2d_nchw", "group_conv2d_nchw")   # TOPI's NCHW convolutions
# (output channels, pixels of a row) register tiles, preferred first: 4 x 8 is 8 accumulator
# vectors; 7 pixels for the rows of 7, 14 and 28
TILES = ((4, 8), (4, 4), (2, 8), (4, 7), (2, 7), (1, 8), (1, 4), (1, 7))


def extents(mod) -> dict | None:
    """``{"block", "out", "width", "depth"}`` of a 1x1 stride-1 unpadded NCHW convolution
    (batch 1), or None."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    names = tiles.block_names(sch)
    block = next((b for b in BLOCKS if b in names), None)
    if block is None:
        return None
    loops = sch.get_loops(sch.get_sblock(block))
    try:
        n, o, y, x, c, kh, kw = (int(sch.get(lp).extent) for lp in loops)
    except (TypeError, ValueError):      # a symbolic extent, or another loop nest
        return None
    conv = sch.get(sch.get_sblock(block))
    data = conv.reads[0].source
    # the padded input has the output's image size only when there is no padding and stride 1
    if (n, kh, kw) != (1, 1, 1) or [int(d) for d in data.shape[2:]] != [y, x]:
        return None
    return {"block": block, "out": o, "width": x, "depth": c}


def candidate(ext: dict) -> dict | None:
    for rows, cols in TILES:
        if ext["out"] % rows == 0 and ext["width"] % cols == 0:
            return {"block": ext["block"], "rows": rows, "cols": cols}
    return None


def schedule(mod, cand: dict):
    """``mod``'s 1x1 convolution tiled as ``cand`` says, its epilogue fused per tile."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    conv = sch.get_sblock(cand["block"])
    names = tiles.block_names(sch)
    for name in names[:names.index(cand["block"])]:   # the (no-op) padding copy
        sch.compute_inline(sch.get_sblock(name))
    last = tiles.epilogue(sch, cand["block"])
    n, o, y, x, c, kh, kw = sch.get_loops(conv)
    oo, oi = sch.split(o, [None, cand["rows"]], preserve_unit_iters=True)
    xo, xi = sch.split(x, [None, cand["cols"]], preserve_unit_iters=True)
    sch.reorder(n, oo, y, xo, c, kh, kw, oi, xi)
    tiles.finish(sch, conv, last, xo, [n, oo, y, xo], oi, xi, c)
    return sch


# ``(candidate, schedule)`` for such a convolution no tuning record covers, or None
default_candidate = tiles.by_rule(extents, candidate, schedule)
