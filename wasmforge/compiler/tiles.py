"""What the register tiles share (``microkernel``'s grid, and the default tiles of ``dense``,
``depthwise`` and ``pointwise``): finding a kernel's loops, the epilogue fused into the
tile, the tile's common end, the rule that picks one, and the space ``tune --grid`` times."""
from __future__ import annotations

import re

_FLOAT_CONSTANT = re.compile(r"T\.float(?:16|32|64)\(([^)]*)\)")


def block_names(sch) -> list[str]:
    return [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]


def loop_extents(mod, block: str, n: int) -> list[int] | None:
    """The extents of the ``n`` loops around ``block`` in ``mod``'s one kernel, or None when
    it has no such block (another kind of kernel), another loop nest, or a symbolic extent
    (a dynamic shape)."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    if block not in block_names(sch):
        return None
    loops = sch.get_loops(sch.get_sblock(block))
    if len(loops) != n:
        return None
    try:
        return [int(sch.get(lp).extent) for lp in loops]
    except TypeError:
        return None


PAD_BLOCK = "data_pad"    # a convolution's input copied with zeros around (topi.nn.pad)


def parallel_padding(sch, lanes: int = 4) -> None:
    """The convolution's padded input copy (``PAD_BLOCK``), when it has one, in a parallel
    loop over all but its two innermost loops (the image's columns and the channel block's
    lanes), the lanes vectorized when they are whole vectors of ``lanes``: TVM leaves it a
    serial, scalar loop, which cost about as much as a small depthwise convolution itself,
    and on one core while the other waited."""
    if PAD_BLOCK not in block_names(sch):
        return
    pad = sch.get_sblock(PAD_BLOCK)
    loops = sch.get_loops(pad)
    if len(loops) < 3:
        return
    sch.parallel(sch.fuse(*loops[:-2]))
    if int(sch.get(loops[-1]).extent) % lanes == 0:
        sch.vectorize(loops[-1])


def epilogue(sch, block: str):
    """Inline the element-wise chain after ``block`` (bias, batch norm, activation, residual
    add) into its last block, and return that block; None when ``block`` is the last."""
    names = block_names(sch)
    after = names[names.index(block) + 1:]
    for name in reversed(after[:-1]):
        sch.compute_inline(sch.get_sblock(name))
    return sch.get_sblock(after[-1]) if after else None


def finish(sch, block, last, tile_loop, parallel: list, unrolled, vector, reduction, fuse_last: int = 1,
           epilogue_lanes: int | None = None) -> None:
    """The end every tile shares: the epilogue ``last`` (or, without one, a local
    accumulator stored after the tile) computed under ``tile_loop``; the ``parallel`` loops
    fused into one parallel loop; ``unrolled`` unrolled and ``vector`` vectorized (and the
    epilogue's innermost loop, or its ``fuse_last`` innermost loops fused, in vectors of
    ``epilogue_lanes`` when given); the sums zeroed before the ``reduction`` loop.

    An epilogue with many constants (``heavy``: a GELU's polynomial) runs after all the
    tiles instead, over the whole output in its own parallel loop (``apart``)."""
    separate = last is not None and heavy(sch, last) and _size(sch, last) % EPILOGUE_LANES == 0
    if separate:
        apart(sch, last)
    else:
        last = last or sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(last, tile_loop, preserve_unit_loops=True)
    sch.parallel(sch.fuse(*parallel))
    if unrolled is not None:
        sch.unroll(unrolled)
    sch.vectorize(vector)
    if not separate:
        inner = sch.get_loops(last)[-fuse_last:]
        loop = sch.fuse(*inner) if len(inner) > 1 else inner[0]
        if epilogue_lanes:
            outer, loop = sch.split(loop, [None, epilogue_lanes])
            sch.unroll(outer)
        sch.vectorize(loop)
    sch.decompose_reduction(block, reduction)


# Wasmtime's Cranelift computes every constant once, at the function's entry, and keeps it
# there for the whole function (it rematerializes only scalars): an epilogue with more
# constants than this, fused into the tile, leaves the tile's accumulators too few vector
# registers and some spill to the stack on every step of the reduction (a text encoder's
# GELU, 16 constants: its product took 1.1x the time of the same product apart).
HEAVY_EPILOGUE_CONSTANTS = 4
EPILOGUE_LANES = 4


def heavy(sch, last) -> bool:
    """Whether the epilogue block ``last`` holds more than ``HEAVY_EPILOGUE_CONSTANTS``
    distinct floating-point constants."""
    return len(set(_FLOAT_CONSTANT.findall(sch.get(last).script()))) > HEAVY_EPILOGUE_CONSTANTS


def _size(sch, block) -> int:
    size = 1
    for lp in sch.get_loops(block):
        size *= int(sch.get(lp).extent)
    return size


def apart(sch, last) -> None:
    """The epilogue ``last`` as a loop of its own over the whole output, after the tiles:
    its loops fused, in parallel chunks, ``EPILOGUE_LANES`` lanes a vector."""
    loops = sch.get_loops(last)
    chunks, lanes = sch.split(sch.fuse(*loops) if len(loops) > 1 else loops[0], [None, EPILOGUE_LANES])
    sch.parallel(chunks)
    sch.vectorize(lanes)


def by_rule(extents, candidate, schedule):
    """A ``default_candidate(mod)``: ``(candidate, schedule)`` for a kernel ``extents``
    recognizes and ``candidate`` finds a tile for, else None."""
    def default_candidate(mod):
        ext = extents(mod)
        cand = candidate(ext) if ext is not None else None
        return (cand, schedule) if cand else None
    return default_candidate


def by_grid(extents, candidates, schedule):
    """A ``space(mod)`` for ``tune --grid``: ``(candidates, schedule)`` for a kernel
    ``extents`` recognizes and ``candidates`` lists schedules for, else None. The rule's own
    pick comes first in every list, so the grid always times the default against the rest."""
    def space(mod):
        ext = extents(mod)
        cands = candidates(ext) if ext is not None else []
        return (cands, schedule) if cands else None
    return space


def unique(cands) -> list[dict]:
    """``cands`` without repeats (and without None), in order."""
    seen, out = set(), []
    for c in cands:
        key = repr(sorted(c.items())) if c else None
        if key is not None and key not in seen:
            seen.add(key)
            out.append(c)
    return out
