"""Every case of the generated corpus of bad and odd input (``tests/corpus.py``) through the
real task graph: a clear one-line error naming the file and the problem, a non-zero exit, no
traceback, no hang, no artifact that looks finished; and afterwards a store that verifies."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ROOT
from corpus import generate

TIME_LIMIT = 240   # seconds per case


def build(case, store: str) -> dict:
    build_dir = os.path.join(case.dir, "build")
    env = dict(os.environ, WASMFORGE_BUILD=build_dir, WASMFORGE_MODELS=case.dir, WASMFORGE_CACHE=store)
    env.pop("WASMFORGE_REMOTE_CACHE", None)
    try:
        res = subprocess.run([sys.executable, "-m", "doit", "-f", os.path.join(ROOT, "dodo.py"), f"build:{case.name}"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired:
        return {"case": case, "problems": [f"no answer within {TIME_LIMIT} s"]}
    text = res.stdout + res.stderr
    published = os.path.join(build_dir, case.name, f"{case.name}.wasm")
    report = os.path.join(build_dir, case.name, "report.json")
    problems = []
    if "Traceback" in text:
        problems.append("a traceback")
    if res.returncode == 0:
        valid = (case.expect == "error or valid" and os.path.isfile(published)
                 and json.load(open(report))["passed"] is True)
        if not valid:
            problems.append("exit status 0")
    else:
        problems += [f"no mention of {n!r}" for n in case.needles if n not in text]
        if "error:" not in text:
            problems.append("no 'error:' line")
        problems += [f"{os.path.basename(p)} exists" for p in (published, report) if os.path.exists(p)]
    return {"case": case, "problems": problems, "output": text[-1500:]}


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    cases = generate(str(root / "cases"))
    store = str(root / "store")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(lambda c: build(c, store), cases)), store


def test_the_corpus_is_large_and_covers_every_kind(corpus_results):
    results, _ = corpus_results
    names = [r["case"].name for r in results]
    assert len(names) >= 60
    for kind in ("truncated_", "flipped_", "undefined_value", "duplicate_", "cycle", "zero_dim", "negative_dim",
                 "huge_dim", "string_", "complex_", "bfloat16_", "external_relative", "external_absolute",
                 "external_symlink", "external_missing", "external_short", "opset_too_new", "opset_too_old",
                 "unknown_domain", "empty_graph", "output_is_input", "toml_", "py_"):
        assert any(n.startswith(kind) for n in names), kind


def test_every_case_ends_in_a_clear_error(corpus_results):
    results, _ = corpus_results
    bad = [f"{r['case'].name}: {', '.join(r['problems'])}\n{r.get('output', '')}" for r in results if r["problems"]]
    assert not bad, f"{len(bad)} of {len(results)} cases:\n\n" + "\n\n".join(bad)


def test_the_store_verifies_after_the_corpus(corpus_results):
    from wasmforge.store.local import Store

    _, store = corpus_results
    assert Store(store).verify() == []
