"""A default schedule for the kernels that compute no product: pools, concatenations,
layout transforms, transposes, element-wise chains (a batch norm and ReLU between a
DenseNet's concatenations), an LRN, softmax. Left unscheduled, each is one serial loop nest:
it runs on one core in the threads variant however many there are.

The rule, per loop nest: its outermost loop of more than one iteration (under loops of one)
runs in parallel, where it is data-parallel. TVM's code generator moves a parallel loop's
body into a closure, where LLVM no longer vectorizes the loops it vectorized before (an
element-wise kernel of DenseNet's ran 2-4x slower on one thread with the parallel loop
alone, Zen 5). So in a kernel with no reduction, its innermost loops, fused until they take
whole vectors of 4 lanes (a 14 x 14 image: 196), are vectorized by TVM. A nest whose loops
take no whole vectors (a 13 x 13 or 7 x 7 image's concatenation or layout transform) is
still made parallel: its inner loops stay scalar, which cost less than the serial nest on
one core (below). Such a kernel's blocks are first inlined into its last (a channel
shuffle's reshape, transpose and reshape: one copy instead of three passes). A pool's window
goes inside its spatial loops, outside the innermost, which then runs along contiguous
columns (or the channel block) and is vectorized (a strided pool whose columns take no whole
vectors keeps its window innermost); its padding computed per channel (``_window_inside``).
Other kernels with a reduction (a softmax's sums, an LRN's) keep their reductions' blocks
and loops, with the outer one parallel; their element-wise nests (a
softmax's exp and division) are vectorized the same way, an element-wise block read only by
element-wise blocks inlined into them. Kernels of fewer than ``MIN_PARALLEL`` output
elements stay as they are: a launch costs more than it saves.

Measured against no such schedule, the modules alternated in one process (Zen 5, wasmtime):
Inception-v1 0.90 on 2 threads, 0.98 on one; DenseNet-121 0.97 and 1.00. The pools' window
inside: Inception-v1 a further 0.96 on one thread and 0.97 on two, DenseNet-121 and
SqueezeNet 1.00. On an Intel Xeon, inlining and fused vector loops: ShuffleNet 0.93 and
0.89, DenseNet-121 0.94 and 0.90; then the nests without whole vectors parallel too:
Inception-v1 0.97 and 0.92, SqueezeNet 0.99 and 0.96, DenseNet-121 0.98 and 0.98.

``tune --grid`` times the rule against the kernel left serial (``candidates``): a small
kernel on a machine whose second core is slow to start can lose its parallel loop.

Pure functions: ``extents`` classifies the kernel, ``candidate`` picks the rule,
``candidates`` lists what ``tune --grid`` times, ``schedule`` applies one (a traced
``Schedule``).
"""
from __future__ import annotations

from wasmforge.compiler import tiles

MIN_PARALLEL = 4096
LANES = 4
POOL_BLOCKS = ("pool_max", "pool_sum")   # TOPI's pool2d blocks


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
            # a product reads two buffers along its reduction; a pool or a mean reads one (a
            # layer norm's variance also reads the mean, but not along the reduction)
            if len(_read_along_reduction(block)) > 1:
                return None
    return {"elements": elements, "blocks": len(names), "reductions": reductions}


def _read_along_reduction(block) -> set[str]:
    """The buffers ``block`` reads at indices that depend on its reduction variables."""
    from tvm.tirx.analysis import undefined_vars

    reduce_vars = [iv.var for iv in block.iter_vars if int(iv.iter_type) == 2]
    return {r.source.name for r in block.reads
            if any(v.same_as(rv) for rg in r.region for v in undefined_vars(rg.min) for rv in reduce_vars)}


def candidate(ext: dict) -> dict | None:
    if ext["elements"] < MIN_PARALLEL:
        return None
    return {"vectorize": not ext["reductions"]}


def candidates(ext: dict) -> list[dict]:
    """``tune --grid``'s space: the rule's pick, and the kernel as it is (``serial``)."""
    rule = candidate(ext)
    return [rule, {"serial": True}] if rule else []


def _window_inside(sch, block, vector: bool) -> set[str]:
    """A pool's window loops moved inside its spatial loops but outside the innermost one
    (the image's columns in NCHW, the channel block in NCHW[b]c), so that it runs along
    contiguous inputs and outputs, vectorized when it takes whole vectors (``vector``). A
    strided pool whose columns take no whole vectors keeps its window innermost, each
    output's maximum or sum in a register (with the window outside 27 scalar columns,
    SqueezeNet's 55 x 55 max pool ran 2.4x slower than serial: every output reloaded and
    stored per window position; a stride-1 pool's contiguous columns gain from the window
    outside even so, Inception-v1 1.08-1.11x slower without it). The padding it reads is
    computed per outermost loop's iteration, where the window then finds it in cache, and
    that loop is parallel. Returns the names of the blocks it scheduled, none when ``block``
    is not such a pool."""
    from tvm import s_tir

    loops = sch.get_loops(block)
    kinds = [int(iv.iter_type) for iv in sch.get(block).iter_vars]
    spatial = next((i for i, k in enumerate(kinds) if k != 0), len(kinds))
    if len(loops) != len(kinds) or spatial < 3 or spatial == len(kinds) or any(k != 2 for k in kinds[spatial:]):
        return set()
    extents = [int(sch.get(lp).extent) for lp in loops]
    outer = next((i for i, e in enumerate(extents[:spatial - 1]) if e > 1), None)
    if outer is None:
        return set()
    names = {sch.get(block).name_hint}
    inner = loops[spatial - 1]
    whole = vector and extents[spatial - 1] % LANES == 0
    if whole or not _strided(sch, block, extents[spatial - 1]):
        sch.reorder(*loops[spatial:], inner)
    for pad in sch.get_producers(block):
        try:
            name = sch.get(pad).name_hint
            sch.compute_at(pad, loops[outer], preserve_unit_loops=True)
            names.add(name)
        except s_tir.ScheduleError:      # (read by another block too: left where it is)
            pass
    sch.parallel(loops[outer])
    if whole:
        sch.vectorize(inner if extents[spatial - 1] <= 4 * LANES else sch.split(inner, [None, LANES])[1])
    sch.decompose_reduction(block, loops[spatial])       # (the block becomes <name>_init, <name>_update)
    return names | {f"{n}_{part}" for n in names for part in ("init", "update")}


def _strided(sch, block, columns: int) -> bool:
    """Whether the pool ``block`` steps 2 or more input columns per output column (its input's
    last axis at least twice its ``columns`` less one)."""
    out = sch.get(block).writes[0].source
    ins = [r.source for r in sch.get(block).reads if not r.source.same_as(out)]
    return bool(ins) and int(ins[0].shape[-1]) >= 2 * columns - 1


def _is_elementwise(sch, block) -> bool:
    return all(int(iv.iter_type) == 0 for iv in sch.get(block).iter_vars)


def _inline_into_last(sch, reductions: bool) -> None:
    """The blocks of a kernel inlined into their readers, where they can be: in a kernel with
    no reduction, every block into the last (a channel shuffle's reshape, transpose and
    reshape become one copy: three passes over the tensor, each its own serial loop nest,
    before); in one with (a softmax), an element-wise block whose readers are all
    element-wise (its ``x - max`` into its exp)."""
    from tvm import s_tir

    for name in tiles.block_names(sch)[:-1]:
        block = sch.get_sblock(name)
        if reductions and not (_is_elementwise(sch, block)
                               and all(_is_elementwise(sch, c) for c in sch.get_consumers(block))):
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:      # (one it cannot: left a nest of its own)
            pass


def _vector_loop(sch, loops, extents: list[int], kinds: list[int], outer: int):
    """The loop to vectorize in a nest under its parallel loop ``outer``: the innermost,
    fused with the data-parallel loops around it (inside ``outer``) until it takes whole
    vectors of ``LANES`` (a 14 x 14 image's rows: 196), split into vectors of ``LANES`` when
    longer than 4 of them; None when no such loop takes whole vectors. (Fusing ``outer`` in
    too, 544 channels of 7 x 7 in parallel chunks of a vector, ran 2-3x slower than the
    serial nest: every lane's index is divided back into channel and pixel.)"""
    k = len(loops) - 1
    size = extents[k]
    while size % LANES and k - 1 > outer:
        k -= 1
        size *= extents[k]
    if size % LANES or any(kind != 0 for kind in kinds[k:]):
        return None
    inner = sch.fuse(*loops[k:]) if k < len(loops) - 1 else loops[-1]
    return inner if size <= 4 * LANES else sch.split(inner, [None, LANES])[1]


def schedule(mod, cand: dict):
    """``mod``'s kernel with each loop nest's outermost loop of more than one iteration (under
    loops of one) parallel, where it is data-parallel; with ``cand["vectorize"]`` (a kernel
    with no reduction), only in nests whose innermost loop is data-parallel and takes whole
    vectors, which is then vectorized. A pool's window goes inside its spatial loops
    (``_window_inside``). Raises ``ScheduleError`` when no nest qualifies (the kernel is then
    left as it is)."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    if cand.get("serial"):
        # a grid candidate: the kernel unchanged. Its trace still names a block: a database
        # drops a record whose trace is empty, and the build would then give the kernel the
        # rule's schedule instead of the serial one that won
        sch.get_sblock(tiles.block_names(sch)[0])
        return sch
    found, done = False, set()
    _inline_into_last(sch, reductions=not cand["vectorize"])
    for name in tiles.block_names(sch):
        if name in POOL_BLOCKS and (pooled := _window_inside(sch, sch.get_sblock(name), vector=True)):
            done |= pooled
            found = True
    for name in tiles.block_names(sch):
        if name in done:
            continue
        block = sch.get_sblock(name)
        loops = sch.get_loops(block)
        kinds = [int(iv.iter_type) for iv in sch.get(block).iter_vars]
        if len(loops) != len(kinds):      # (not the one-loop-per-iterator nest TE makes)
            continue
        extents = [int(sch.get(lp).extent) for lp in loops]
        outer = next((i for i, e in enumerate(extents) if e > 1), None)
        if outer is None or kinds[outer] != 0:
            continue
        if (cand["vectorize"] or _is_elementwise(sch, block)) and outer < len(loops) - 1:
            if (inner := _vector_loop(sch, loops, extents, kinds, outer)) is not None:
                sch.vectorize(inner)
        sch.parallel(loops[outer])
        found = True
    if not found:
        raise s_tir.ScheduleError("no nest with an outer data-parallel loop (and an inner vector loop)")
    return sch


# ``(candidate, schedule)`` for such a kernel, or None
default_candidate = tiles.by_rule(extents, candidate, schedule)
# ``(candidates, schedule)`` for ``tune --grid``, or None
space = tiles.by_grid(extents, candidates, schedule)
