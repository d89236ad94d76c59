"""A register-tiled default schedule for the 1x1 convolutions that stay NCHW: grouped ones
whose groups a channel block would cross (ShuffleNet's 4 groups of 34 or 68 channels), or
any a model declares with ``conv_block = 0``.

A 1x1, stride-1, unpadded convolution in NCHW is a matrix product per group:
``out[o, p] = sum over c of w[o, c] * in[group(o) + c, p]`` over the pixels ``p`` of the
image, which are contiguous. So the tile is two output channels by the pixels of a few whole
image rows (``ROW_TILE_PIXELS``: 24 to 56 pixels, 6 to 14 vectors; rows of 7 take all 7, 49 pixels,
whose last vector is partial), accumulated over the input channels in a loop that is not
unrolled (as ``dense``: each iteration broadcasts one weight per output channel and loads the
tile's vectors of pixels), the per-channel epilogue (bias, batch norm, ReLU) applied to each
tile while it is hot, and the tiles in one parallel loop. A tile holds whole rows, never part
of one: the epilogue computed under it then covers exactly the tile (an epilogue under a tile
that straddles rows would cover the rows' bounding box). Images whose rows no such tile fits
take a tile of a few output channels by a vector of one row's pixels (``TILES``).

The epilogue runs in vectors of 4 pixels, unrolled. As one vector of all the tile's pixels
(``<49 x float>`` for rows of 7), LLVM kept the accumulators as one long vector and rebuilt
it lane by lane at every step of the sum (``replace_lane``/``extract_lane``) whenever the
epilogue was only a bias and a ReLU: ShuffleNet with its batch norms folded ran in 1.36x its
time that way, and in 0.99x with the epilogue in vectors of 4 (Intel Xeon, wasmtime).

Measured on ShuffleNet's grouped 1x1 convolutions (Zen 5, wasmtime, one thread), the
whole-row tile ran 3.4x to 4.5x faster than one row's 7 pixels on rows of 7 and 14, and 1.4x
faster on rows of 28.

Pure functions: ``extents`` finds the block, ``candidate`` picks the tile by rule,
``candidates`` lists what ``tune --grid`` times, ``schedule`` applies one (a traced
``Schedule``).
"""
from __future__ import annotations

from wasmforge.compiler import tiles

BLOCKS = ("conv2d_nchw", "group_conv2d_nchw")   # TOPI's NCHW convolutions
# whole-row tiles: two output channels by 24 to 56 pixels (at most 28 accumulator vectors)
ROW_TILE_OUT, ROW_TILE_PIXELS = 2, (24, 56)
# otherwise (output channels, pixels of a row) register tiles, preferred first: 4 x 8 is 8
# accumulator vectors
TILES = ((4, 8), (4, 4), (2, 8), (4, 7), (2, 7), (1, 8), (1, 4), (1, 7))


def extents(mod) -> dict | None:
    """``{"block", "out", "height", "width", "depth"}`` of a 1x1 stride-1 unpadded NCHW convolution
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
    return {"block": block, "out": o, "height": y, "width": x, "depth": c}


def image_rows(height: int, width: int) -> int | None:
    """The fewest whole rows, a divisor of ``height``, whose pixels fill a whole-row tile."""
    low, high = ROW_TILE_PIXELS
    return next((k for k in range(1, height + 1) if height % k == 0 and low <= k * width <= high), None)


def candidate(ext: dict) -> dict | None:
    k = image_rows(ext["height"], ext["width"])
    if k is not None and ext["out"] % ROW_TILE_OUT == 0:
        return {"block": ext["block"], "rows": ROW_TILE_OUT, "image_rows": k}
    for rows, cols in TILES:
        if ext["out"] % rows == 0 and ext["width"] % cols == 0:
            return {"block": ext["block"], "rows": rows, "cols": cols}
    return None


GRID_ROW_TILE_OUT = (1, 2, 4)
GRID_MAX_ACCUMULATORS = 28      # vectors: output channels x the rows' pixels / 4


def candidates(ext: dict) -> list[dict]:
    """``tune --grid``'s space: the rule's pick; whole-row tiles of 1, 2 or 4 output channels
    by every count of whole rows (dividing the height) of at least 8 pixels, up to
    ``GRID_MAX_ACCUMULATORS`` vectors; and every tile of ``TILES`` that divides the image."""
    h, w, out = ext["height"], ext["width"], ext["out"]
    cands = [candidate(ext)]
    cands += [{"block": ext["block"], "rows": o, "image_rows": k} for o in GRID_ROW_TILE_OUT for k in range(1, h + 1)
              if out % o == 0 and h % k == 0 and k * w >= 8 and o * -(-k * w // 4) <= GRID_MAX_ACCUMULATORS]
    cands += [{"block": ext["block"], "rows": rows, "cols": cols} for rows, cols in TILES
              if out % rows == 0 and w % cols == 0]
    return tiles.unique(cands)


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
    if "image_rows" in cand:     # the pixels of whole rows, in vectors of 4 (the last maybe partial)
        yo, yi = sch.split(y, [None, cand["image_rows"]], preserve_unit_iters=True)
        sch.reorder(n, oo, yo, c, kh, kw, oi, yi, x)
        pv, pi = sch.split(sch.fuse(yi, x), [None, 4])
        sch.unroll(pv)
        tiles.finish(sch, conv, last, yo, [n, oo, yo], oi, pi, c, fuse_last=2, epilogue_lanes=4)
        return sch
    xo, xi = sch.split(x, [None, cand["cols"]], preserve_unit_iters=True)
    sch.reorder(n, oo, y, xo, c, kh, kw, oi, xi)
    tiles.finish(sch, conv, last, xo, [n, oo, y, xo], oi, xi, c)
    return sch


# ``(candidate, schedule)`` for such a convolution no tuning record covers, or None
default_candidate = tiles.by_rule(extents, candidate, schedule)
# ``(candidates, schedule)`` for ``tune --grid``, or None
space = tiles.by_grid(extents, candidates, schedule)
