"""The suite's summary, table and chart, from paired results (pure functions)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from wasmforge.bench import suite


def paired_result(ratio, ours, peer):
    return {"ratio": ratio, "ratio_spread": [ratio * 0.9, ratio * 1.1], "ours_ms": ours, "ortweb_ms": peer}


def test_rows_geomean_table_and_chart():
    in_v8 = {"v8_ratio": 0.3, "v8_ratio_spread": [0.25, 0.35], "ours_v8_ms": 6.0}
    rows = [suite.row("a", {**paired_result(0.5, 10.0, 20.0), **in_v8}, paired_result(0.4, 5.0, 12.5)),
            suite.row("b", paired_result(2.0, 40.0, 20.0), paired_result(1.6, 32.0, 20.0))]
    assert rows[0]["ours_2t_speedup"] == 2.0 and rows[1]["ours_2t_speedup"] == 1.25
    s = suite.summarize(rows, {"cpu": "AMD EPYC (family 26), 2 cores", "engine": suite.ENGINE,
                               "ortweb_version": "1.31.1", "turns": 8})
    assert s["geomean_1t"] == pytest.approx(1.0) and s["geomean_2t"] == pytest.approx(0.8)
    text = suite.table(s)
    assert "| a | 0.50 (0.45-0.55) | 0.40 (0.36-0.44) | 10.0 | 5.0 | 2.00x | 0.30 (0.25-0.35) | 6.0 |" in text
    assert "| b | 2.00 (1.80-2.20) | 1.60 (1.44-1.76) | 40.0 | 32.0 | 1.25x | - | - |" in text
    assert "| geometric mean | 1.00 | 0.80 | | | | 0.30 | |" in text and "family 26" in text
    chart = ET.fromstring(suite.svg(s))
    assert len([e for e in chart.iter() if e.tag.endswith("rect")]) == 4
    assert any((e.text or "").startswith("1.0") for e in chart.iter())


def test_the_suite_names_declared_models():
    from wasmforge import declarations

    models = declarations.load()
    assert set(suite.SUITE) <= set(models)
    assert {"text_encoder", "mobilenet_v2", "densenet121", "shufflenet", "zfnet512"} <= set(suite.SUITE)
