"""The code walker and its rewrite (wasmforge/engines/wasmcode.py): every instruction kind
our toolchain emits is stepped over, each ``v128.load32_splat`` becomes ``f32.load`` +
``f32x4.splat`` and nothing else changes, and the rewritten module computes the same bits
in wasmtime."""
from __future__ import annotations

import ctypes
import re
import subprocess

import numpy as np
import pytest
import wasmtime

from wasmforge import toolchain
from wasmforge.engines import wasmbin, wasmcode
from wasmforge.stages import opt

# One of each immediate shape the walker knows: blocks with types, br_table, call_indirect,
# select with types, memargs (with offset and alignment), float constants, bulk memory,
# saturating conversions, SIMD constants, shuffles, lanes, load/store lane, atomics; and
# three load32_splats, one with an offset.
WAT = r"""(module
  (type $t (func (param i32) (result i32)))
  (memory (export "memory") 1 1)
  (table 1 funcref)
  (elem (i32.const 0) $id)
  (func $id (type $t) local.get 0)
  (func (export "splat") (param $p i32)
    (v128.store offset=64 (local.get $p)
      (f32x4.add (v128.load32_splat (local.get $p)) (v128.load32_splat offset=4 align=4 (local.get $p)))))
  (func (export "splat_bits") (param $p i32)
    (v128.store offset=80 (local.get $p) (v128.load32_splat offset=8 (local.get $p))))
  (func (export "mixed") (param $p i32) (result i32) (local $v v128) (local $f f64)
    (block $a (block $b (loop $l (br_table $a $b $a (local.get $p)))))
    (if (result i32) (local.get $p) (then (i32.const 1)) (else (i32.const -29)))
    drop
    (local.set $f (f64.add (f64.const 1.5) (f64.promote_f32 (f32.const -2.25))))
    (local.set $v (v128.const i32x4 1 2 3 4))
    (local.set $v (i8x16.shuffle 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v)))
    (local.set $v (i32x4.replace_lane 2 (local.get $v) (i32x4.extract_lane 1 (local.get $v))))
    (local.set $v (v128.load32_lane offset=16 1 (local.get $p) (local.get $v)))
    (v128.store64_lane 0 (local.get $p) (local.get $v))
    (local.set $v (v128.load32_zero (local.get $p)))
    (memory.fill (i32.const 64) (i32.const 0) (i32.const 8))
    (memory.copy (i32.const 64) (i32.const 72) (i32.const 8))
    (drop (i32.trunc_sat_f32_s (f32.const 3.5)))
    (drop (i32.atomic.rmw.add offset=32 (local.get $p) (i32.const 1)))
    (drop (memory.atomic.notify (local.get $p) (i32.const 0)))
    atomic.fence
    (drop (select (result i32) (i32.const 1) (i32.const 2) (local.get $p)))
    (drop (memory.size))
    (i32.add (call_indirect (type $t) (i32.const 5) (i32.const 0))
             (i32.add (i32x4.extract_lane 0 (v128.load32_splat offset=12 (local.get $p)))
                      (i32.wrap_i64 (i64.const 123456789012))))))"""


def parse(tmp_path, wat: str, name: str = "m") -> bytes:
    src, out = tmp_path / f"{name}.wat", tmp_path / f"{name}.wasm"
    src.write_text(wat)
    subprocess.run([toolchain.wasm_tools().path, "parse", str(src), "-o", str(out)], check=True)
    return out.read_bytes()


def text(tmp_path, data: bytes) -> str:
    path = tmp_path / "print.wasm"
    path.write_bytes(data)
    return subprocess.run([toolchain.wasm_tools().path, "print", str(path)], check=True, capture_output=True,
                          text=True).stdout


def validate(tmp_path, data: bytes) -> None:
    path = tmp_path / "validate.wasm"
    path.write_bytes(data)
    subprocess.run([toolchain.wasm_tools().path, "validate", "--features", "all", str(path)], check=True)


def test_the_walker_steps_over_every_instruction_to_each_functions_end(tmp_path):
    data = parse(tmp_path, WAT)
    code = next(p for sid, _, p in wasmbin.sections(data) if sid == wasmbin.CODE_SECTION)
    bodies = wasmcode.function_bodies(code)
    assert len(bodies) == 4
    for body in bodies:
        steps = list(wasmcode.instructions(body, wasmcode.skip_locals(body)))
        assert steps[-1][1] == len(body) and steps[-1][2] == 0x0B      # ends on the body's `end`
        assert all(a[1] == b[0] for a, b in zip(steps, steps[1:]))      # no gaps, no overlaps
    assert wasmcode.code_section(bodies) == code


def test_load_splats_become_a_load_and_a_splat_and_nothing_else_changes(tmp_path):
    data = parse(tmp_path, WAT)
    validate(tmp_path, data)
    out, n = wasmcode.split_load_splats(data)
    assert n == 4
    validate(tmp_path, out)
    before, after = text(tmp_path, data), text(tmp_path, out)
    assert "load32_splat" in before and "load32_splat" not in after
    expected = re.sub(r"^(\s*)v128\.load32_splat((?: offset=\d+)?(?: align=\d+)?)$",
                      lambda m: f"{m.group(1)}f32.load{m.group(2)}\n{m.group(1)}f32x4.splat", before, flags=re.M)
    assert after == expected
    assert wasmcode.split_load_splats(out) == (out, 0)


def test_the_rewritten_module_gives_the_same_bits_in_wasmtime(tmp_path):
    data = parse(tmp_path, WAT)
    out, _ = wasmcode.split_load_splats(data)
    # a signalling NaN and a quiet NaN with a payload: a load and a splat keep both as they are
    words = np.array([0x3FC00000, 0x40100000, 0x7F800001, 0xFFC12345, 0, 0, 0, 0, 0, 0, 0, 0], dtype=np.uint32)
    results = []
    for module_bytes in (data, out):
        cfg = wasmtime.Config()
        cfg.wasm_threads = cfg.shared_memory = True
        engine = wasmtime.Engine(cfg)
        store = wasmtime.Store(engine)
        inst = wasmtime.Instance(store, wasmtime.Module(engine, module_bytes), [])
        ex = inst.exports(store)
        base = ctypes.addressof(ex["memory"].data_ptr(store).contents)
        ctypes.memmove(base + 256, words.ctypes.data, words.nbytes)
        ex["splat"](store, 256)
        ex["splat_bits"](store, 256)
        mixed = ex["mixed"](store, 256)
        results.append((mixed, ctypes.string_at(base + 256, 128)))
    assert results[0] == results[1]
    lanes = np.frombuffer(results[1][1], dtype=np.uint32)
    assert list(lanes[16:20]) == [0x40700000] * 4          # 1.5 + 2.25 = 3.75
    assert list(lanes[20:24]) == [0x7F800001] * 4          # the signalling NaN, bit for bit


def test_code_the_walker_does_not_know_leaves_the_module_as_it_was(tmp_path):
    data = parse(tmp_path, """(module (tag $e) (memory 1)
      (func (param i32) (result v128) (v128.load32_splat (local.get 0)))
      (func (throw $e)))""")
    with pytest.raises(wasmcode.UnknownInstruction, match="0x08"):
        wasmcode.split_load_splats(data)
    assert opt.split_load_splats(data) == (data, "left: the code section's function 1: opcode 0x08 at byte 1")


def test_code_offsets_in_custom_sections_stop_the_rewrite(tmp_path):
    data = wasmbin.add_custom_section(parse(tmp_path, WAT), ".debug_line", b"\0")
    with pytest.raises(wasmbin.WasmFormatError, match=r"\.debug_line"):
        wasmcode.split_load_splats(data)
