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
