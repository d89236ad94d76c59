"""The one ABI table (wasmforge/abi.py) against the C runtime and the docs, and the CLI's
option table against doit's task parameters."""
from __future__ import annotations

import os
import re

import pytest
from conftest import ROOT

from wasmforge import abi, cli
from wasmforge.stages.link import LinkParams
from wasmforge.tune.options import TuneOptions, option_table

RUNTIME = os.path.join(ROOT, "wasmforge", "runtime")


def c_exports() -> set[str]:
    names = set()
    for f in ("wasmforge_runtime.c", "wasmforge_ffi.c", "wasmforge.h"):
        with open(os.path.join(RUNTIME, f)) as fh:
            text = fh.read()
        names |= set(re.findall(r"\b(wasmforge_[a-z_]+)\s*\(", text))
        names |= set(re.findall(r"WF_EXPORT\((wasmforge_[a-z_]+)\)", text))
    return names


def test_every_export_in_the_table_is_defined_by_the_runtime():
    missing = set(abi.exports(threads=True)) - c_exports()
    assert not missing, f"in wasmforge/abi.py but not in the C runtime: {sorted(missing)}"


def test_the_link_stage_exports_the_table():
    assert LinkParams().exports == tuple(abi.EXPORTS)
    assert LinkParams(threads=True).exports == tuple(abi.EXPORTS) + tuple(abi.THREADS_EXPORTS)


def test_the_abi_doc_lists_every_export():
    with open(os.path.join(ROOT, "docs", "abi.md")) as f:
        doc = f.read()
    missing = [n for n in ["_initialize", *abi.exports(threads=True), *abi.COMPONENT_EXPORTS] if f"`{n}`" not in doc]
    assert not missing, f"docs/abi.md does not list {missing}"


def test_metadata_says_the_threads_protocol_only_for_the_threads_variant():
    assert "threads" not in abi.metadata_abi(False)
    assert set(abi.metadata_abi(True)["threads"]) == {"memory", "prepare", "worker", "attached"}


@pytest.mark.parametrize("opts", [TuneOptions(), TuneOptions(trials=40, focus=2, jobs=2, fresh=True),
                                  TuneOptions(grid=True, threads=2, only="winograd"),
                                  TuneOptions(recheck=True, threads=2)])
def test_tune_options_survive_the_command_line(opts):
    args = cli.parser().parse_args(["tune", "m", *opts.argv()])
    assert TuneOptions(**{n: getattr(args, n) for n, *_ in option_table()}) == opts


@pytest.mark.parametrize("opts, problem", [
    (TuneOptions(only="conv"), "--only picks the kernels of a --grid run"),
    (TuneOptions(grid=True, trials=5), "--grid does not search: --trials would be ignored"),
    (TuneOptions(recheck=True, threads=2, jobs=2), "--recheck does not search: --jobs would be ignored"),
    (TuneOptions(grid=True, recheck=True), "--grid and --recheck are two runs"),
    (TuneOptions(recheck=True), "--recheck re-times the threads variant's log: give --threads T"),
])
def test_tune_refuses_options_it_would_ignore(opts, problem):
    with pytest.raises(Exception, match=re.escape(problem)):
        opts.check("models/m.tuning")


@pytest.mark.parametrize("result, figure", [
    ({"cache": "miss", "passed": False}, "miss, FAILED"),
    ({"cache": "hit local", "kernels": 3, "tuning_log": [], "tuning": None, "default_schedules": []},
     "hit local, 3 kernels, 0 from the tuning log, 0 default schedules"),
    ({"cache": "miss", "kernels": 9, "tuning_log": [], "tuning": None, "default_schedules": ["a"],
      "parallel_loops": ["b", "c"]}, "miss, 9 kernels, 0 from the tuning log, 1 default schedules, 2 parallel loops"),
    ({"cache": "miss", "bytes_before": 2_000_000, "bytes_after": 1_500_000, "flags": []}, "miss, 2.0 -> 1.5 MB"),
    ({"cache": "miss", "something": "new"}, "miss"),
])
def test_a_stage_prints_one_line(result, figure):
    assert cli.summary("x", result) == f"x: {figure}"
