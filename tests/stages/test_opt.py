"""The opt stage: wasm-opt with the module's features, and similar kernels merged where the
code outweighs the data."""
from __future__ import annotations

import subprocess

import pytest

from wasmforge import toolchain
from wasmforge.engines import wasmbin
from wasmforge.stages import opt

# two functions alike but for a constant, and a data segment of `data` bytes
WAT = """(module
  (memory (export "memory") 1)
  (func $a (export "a") (param $p i32) (result i32)
    (i32.add (i32.mul (local.get $p) (i32.const 7)) (i32.load (i32.const 16))))
  (func $b (export "b") (param $p i32) (result i32)
    (i32.add (i32.mul (local.get $p) (i32.const 9)) (i32.load (i32.const 16))))
  (data (i32.const 64) "{data}"))"""


def module(tmp_path, data_bytes: int) -> str:
    wat = tmp_path / f"m{data_bytes}.wat"
    wat.write_text(WAT.replace("{data}", "\\\\01" * data_bytes))
    out = tmp_path / f"m{data_bytes}.wasm"
    subprocess.run([toolchain.wasm_tools().path, "parse", str(wat), "-o", str(out)], check=True)
    out.write_bytes(wasmbin.add_custom_section(out.read_bytes(), wasmbin.METADATA_SECTION, b'{"wasmforge": 1}'))
    return str(out)


def test_code_share_is_code_over_data(tmp_path):
    with open(module(tmp_path, 4000), "rb") as f:
        small = opt.code_share(f.read())
    with open(module(tmp_path, 40), "rb") as f:
        large = opt.code_share(f.read())
    assert 0 < small < opt.MERGE_ABOVE_CODE_SHARE < large


@pytest.mark.parametrize("data_bytes, merged", [(40, True), (4000, False)])
def test_similar_kernels_are_merged_only_where_code_outweighs_the_data(tmp_path, data_bytes, merged):
    result = opt.run(module(tmp_path, data_bytes), opt.OptParams(), toolchain.wasm_opt(), str(tmp_path / "out.wasm"))
    assert ("--merge-similar-functions" in result["flags"]) is merged


SPLAT_WAT = """(module
  (memory (export "memory") 1)
  (func (export "f") (param $p i32) (result i32)
    (i32x4.extract_lane 1 (v128.load32_splat offset=4 (local.get $p))))
  (data (i32.const 64) "{data}"))"""


@pytest.mark.parametrize("split", [True, False])
def test_load_splats_are_split_after_wasm_opt_unless_told_not_to(tmp_path, split):
    wat = tmp_path / "s.wat"
    wat.write_text(SPLAT_WAT.replace("{data}", "\\\\01" * 4000))
    linked = tmp_path / "s.wasm"
    subprocess.run([toolchain.wasm_tools().path, "parse", str(wat), "-o", str(linked)], check=True)
    data = wasmbin.add_custom_section(linked.read_bytes(), "target_features", b"\x01+\x07simd128")
    linked.write_bytes(wasmbin.add_custom_section(data, wasmbin.METADATA_SECTION, b'{"wasmforge": 1}'))
    out = tmp_path / "out.wasm"
    result = opt.run(str(linked), opt.OptParams(split_load_splats=split), toolchain.wasm_opt(), str(out))
    assert result["load_splats_split"] == (1 if split else "off")
    assert wasmbin.metadata(out.read_bytes())["opt"]["load_splats_split"] == result["load_splats_split"]
    printed = subprocess.run([toolchain.wasm_tools().path, "print", str(out)], check=True, capture_output=True,
                             text=True).stdout
    assert ("v128.load32_splat" in printed) is not split
    assert ("f32x4.splat" in printed) is split
