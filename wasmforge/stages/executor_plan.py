"""The executor stage's data model and arena planner: a ``Program`` (storages, tensors,
kernel calls, constants, inputs, outputs) and pure functions over it. ``plan_arena`` gives
every storage a fixed offset in one arena, sharing bytes between storages whose lifetimes
do not overlap; ``check_plan`` proves no two live storages overlap. ``executor.py`` fills a
Program from the lowered Relax ``main`` and emits it as C."""
from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 64

# DLDataTypeCode: 0 int, 1 uint, 2 float, 4 bfloat
DL_DTYPES = {"float32": (2, 32), "float16": (2, 16), "float64": (2, 64), "bfloat16": (4, 16),
             "int8": (0, 8), "int16": (0, 16), "int32": (0, 32), "int64": (0, 64),
             "uint8": (1, 8), "uint16": (1, 16), "uint32": (1, 32), "uint64": (1, 64),
             "bool": (1, 1)}


def dtype_bytes(dtype: str) -> int:
    code_bits = DL_DTYPES.get(dtype)
    if code_bits is None:
        raise ValueError(f"unsupported dtype {dtype}")
    return max(1, code_bits[1] // 8)


def nbytes(shape, dtype: str) -> int:
    n = dtype_bytes(dtype)
    for d in shape:
        n *= d
    return n


def align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


WASM32_MEMORY = 4 << 30   # a wasm32 module addresses 4 GiB, all of it
BEYOND_WASM32 = f"more than a wasm32 module can address ({WASM32_MEMORY:,} bytes, 4 GiB)"


def tensor_beyond_wasm32(what: str, shape, dtype: str) -> str | None:
    """The problem with a tensor of 4 GiB or more (``what`` names it), or None."""
    size = nbytes(shape, dtype)
    return f"{what} ({list(shape)} {dtype}) is {size:,} bytes: {BEYOND_WASM32}" if size >= WASM32_MEMORY else None


# ---------------------------------------------------------------- the program

@dataclass
class Tensor:
    shape: tuple[int, ...]
    dtype: str
    region: str            # "storage" | "const" | "input"
    ref: int               # storage id, constant id or input number
    offset: int = 0        # byte offset inside the storage


@dataclass
class Call:
    kernel: str
    args: list[tuple[str, object]]   # ("tensor", tid) | ("int", v) | ("float", v)


@dataclass
class Program:
    """The lowered ``main`` as data: what the planner and the C emitter need."""
    storages: list[int] = field(default_factory=list)          # bytes of each storage
    tensors: list[Tensor] = field(default_factory=list)
    consts: list[object] = field(default_factory=list)         # numpy arrays
    calls: list[Call] = field(default_factory=list)
    inputs: list[tuple[str, int]] = field(default_factory=list)   # (name, tensor id)
    outputs: list[int] = field(default_factory=list)              # tensor ids
    # once-calls: kernels whose inputs are all constants (or once-calls' results), run on an
    # instance's first run only, first of all calls; each writes a storage of its own that
    # lives as long as the instance
    num_once: int = 0
    persistent: set[int] = field(default_factory=set)            # storage ids

    def tensor(self, t: Tensor) -> int:
        self.tensors.append(t)
        return len(self.tensors) - 1


def storage_intervals(prog: Program) -> dict[int, tuple[int, int]]:
    """[first, last] call index during which each storage holds a live tensor; outputs
    stay live to the end (they are copied out after the last call)."""
    iv: dict[int, tuple[int, int]] = {}

    def touch(tid: int, at: int):
        t = prog.tensors[tid]
        if t.region != "storage":
            return
        lo, hi = iv.get(t.ref, (at, at))
        iv[t.ref] = (min(lo, at), max(hi, at))

    for i, c in enumerate(prog.calls):
        for kind, v in c.args:
            if kind == "tensor":
                touch(v, i)
    for tid in prog.outputs:
        touch(tid, len(prog.calls))
    for sid in prog.persistent:
        iv[sid] = (0, len(prog.calls))
    return iv


def plan_arena(prog: Program) -> tuple[dict[int, int], int]:
    """Place every live storage in one arena: largest first, at the lowest 64-byte aligned
    offset that overlaps no storage with an intersecting lifetime. Returns
    ({storage: offset}, arena bytes)."""
    iv = storage_intervals(prog)
    placed: list[tuple[int, int, int, int]] = []   # (offset, end, lo, hi)
    offsets: dict[int, int] = {}
    for sid in sorted(iv, key=lambda s: (-prog.storages[s], s)):
        lo, hi = iv[sid]
        size = align(prog.storages[sid])
        busy = sorted((o, e) for o, e, l2, h2 in placed if not (h2 < lo or hi < l2))
        off = 0
        for o, e in busy:
            if off + size <= o:
                break
            off = max(off, align(e))
        offsets[sid] = off
        placed.append((off, off + size, lo, hi))
    return offsets, max((e for _, e, _, _ in placed), default=0)


def check_plan(prog: Program, offsets: dict[int, int]) -> None:
    """Raise if two storages alive at the same time share a byte, or a tensor overruns its
    storage. The planner's own guard; tests use it on hand-made programs."""
    iv = storage_intervals(prog)
    items = sorted(iv)
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            (la, ha), (lb, hb) = iv[a], iv[b]
            if ha < lb or hb < la:
                continue
            oa, ob = offsets[a], offsets[b]
            if oa < ob + prog.storages[b] and ob < oa + prog.storages[a]:
                raise AssertionError(f"storages {a} and {b} are alive together and overlap")
    for tid, t in enumerate(prog.tensors):
        if t.region == "storage" and t.offset + nbytes(t.shape, t.dtype) > prog.storages[t.ref]:
            raise AssertionError(f"tensor {tid} overruns storage {t.ref}")
