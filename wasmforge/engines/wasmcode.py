"""The code section, instruction by instruction: enough of the WebAssembly binary format to
walk every function body and rewrite single instructions in place, for the engines' sake.

The one rewrite today is ``split_load_splats``. LLVM folds a scalar load and its broadcast
into ``v128.load32_splat``; wasmtime's Cranelift lowers that to an integer load, a move to
a vector register and ``vpbroadcastd`` (two shuffle-port micro-ops on x86), while for
``f32.load`` + ``f32x4.splat`` it emits ``vmovss`` + ``vbroadcastss`` (one). Every
register-tiled kernel broadcasts one operand this way in its inner loop, so the split takes
a few percent to a tenth off the time of most models in wasmtime (docs/performance.md).
The two forms are the same bits: neither a load nor a splat touches a NaN's payload.

The walker knows the instructions LLVM and binaryen emit for our targets (MVP, sign
extension, saturating conversions, bulk memory, reference types' table and ref ops, SIMD
with relaxed SIMD, threads and atomics, tail calls). Anything else raises
``UnknownInstruction``, and callers leave the module as it was.
"""
from __future__ import annotations

from wasmforge.engines.wasmbin import (
    CODE_SECTION,
    WasmFormatError,
    _uleb,
    replace_section,
    sections,
    uleb,
)

# opcode classes by their immediates
_NONE = 0          # no immediate
_LEB = 1           # one LEB128 (an index, a depth, a block type, a constant)
_LEB2 = 2          # two LEB128s
_MEMARG = 3        # alignment (with bit 6: a memory index follows) and offset
_BR_TABLE = 4      # a vector of depths and a default
_SELECT_T = 5      # a vector of value types
_F32 = 6           # four bytes
_F64 = 7           # eight bytes
_BLOCK = 8         # a block type: empty, a value type or a type index (one LEB128)

_OPS = {0x00: _NONE, 0x01: _NONE, 0x02: _BLOCK, 0x03: _BLOCK, 0x04: _BLOCK, 0x05: _NONE, 0x0B: _NONE,
        0x0C: _LEB, 0x0D: _LEB, 0x0E: _BR_TABLE, 0x0F: _NONE, 0x10: _LEB, 0x11: _LEB2, 0x12: _LEB, 0x13: _LEB2,
        0x1A: _NONE, 0x1B: _NONE, 0x1C: _SELECT_T, 0x20: _LEB, 0x21: _LEB, 0x22: _LEB, 0x23: _LEB, 0x24: _LEB,
        0x25: _LEB, 0x26: _LEB, 0x3F: _LEB, 0x40: _LEB, 0x41: _LEB, 0x42: _LEB, 0x43: _F32, 0x44: _F64,
        0xD0: _LEB, 0xD1: _NONE, 0xD2: _LEB,
        **{op: _MEMARG for op in range(0x28, 0x3F)}, **{op: _NONE for op in range(0x45, 0xC5)}}
# 0xFC: saturating conversions (0-7) and bulk memory / tables (8-17)
_FC = {**{sub: _NONE for sub in range(8)}, 8: _LEB2, 9: _LEB, 10: _LEB2, 11: _LEB, 12: _LEB2, 13: _LEB,
       14: _LEB2, 15: _LEB, 16: _LEB, 17: _LEB}
SIMD, THREADS = 0xFD, 0xFE
ATOMIC_FENCE = 0x03
V128_CONST, I8X16_SHUFFLE = 12, 13
LANE_OPS = range(21, 35)                 # extract_lane / replace_lane: one lane byte
LOAD_STORE_LANE = range(84, 92)          # a memarg and a lane byte
SIMD_MEMARG = {*range(0, 12), 92, 93}    # loads, stores, load32_zero, load64_zero
LAST_SIMD = 0x113                        # relaxed SIMD ends at 0x113
V128_LOAD32_SPLAT, F32X4_SPLAT, F32_LOAD = 9, 19, 0x2A


class UnknownInstruction(WasmFormatError):
    pass


def _skip_leb(body: bytes, pos: int) -> int:
    while True:
        if pos >= len(body):
            raise WasmFormatError("truncated LEB128")
        if not body[pos] & 0x80:
            return pos + 1
        pos += 1


def _skip_memarg(body: bytes, pos: int) -> int:
    align, pos = _uleb(body, pos)
    if align & 0x40:                       # multi-memory: the memory index follows
        pos = _skip_leb(body, pos)
    return _skip_leb(body, pos)


def _skip(kind: int, body: bytes, pos: int) -> int:
    if kind == _NONE:
        return pos
    if kind == _LEB:
        return _skip_leb(body, pos)
    if kind == _BLOCK:
        if body[pos] in (0x63, 0x64):    # a typed reference (function references): not ours
            raise UnknownInstruction(f"a block of a typed reference type at byte {pos}")
        return _skip_leb(body, pos)
    if kind == _LEB2:
        return _skip_leb(body, _skip_leb(body, pos))
    if kind == _MEMARG:
        return _skip_memarg(body, pos)
    if kind == _BR_TABLE:
        n, pos = _uleb(body, pos)
        for _ in range(n + 1):
            pos = _skip_leb(body, pos)
        return pos
    if kind == _SELECT_T:
        n, pos = _uleb(body, pos)
        return pos + n
    return pos + (4 if kind == _F32 else 8)


def instructions(body: bytes, pos: int = 0):
    """Yield (start, end, opcode, sub-opcode or None) for each instruction of ``body[pos:]``
    (a function body after its locals)."""
    while pos < len(body):
        start, op = pos, body[pos]
        pos += 1
        sub = None
        if op == 0xFC:
            sub, pos = _uleb(body, pos)
            if sub not in _FC:
                raise UnknownInstruction(f"0xFC {sub} at byte {start}")
            pos = _skip(_FC[sub], body, pos)
        elif op == SIMD:
            sub, pos = _uleb(body, pos)
            if sub in SIMD_MEMARG:
                pos = _skip_memarg(body, pos)
            elif sub in LOAD_STORE_LANE:
                pos = _skip_memarg(body, pos) + 1
            elif sub in (V128_CONST, I8X16_SHUFFLE):
                pos += 16
            elif sub in LANE_OPS:
                pos += 1
            elif sub > LAST_SIMD:
                raise UnknownInstruction(f"0xFD {sub} at byte {start}")
        elif op == THREADS:
            sub, pos = _uleb(body, pos)
            pos = pos + 1 if sub == ATOMIC_FENCE else _skip_memarg(body, pos)
        elif op in _OPS:
            pos = _skip(_OPS[op], body, pos)
        else:
            raise UnknownInstruction(f"opcode 0x{op:02x} at byte {start}")
        if pos > len(body):
            raise WasmFormatError(f"instruction at byte {start} runs past the function's end")
        yield start, pos, op, sub


def skip_locals(body: bytes) -> int:
    """Where a function body's instructions begin (after its local declarations)."""
    n, pos = _uleb(body, 0)
    for _ in range(n):
        pos = _skip_leb(body, pos)        # how many
        if body[pos] in (0x63, 0x64):
            raise UnknownInstruction("a local of a typed reference type")
        pos += 1                          # their type
    return pos


def function_bodies(code: bytes) -> list[bytes]:
    """The code section's payload, split into function bodies (each without its size)."""
    n, pos = _uleb(code, 0)
    bodies = []
    for _ in range(n):
        size, pos = _uleb(code, pos)
        bodies.append(code[pos:pos + size])
        pos += size
    if pos != len(code):
        raise WasmFormatError("the code section's size does not match its functions")
    return bodies


def code_section(bodies: list[bytes]) -> bytes:
    return uleb(len(bodies)) + b"".join(uleb(len(b)) + b for b in bodies)


def split_load_splats_in_body(body: bytes) -> tuple[bytes, int]:
    """``body`` with every ``v128.load32_splat m`` as ``f32.load m`` + ``f32x4.splat``, and
    how many it split."""
    out, last, count = bytearray(), 0, 0
    start_of_code = skip_locals(body)
    for start, end, op, sub in instructions(body, start_of_code):
        if op == SIMD and sub == V128_LOAD32_SPLAT:
            memarg_at = _skip_leb(body, start + 1)
            out += body[last:start]
            out.append(F32_LOAD)
            out += body[memarg_at:end]
            out += bytes([SIMD]) + uleb(F32X4_SPLAT)
            last = end
            count += 1
    if not count:
        return body, 0
    out += body[last:]
    return bytes(out), count


def holds_code_offsets(custom_section_name: str) -> bool:
    """Whether a custom section points into the code by byte offset (DWARF, branch hints): a
    rewrite that moves code would leave it wrong."""
    return custom_section_name.startswith((".debug", "metadata.code."))


def split_load_splats(data: bytes) -> tuple[bytes, int]:
    """The module with every ``v128.load32_splat`` split into ``f32.load`` + ``f32x4.splat``,
    and how many it split. Raises ``UnknownInstruction`` for code it cannot walk, and
    ``WasmFormatError`` for a module whose custom sections hold code offsets."""
    code, stale = None, []
    for sid, name, payload in sections(data):
        if sid == CODE_SECTION:
            code = payload
        elif sid == 0 and holds_code_offsets(name):
            stale.append(name)
    if code is None:
        return data, 0
    if stale:
        raise WasmFormatError(f"custom sections {stale} hold code offsets a rewrite would break")
    bodies, total = [], 0
    for i, body in enumerate(function_bodies(code)):
        try:
            new, n = split_load_splats_in_body(body)
        except UnknownInstruction as e:
            raise UnknownInstruction(f"the code section's function {i}: {e}") from None
        bodies.append(new)
        total += n
    return (replace_section(data, CODE_SECTION, code_section(bodies)), total) if total else (data, 0)
