"""bench.paired: our module and onnxruntime-web (from npm, in Node) alternated in turns."""
from __future__ import annotations

import os

from wasmforge.bench import ORT_WEB_VERSION, paired


def test_turns_alternate_with_onnxruntime_web_kept_alive(tiny_build):
    wasm = tiny_build.path("tiny", "tiny.wasm")
    onnx_path = os.path.join(tiny_build.decls, "tiny.onnx")
    r = paired.paired(onnx_path, wasm, tiny_build.build, threads=1, turns=3, runs=2)
    assert r["ortweb_version"] == ORT_WEB_VERSION
    assert r["turns"] == 3 and r["ratio_spread"][0] <= r["ratio"] <= r["ratio_spread"][1]
    assert r["ours_ms"] > 0 and r["ortweb_ms"] > 0


def test_our_module_runs_in_nodes_wasi_as_a_third_system(tiny_build):
    wasm = tiny_build.path("tiny", "tiny.wasm")
    onnx_path = os.path.join(tiny_build.decls, "tiny.onnx")
    r = paired.paired(onnx_path, wasm, tiny_build.build, threads=1, turns=2, runs=2, v8=True)
    assert r["ours_v8_ms"] > 0 and r["v8_ratio_spread"][0] <= r["v8_ratio"] <= r["v8_ratio_spread"][1]
    # the threads variant needs a host that spawns its workers: no V8 row on 2 threads
    assert "v8_ratio" not in paired.paired(onnx_path, tiny_build.path("tiny", "tiny.threads.wasm"),
                                           tiny_build.build, threads=2, turns=1, runs=1, v8=True)


def test_a_module_node_cannot_run_is_a_clear_error(tiny_build, tmp_path):
    import numpy as np
    import pytest

    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\1\0\0\0")              # a valid, empty module: no exports
    with pytest.raises(RuntimeError, match="bad.wasm"):
        paired.ours_in_node(str(bad), [{"name": "x", "dtype": "float32", "shape": [1]}],
                            {"x": np.zeros(1, np.float32)})
