"""Register-tiled schedules for the blocked convolutions (``conv2d_NCHWc``) and the Winograd
convolutions' batched GEMM (``bgemm``), for ``tune --grid``.

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

The Winograd kernels (``conv_lowering.conv2d_winograd``) get the same kind of tile in their
batched GEMM, ``bgemm[e, n, o, p] = sum over ci of data_pack[e, n, ci, p] * weight[e, n, ci, o]``:
16 output channels (the weights' contiguous axis) by 1-7 tiles ``p``. The GEMM's output is an
intermediate buffer, so the schedule re-lays it ``[e, n, p, o]`` (the workload, and so the
tuning log's key, is unchanged) and the tile's stores are whole vectors. Its other knob is how
much of the reduction a tile's accumulators stay in registers for: all of ``ci`` (the weights
are re-read once per tile of ``p``), or a chunk of 1-4 channels, the loops over ``p`` and ``o``
inside the chunk loop, so the weights (up to 37.7 MB a call for ResNet-50's 512-channel
layer) stream through once, row after contiguous row, and the accumulators go through L1.
The transforms around the GEMM (separable: one matrix at a time, ``conv_lowering``) run
unrolled, scalar, with one parallel loop over channels, their first stage in registers; the
inverse may also take vectors of 4 output channels, which the re-laid GEMM output holds
contiguous.

Pure functions only: ``space`` finds a workload's kind and extents, ``candidates`` and
``winograd_candidates`` list the spaces, ``schedule`` and ``winograd_schedule`` apply one
candidate (as a traced ``Schedule``, so it can be a tuning record), and
``default_candidate`` picks one by rule for a kernel no tuning log covers. ``grid_space``
is the grid of every kernel kind with a default schedule (these and ``dense``'s,
``depthwise``'s, ``pointwise``'s and ``spatial``'s).
"""

from __future__ import annotations

from wasmforge.compiler import tiles

CONV_BLOCK = "conv2d_NCHWc"   # the block conv_lowering.conv2d_nchwc computes
GEMM_BLOCK = "bgemm"          # the batched GEMM of conv_lowering.conv2d_winograd
# output pixels per register tile (rows, columns). Up to 2 pixels (8 accumulators) fit the
# registers with the block's 4 weight vectors; 3 to 7 spill a few, and still win where the
# image is too small for more tiles of 2 (the 7x7 layers: 7 pixels, 28 accumulators)
PIXEL_TILES = ((1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (1, 4), (2, 2), (1, 7), (7, 1))
PARALLEL_SPLITS = (2, 4, 8)   # tasks of the outer parallel loop (output channel blocks)
# an image that no tile of several pixels divides (13x13, 25x25, 55x55, 109x109) takes tiles
# of 2 that overhang its last row or column, the pixel past the edge masked (a split with a
# remainder): 2 pixels by a block of 16 is the 8-accumulator tile again, where one pixel
# would leave 4 (ZFNet-512's two convolutions: 0.93 of its time). Blocks of 8 keep the
# one-pixel tiles of several blocks (CHANNEL_TILES) instead.
RAGGED_TILES = ((1, 2), (2, 1))
RAGGED_MIN_LANES = 16
# a one-pixel tile (an image whose sides no other tile divides, such as 13x13) of blocks of
# fewer than 16 channels takes this many blocks instead, up to MAX_CHANNEL_TILE_ACCUMULATORS
# vectors: one pixel by one block of 8 is 2 accumulators, and its loop is all loads. (A block
# of 16 has 4 already, and more blocks reuse no weight: left at one.)
CHANNEL_TILES = (2, 4, 5)
MAX_CHANNEL_TILE_ACCUMULATORS = 10
CHANNEL_TILE_MAX_LANES = 8


# Winograd GEMM tiles: output-channel lanes, tiles p, and how many input channels the
# accumulators stay in registers for (None: all of them)
GEMM_LANES = (16, 8)
GEMM_P_TILES = (1, 2, 4, 7)
GEMM_CI_CHUNKS = (None, 1, 2, 4)
GEMM_MAX_ACCUMULATORS = 16    # vectors: p tile x lanes / 4
INVERSE_LANES = (None, 4)     # the inverse transform: scalar, or 4 output channels a vector


def conv_extents(mod) -> list[int] | None:
    """The loop extents ``[b, oc, y, x, ob, rc, rh, rw, rb]`` of the workload's blocked
    convolution, or None when it has none (not a kernel this space covers)."""
    return tiles.loop_extents(mod, CONV_BLOCK, 9)


def gemm_extents(mod) -> list[int] | None:
    """The loop extents ``[e, n, o, p, ci]`` of the workload's Winograd GEMM, or None."""
    return tiles.loop_extents(mod, GEMM_BLOCK, 5)


def space(mod):
    """A workload's grid: ``(candidates, schedule function)``, or None when it has none."""
    if (ext := conv_extents(mod)) is not None:
        return candidates(ext), schedule
    if (ext := gemm_extents(mod)) is not None:
        return winograd_candidates(ext), winograd_schedule
    return None


def candidates(extents: list[int]) -> list[dict]:
    """The schedules to time for a convolution with these loop extents. Each is a dict:
    ``tiles`` (per loop, the split factors: four levels for the spatial loops, two for the
    reduction ones) and ``pixels_outer`` (the tile loops run pixels outside channel blocks,
    so the input is read once and the weights many times, instead of the other way round)."""
    b, oc, y, x, ob, rc, rh, rw, rb = extents
    out = []
    for ty, tx in pixel_tiles(y, x, ob):
        ny, nx = -(-y // ty), -(-x // tx)       # tiles per column and row (the last may overhang)
        for par in [n for n in PARALLEL_SPLITS if oc % n == 0] or [1]:
            # channel blocks no split divides (SqueezeNet's classifier: 125 blocks of 8):
            # the rows of tiles run in parallel instead
            rows = [ny, 1, 1, ty] if par == 1 else [1, ny, 1, ty]
            for cb in channel_tiles(oc // par, ob) if ty * tx == 1 else (1,):
                for pixels_outer in (False, True):
                    out.append({"tiles": [[1, b, 1, 1], [par, oc // par // cb, 1, cb], rows, [1, nx, 1, tx],
                                          [1, 1, 1, ob], [rc, 1], [rh, 1], [rw, 1], [rb, 1]],
                                "pixels_outer": pixels_outer})
    return out


def pixel_tiles(y: int, x: int, lanes: int) -> list[tuple[int, int]]:
    """The pixel tiles (rows, columns) for a ``y`` x ``x`` output of blocks of ``lanes``:
    each of ``PIXEL_TILES`` that divides it, and where none of several pixels does and the
    blocks have at least ``RAGGED_MIN_LANES`` lanes, ``RAGGED_TILES``."""
    exact = [(ty, tx) for ty, tx in PIXEL_TILES if y % ty == 0 and x % tx == 0]
    if lanes < RAGGED_MIN_LANES or any(ty * tx > 1 for ty, tx in exact):
        return exact
    return exact + [t for t in RAGGED_TILES if t not in exact]


def channel_tiles(blocks: int, lanes: int) -> tuple[int, ...]:
    """How many of ``blocks`` output channel blocks (of ``lanes`` channels) a one-pixel tile
    may take: 1, and for blocks of at most ``CHANNEL_TILE_MAX_LANES``, each of
    ``CHANNEL_TILES`` that divides them within ``MAX_CHANNEL_TILE_ACCUMULATORS`` vectors."""
    if lanes > CHANNEL_TILE_MAX_LANES:
        return (1,)
    return (1, *(cb for cb in CHANNEL_TILES
                 if blocks % cb == 0 and cb * lanes // 4 <= MAX_CHANNEL_TILE_ACCUMULATORS))


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
    last = tiles.epilogue(sch, CONV_BLOCK)
    tiles.parallel_padding(sch)
    splits = [sch.split(lp, factors=f, preserve_unit_iters=True)
              for lp, f in zip(sch.get_loops(conv), cand["tiles"])]
    spatial, reduce = splits[:5], splits[5:]
    tile = [s[1] for s in spatial]                       # b, oc, y, x, ob
    if cand["pixels_outer"]:
        tile = [tile[0], tile[2], tile[3], tile[1], tile[4]]
    order = ([s[0] for s in spatial] + tile + [r[0] for r in reduce] + [s[2] for s in spatial]
             + [r[1] for r in reduce] + [s[3] for s in spatial])
    sch.reorder(*order)
    if last is not None:
        sch.reverse_compute_at(last, order[9], preserve_unit_loops=True)
    outer = sch.fuse(*order[:5])
    sch.parallel(outer)
    sch.vectorize(order[-1])
    if last is not None:
        sch.vectorize(sch.get_loops(last)[-1])
    sch.decompose_reduction(conv, sch.get_loops(conv)[6])   # zero the tile before the reduction
    return sch


def winograd_candidates(extents: list[int]) -> list[dict]:
    """The schedules to time for a Winograd GEMM with these loop extents ``[e, n, o, p, ci]``:
    ``lanes`` output channels (vectorized) by ``p_tile`` tiles, accumulated over ``ci_chunk``
    input channels (None: all of them, one tile after another); ``inverse_lanes``: the inverse
    transform scalar (None) or vectorized over that many output channels, its output re-laid
    so they are contiguous, as the GEMM's are."""
    _e, _n, o, p, ci = extents
    out = []
    for lanes in GEMM_LANES:
        for pt in GEMM_P_TILES:
            if o % lanes or p % pt or pt * lanes // 4 > GEMM_MAX_ACCUMULATORS:
                continue
            for chunk in GEMM_CI_CHUNKS:
                if chunk is None or ci % chunk == 0:
                    out += [{"lanes": lanes, "p_tile": pt, "ci_chunk": chunk, "inverse_lanes": il}
                            for il in INVERSE_LANES if il is None or o % il == 0]
    return out


def _local_unrolled(sch, block, loop, vector: bool = False) -> None:
    """A transform's first stage (``data_pack_rows``, ``inverse_rows``) computed under
    ``loop``, into a local buffer its consumer reads, its loops unrolled (so the values
    stay in registers); ``vector``: its innermost spatial loop, the consumer's vector lanes,
    vectorized under the unrolled reduction."""
    sch.compute_at(block, loop)
    sch.set_scope(block, 0, "local")
    loops = sch.get_loops(block)[-4 if vector else -3:]   # (the loops of extent 1 are gone)
    if vector:                     # rows, columns, lanes, reduction -> lanes innermost
        row, col, ol, r = loops
        sch.reorder(row, col, r, ol)
        sch.vectorize(ol)
        loops = [row, col, r]
    for lp in loops:
        sch.unroll(lp)
    if vector:
        sch.decompose_reduction(block, loops[-1])


def winograd_schedule(mod, cand: dict):
    """``mod``'s Winograd convolution with its GEMM scheduled as ``cand`` says (see the
    module's docstring); returns the (traced) Schedule.

    The input transform runs per input channel (in parallel), its padded plane computed
    there; per tile, the 6x6 tile is gathered into ``B^T d`` (36 locals), then ``(B^T d) B``,
    all unrolled. The inverse likewise per output channel (or vector of 4) and tile:
    ``A^T m`` into 24 locals, then ``(A^T m) A``. The epilogue (batch norm, relu) is inlined
    into the output."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    blk = sch.get_sblock
    root = blk("root")
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(root)]
    for const in ("B", "A"):                  # the transform matrices: constants in the code
        if const in names:
            sch.compute_inline(blk(const))
    # input transform: per channel (in parallel) and tile, B^T d into 36 locals, then (B^T d) B
    pack = blk("data_pack")
    e, n, c, p, r = sch.get_loops(pack)
    sch.reorder(c, p, e, n, r)
    for lp in (e, n, r):
        sch.unroll(lp)
    _local_unrolled(sch, blk("data_pack_rows"), p)
    sch.compute_inline(blk("input_tile"))
    if "data_pad" in names:
        sch.compute_at(blk("data_pad"), c)
    sch.parallel(c)
    # the GEMM
    gemm = blk(GEMM_BLOCK)
    sch.transform_layout(gemm, ("write", 0), lambda e, n, o, p: (e, n, p, o))
    e, n, o, p, ci = sch.get_loops(gemm)
    o0, o1 = sch.split(o, [None, cand["lanes"]], preserve_unit_iters=True)
    p0, p1 = sch.split(p, [None, cand["p_tile"]], preserve_unit_iters=True)
    chunk = cand["ci_chunk"]
    c0, c1 = sch.split(ci, [None, chunk or int(sch.get(ci).extent)], preserve_unit_iters=True)
    if chunk is None:       # a tile at a time, its accumulators in registers over all of ci
        sch.reorder(e, n, o0, p0, c0, c1, p1, o1)
        sch.parallel(sch.fuse(e, n, o0))
    else:                   # a chunk of ci at a time, the weights streamed through once
        sch.reorder(e, n, c0, p0, o0, c1, p1, o1)
        sch.parallel(sch.fuse(e, n))
    sch.vectorize(o1)
    sch.decompose_reduction(gemm, c0)
    # inverse transform: per output channel (or vector of them) and tile, A^T m into locals,
    # then (A^T m) A; the epilogue inlined into the output block
    inv = blk("inverse")
    lanes = cand["inverse_lanes"]
    if lanes:
        sch.transform_layout(inv, ("write", 0), lambda o, p, vh, vw: (p, vh, vw, o))
    o, p, vh, vw, r = sch.get_loops(inv)
    if lanes:
        o, ol = sch.split(o, [None, lanes], preserve_unit_iters=True)
        sch.reorder(o, p, vh, vw, r, ol)
        sch.vectorize(ol)
    for lp in (vh, vw, r):
        sch.unroll(lp)
    sch.parallel(o)
    _local_unrolled(sch, blk("inverse_rows"), p, vector=bool(lanes))
    sch.decompose_reduction(inv, r)
    after = names[names.index("inverse") + 1:]
    for name in after[:-1]:
        sch.compute_inline(blk(name))
    last = sch.get_loops(blk(after[-1]))
    sch.parallel(sch.fuse(*last[:2]))
    return sch


# A kernel no tuning log covers (a model nobody has tuned) still gets one grid schedule,
# picked by rule, not timed, from the kinds of tile that won ResNet-50's grid rounds.
# Blocked: 2 pixels along the row (8 accumulators: they fit the registers; a 7-wide image:
# 7; an image of odd sides that 3 divides, SqueezeNet's 111 x 111 first convolution: 3 rows,
# which the grid picked there, 0.55 of the one-pixel tile's time), 4 parallel tasks of
# channel blocks. Winograd: 16 lanes by 2 tiles, chunks of 2 input
# channels (3 of ResNet-50's 4 kernels), the inverse on 4 lanes (all 4).
DEFAULT_PIXEL_TILES = ((1, 2), (2, 1), (1, 7), (3, 1), (1, 3), (1, 1))
DEFAULT_CHANNEL_TILES = (4, 5, 2, 1)     # a one-pixel tile: the most blocks that fit
DEFAULT_PARALLEL = (4, 2, 8, 1)
DEFAULT_GEMM = {"lanes": (16, 8), "p_tile": (2, 1, 4), "ci_chunk": (2, 1, None), "inverse_lanes": (4, None)}


def default_candidate(mod):
    """``(candidate, schedule function)`` for a kernel with no tuning record, or None when
    ``mod`` is no kernel the grid covers (or none of its candidates fits the rule)."""
    found = space(mod)
    if found is None:
        return None
    cands, sched = found

    def rank(prefs, value):
        return prefs.index(value) if value in prefs else None

    ranked = []
    for c in cands:
        if sched is schedule:
            t = c["tiles"]
            key = (rank(DEFAULT_PIXEL_TILES, (t[2][3], t[3][3])), rank(DEFAULT_CHANNEL_TILES, t[1][3]),
                   rank(DEFAULT_PARALLEL, t[1][0]), int(c["pixels_outer"]))
        else:
            key = tuple(rank(prefs, c[k]) for k, prefs in DEFAULT_GEMM.items())
        if None not in key:
            ranked.append((key, c))
    return (min(ranked, key=lambda kc: kc[0])[1], sched) if ranked else None


def grid_space(mod):
    """``tune --grid``'s space for any kernel a default schedule covers: ``(candidates,
    schedule function)``, or None. The kinds are tried in the defaults' order: blocked and
    Winograd convolutions (``space``), matrix products, depthwise convolutions, NCHW 1x1
    convolutions, then kernels with no product."""
    from wasmforge.compiler import dense, depthwise, pointwise, spatial

    for kind_space in (space, dense.space, depthwise.space, pointwise.space, spatial.space):
        if (found := kind_space(mod)) is not None:
            return found
    return None


def rule(mod):
    """``(candidate, schedule function)``: the default schedule of a kernel no tuning record
    schedules, the first kind that covers it (the order of ``grid_space``), or None."""
    from wasmforge.compiler import dense, depthwise, pointwise, spatial

    for kind in (default_candidate, dense.default_candidate, depthwise.default_candidate,
                 pointwise.default_candidate, spatial.default_candidate):
        if (picked := kind(mod)) is not None:
            return picked
    return None


def apply_default_schedules(mod):
    """Each convolution kernel that no tuning record scheduled gets one grid schedule, picked
    by rule (``default_candidate``), each matrix product a register tile
    (``dense.default_candidate``), each depthwise convolution one too
    (``depthwise.default_candidate``) and each 1x1 convolution left NCHW
    (``pointwise.default_candidate``), and each kernel with no product a parallel loop
    (``spatial.default_candidate``): a model nobody has tuned still runs register-tiled,
    parallel convolutions and products, and parallel pools, concatenations, layout
    transforms and element-wise chains. Returns the module, the names of the kernels given a register tile, and the
    names of those given a parallel loop."""
    import tvm
    from tvm.s_tir import ScheduleError

    from wasmforge.compiler import spatial

    done, parallel = {}, set()
    for gv, f in mod.functions_items():
        if not isinstance(f, tvm.tirx.PrimFunc) or (f.attrs is not None and f.attrs.get("tirx.is_scheduled", False)):
            continue
        kernel = tvm.IRModule({"main": f})
        picked = rule(kernel)
        if picked is None:
            continue
        if picked[1] is spatial.schedule:
            parallel.add(gv)
        cand, schedule = picked
        try:
            done[gv] = schedule(kernel, cand).mod["main"].with_attr("tirx.is_scheduled", True)
        except ScheduleError:     # (an epilogue this schedule cannot fuse: left as it is)
            parallel.discard(gv)
            continue
    for gv, f in done.items():
        mod[gv] = f
    return (mod, sorted(gv.name_hint for gv in done if gv not in parallel),
            sorted(gv.name_hint for gv in parallel))
