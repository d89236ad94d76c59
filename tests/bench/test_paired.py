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
