"""``doit conformance --sample``: ONNX's own test models through the real pipeline, each
validated against its bundled expected outputs. No case may crash or give a wrong answer,
and every refusal says why."""
from __future__ import annotations

import json
import os

from wasmforge import conformance


def test_the_sample_builds_with_no_crash_and_no_wrong_answer(doit):
    res = doit("conformance", "--sample", check=False)
    with open(doit.path("conformance", "summary.json")) as f:
        summary = json.load(f)
    assert res.returncode == 0, res.stdout + res.stderr
    assert summary["total"] == len(conformance.SAMPLE) >= 15
    assert summary["counts"]["crashed"] == 0 and summary["counts"]["failed"] == 0, conformance.table(summary)
    assert summary["counts"]["passed"] >= 14, conformance.table(summary)
    for case in summary["cases"]:
        if case["outcome"] == "refused":
            assert case["stage"] and len(case["reason"]) > 20, case
        else:   # passed: its module is published and its report names the reference it met
            with open(doit.path("conformance", case["name"], "report.json")) as f:
                report = json.load(f)
            assert report["passed"] and any("reference" in r for r in report["inputs"])
            assert os.path.isfile(doit.path("conformance", case["name"], f"{case['name']}.wasm"))
    # what compiler/frontend.py rewrites: TVM alone asserts on the first, cannot lower the second
    passed = {c["name"] for c in summary["cases"] if c["outcome"] == "passed"}
    assert {"test_prelu_2d_multiparam", "test_operator_max"} <= passed
    refused = {c["name"]: c["reason"] for c in summary["cases"] if c["outcome"] == "refused"}
    assert "Gradient" in refused["test_gradient_of_add"]
    assert "string" in refused["test_strnorm_model_monday_casesensintive_lower"]
    assert "passed" in res.stdout or "passed" in res.stderr


def test_every_case_gets_a_unique_model_name_and_a_declaration_with_its_references():
    cases = conformance.cases()
    assert len(cases) == 140 and len({c.name for c in cases}) == 140
    assert set(conformance.SAMPLE) <= {c.name for c in cases}
    conv = next(c for c in cases if c.name == "test_conv2d")
    text = conformance.declaration(conv)
    assert f'reference = ["{conv.dir}"]' in text and "rtol = 0.001" in text
