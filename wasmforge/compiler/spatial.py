"""A default schedule for the kernels that compute no product: pools, concatenations, layout
transforms, transposes, element-wise chains, reductions such as a global mean, and softmax and
layer norm. Left unscheduled, each is one serial loop nest: it runs on one core in the threads
variant however many there are, and on a DenseNet (a concatenation per layer) or an Inception
(pools and concatenations per module) that caps what a second core can give.

The rule: each loop nest's outermost loop of more than one iteration (the channels, or the
rows of a softmax) runs in parallel, where it is data-parallel. Nothing else changes: no
block is inlined into another (a padding inlined into a pool puts a branch in its window),
and no loops are fused (the fused index's division and remainder cost more than the loop
they save), so one thread runs the same loops as before, with one parallel launch per nest.

A kernel with fewer than ``MIN_PARALLEL`` output elements stays as it is: a parallel launch
costs more than it saves there.

Pure functions: ``extents`` classifies the kernel, ``candidate`` picks the rule, ``schedule``
applies it (a traced ``Schedule``).
"""
from __future__ import annotations

from wasmforge.compiler import tiles

MIN_PARALLEL = 4096


def _elements(buffer) -> int | None:
    """A buffer's elements, or None for a symbolic shape."""
    n = 1
    for d in buffer.shape:
        try:
            n *= int(d)
        except TypeError:
            return None
    return n


def extents(mod) -> dict | None:
    """``{"elements", "blocks", "reductions"}`` of a kernel with no product in it, or None
    (a product, a convolution or a symbolic shape: other rules' kernels)."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    names = tiles.block_names(sch)
    if not names:
        return None
    last = sch.get(sch.get_sblock(names[-1]))
    elements = _elements(last.writes[0].source) if last.writes else None
    if elements is None:
        return None
    reductions = 0
    for name in names:
        block = sch.get(sch.get_sblock(name))
        kinds = [int(iv.iter_type) for iv in block.iter_vars]
        if any(k not in (0, 2) for k in kinds):      # an opaque or ordered iterator
            return None
        if 2 in kinds:
            reductions += 1
            # a product reads two buffers under its reduction; a pool or a mean reads one
            if len({r.source.name for r in block.reads}) > 1:
                return None
    return {"elements": elements, "blocks": len(names), "reductions": reductions}


def candidate(ext: dict) -> dict | None:
    return {"parallel": "outer"} if ext["elements"] >= MIN_PARALLEL else None


def schedule(mod, cand: dict):
    """``mod``'s kernel with each loop nest's outermost loop of more than one iteration (under
    loops of one) parallel, where that loop is data-parallel; raises ``ScheduleError`` when
    no nest has one (the kernel is then left as it is)."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    found = False
    for name in tiles.block_names(sch):
        block = sch.get_sblock(name)
        loops = sch.get_loops(block)
        kinds = [int(iv.iter_type) for iv in sch.get(block).iter_vars]
        if len(loops) != len(kinds):      # (not the one-loop-per-iterator nest TE makes)
            continue
        extents = [int(sch.get(lp).extent) for lp in loops]
        outer = next((i for i, e in enumerate(extents) if e > 1), None)
        if outer is not None and kinds[outer] == 0:
            sch.parallel(loops[outer])
            found = True
    if not found:
        raise s_tir.ScheduleError("no outer data-parallel loop")
    return sch


# ``(candidate, schedule)`` for such a kernel, or None
default_candidate = tiles.by_rule(extents, candidate, schedule)
