"""bench.ab: two builds of one model alternated in one process."""
from __future__ import annotations

import pytest

from wasmforge.bench import ab


def test_ratios_are_per_turn_and_their_median():
    r = ab.ratio_summary([10.0, 20.0, 10.0], [5.0, 30.0, 9.0])
    assert r["ratio"] == 0.9 and r["ratio_spread"] == [0.5, 1.5] and r["turns"] == 3
    assert r["a_ms"] == 10.0 and r["b_ms"] == 9.0


def test_two_builds_alternate_and_their_outputs_are_compared(tiny_build):
    wasm = tiny_build.path("tiny", "tiny.wasm")
    r = ab.ab(wasm, tiny_build.path("tiny", "tiny.threads.wasm"), threads=1, turns=2, runs=1)
    assert r["turns"] == 2 and r["ratio_spread"][0] <= r["ratio"] <= r["ratio_spread"][1]
    assert r["max_abs_difference"] == 0.0          # the threads variant computes the same bits


def test_a_missing_module_is_refused_and_unlike_outputs_differ_by_infinity(tiny_build, tmp_path):
    import numpy as np

    assert ab.max_abs_difference([np.zeros(3)], [np.zeros(4)]) == float("inf")
    with pytest.raises(SystemExit):
        ab.main([tiny_build.path("tiny", "tiny.wasm"), str(tmp_path / "missing.wasm")])
