"""Content-addressed caching and incremental rebuilds, on the real graph with a tiny model."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, Doit, make_tiny_onnx, ran, sha

from wasmforge import dsl, graph
from wasmforge.store import digests, local

ALL = ["import", "relax_build", "emit", "executor", "link", "opt", "validate",
       "link_threads", "opt_threads", "validate_threads"]


def declare_tiny(doit, name="tiny", opt_level="-O3", seed=0):
    make_tiny_onnx(os.path.join(doit.decls, f"{name}.onnx"), seed=seed)
    doit.declare(f"{name}.py", "from wasmforge.dsl import model\n"
                               f"model({name!r}, onnx={name + '.onnx'!r}, opt_level={opt_level!r})\n")


def sources(doit, name="tiny"):
    """stage -> how run_stage served it ("miss", "hit local", "hit remote")."""
    return {s: json.load(open(doit.path(name, s, "stage.json")))["cache"] for s in ALL}


# ------------------------------------------------------------------ keys


def test_stage_key_is_a_pure_function_of_config_and_input_digests():
    a = graph.stage_key("opt", {"params": {"level": "-O3"}}, {"link/x.wasm": "ab"})
    assert a == graph.stage_key("opt", {"params": {"level": "-O3"}}, {"link/x.wasm": "ab"})
    assert a != graph.stage_key("opt", {"params": {"level": "-O2"}}, {"link/x.wasm": "ab"})
    assert a != graph.stage_key("opt", {"params": {"level": "-O3"}}, {"link/x.wasm": "cd"})
    assert a != graph.stage_key("link", {"params": {"level": "-O3"}}, {"link/x.wasm": "ab"})


def test_configs_name_no_paths_and_an_opt_change_touches_only_opt(empty_registry, tmp_path, monkeypatch):
    onnx_path = make_tiny_onnx(tmp_path / "t.onnx")
    m3 = dsl.model("t3", onnx=onnx_path, declared_in=str(tmp_path / "d.py"))
    m2 = dsl.model("t2", onnx=onnx_path, opt_level="-O2", declared_in=str(tmp_path / "d.py"))
    monkeypatch.setenv("WASMFORGE_BUILD", str(tmp_path / "one"))
    g3 = {s.name: s for s in graph.stages(m3)}
    monkeypatch.setenv("WASMFORGE_BUILD", str(tmp_path / "two"))
    g2 = {s.name: s for s in graph.stages(m2)}
    differs = [n for n in g3 if digests.digest(g3[n].config) != digests.digest(g2[n].config)]
    # the model name is embedded in link's metadata; opt's level is opt's alone (both variants)
    assert differs == ["link", "opt", "link_threads", "opt_threads"]
    assert set(g3["link"].config) - {"model"} == set(g2["link"].config) - {"model"}
    for st in g3.values():
        text = json.dumps(st.config)
        assert str(tmp_path) not in text and ROOT not in text, st.name
        assert not any(label.startswith("/") for label in st.inputs)


# ------------------------------------------------------------------ incremental builds


def test_noop_touch_and_a_changed_opt_option(doit):
    declare_tiny(doit)
    first = doit("build:tiny")
    assert sorted(ran(first)) == sorted(ALL)
    assert set(sources(doit).values()) == {"miss"}

    assert ran(doit("build:tiny")) == []                       # nothing changed
    os.utime(os.path.join(doit.decls, "tiny.onnx"))           # touch: same bytes
    assert ran(doit("build:tiny")) == []

    declare_tiny(doit, opt_level="-O2")                        # a wasm-opt option
    assert sorted(ran(doit("build:tiny"))) == ["opt", "opt_threads", "validate", "validate_threads"]
    meta = json.load(open(doit.path("tiny", "report.json")))["metadata"]
    assert meta["opt"]["level"] == "-O2"


def test_a_changed_tuning_log_reuses_import(doit):
    declare_tiny(doit)
    doit("build:tiny")
    log = os.path.join(doit.decls, "tiny.tuning")
    os.makedirs(log)
    for f in ("database_workload.json", "database_tuning_record.json"):
        open(os.path.join(log, f), "w").close()
    res = doit("build:tiny")
    assert "import" not in ran(res) and "relax_build" in ran(res)
    assert json.load(open(doit.path("tiny", "relax_build", "stage.json")))["cache"] == "miss"
    # an empty log schedules nothing: the lowered module is the same bytes, so the stages
    # after it are up to date, as Bazel would judge them
    assert ran(res) == ["relax_build"]


def test_deleted_build_folder_is_restored_without_running_tvm(doit, no_tvm):
    declare_tiny(doit)
    doit("build:tiny")
    wasm = sha(doit.path("tiny", "tiny.wasm"))
    shutil.rmtree(doit.build)
    doit("build:tiny", **no_tvm)
    assert set(sources(doit).values()) == {"hit local"}
    assert sha(doit.path("tiny", "tiny.wasm")) == wasm
    assert json.load(open(doit.path("tiny", "report.json")))["passed"] is True


def test_two_versions_alternately_are_served_from_the_store(doit, no_tvm):
    declare_tiny(doit, seed=1)
    doit("build:tiny")
    v1 = sha(doit.path("tiny", "tiny.wasm"))
    declare_tiny(doit, seed=2)
    doit("build:tiny")
    v2 = sha(doit.path("tiny", "tiny.wasm"))
    assert v1 != v2
    for seed, want in ((1, v1), (2, v2)):
        declare_tiny(doit, seed=seed)
        res = doit("build:tiny", **no_tvm)
        assert sorted(ran(res)) == sorted(ALL)                  # doit saw new inputs ...
        assert set(sources(doit).values()) == {"hit local"}    # ... the store had them all
        assert sha(doit.path("tiny", "tiny.wasm")) == want


# ------------------------------------------------------------------ integrity


def test_a_corrupted_blob_is_reported_evicted_and_rebuilt(doit):
    declare_tiny(doit)
    doit("build:tiny")
    kernels = json.load(open(doit.path("tiny", "emit", "stage.json")))
    entry = local.Store(doit.store).get_action(kernels["key"])
    blob = os.path.join(doit.store, "cas", entry["outputs"]["emit/kernels.o"]["sha256"])
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xfe\xfd")
    shutil.rmtree(doit.build)
    res = doit("build:tiny")
    assert "is corrupted" in res.stderr and "evicted, rebuilding" in res.stderr
    assert sources(doit)["emit"] == "miss" and sources(doit)["import"] == "hit local"
    assert sha(blob) == os.path.basename(blob)               # the rebuilt blob is sound
    assert json.load(open(doit.path("tiny", "report.json")))["passed"] is True


def test_outputs_are_stored_once_and_a_stage_run_again_never_writes_through_them(doit):
    """Build outputs are hard links to their blobs (every byte stored once). The link stage
    compiles its objects in place (``clang -o``): run again on a miss, it must replace its
    old outputs, not write into the files the store holds."""
    declare_tiny(doit)
    doit("build:tiny")
    store = local.Store(doit.store)
    key = json.load(open(doit.path("tiny", "link", "stage.json")))["key"]
    blobs = {label: os.path.join(doit.store, "cas", o["sha256"])
             for label, o in store.get_action(key)["outputs"].items()}
    assert len(blobs) == 4
    for label, blob in blobs.items():
        assert os.path.samefile(doit.path("tiny", label), blob), label
    before = {label: os.stat(blob).st_mtime_ns for label, blob in blobs.items()}
    store.evict_action(key)
    subprocess.run([sys.executable, "-m", "wasmforge", "stage", "link", "tiny"], cwd=ROOT, env=doit.env(), check=True,
                   capture_output=True)
    assert json.load(open(doit.path("tiny", "link", "stage.json")))["cache"] == "miss"
    assert {label: os.stat(blob).st_mtime_ns for label, blob in blobs.items()} == before
    check_nothing_half_finished(doit)           # every blob still hashes to its name


def test_an_unreadable_action_entry_is_evicted_and_rebuilt(doit):
    declare_tiny(doit)
    doit("build:tiny")
    key = json.load(open(doit.path("tiny", "opt", "stage.json")))["key"]
    with open(os.path.join(doit.store, "ac", key), "w") as f:
        f.write('{"outputs": ')
    shutil.rmtree(doit.build)
    res = doit("build:tiny")
    assert "is unreadable" in res.stderr
    assert sources(doit)["opt"] == "miss"
    assert local.Store(doit.store).get_action(key) is not None


def check_nothing_half_finished(doit):
    """Every stage.json present vouches for outputs that exist and match the action entry;
    every blob in the store hashes to its name; every action entry's blobs are present."""
    store = local.Store(doit.store)
    cas = os.path.join(doit.store, "cas")
    for name in os.listdir(cas):
        assert sha(os.path.join(cas, name)) == name
    for key in os.listdir(os.path.join(doit.store, "ac")):
        entry = store.get_action(key)
        assert entry is not None
        assert all(store.has_blob(o["sha256"]) for o in entry["outputs"].values())
    for stage in ALL:
        sj = doit.path("tiny", stage, "stage.json")
        if not os.path.exists(sj):
            continue
        rec = json.load(open(sj))
        entry = store.get_action(rec["key"])
        assert entry is not None, f"{stage}: finished without a cache entry"
        for label, out in entry["outputs"].items():
            path = doit.path("tiny", label)
            assert os.path.exists(path), f"{stage}: {label} missing"
    if os.path.exists(doit.path("tiny", "tiny.wasm")):
        assert json.load(open(doit.path("tiny", "report.json")))["passed"] is True


@pytest.mark.parametrize("delay", [0.8, 2.0, 3.5, 6.0])
def test_kill_9_at_any_moment_leaves_nothing_that_looks_finished(doit, delay):
    declare_tiny(doit)
    proc = subprocess.Popen(doit.argv("build:tiny"), cwd=ROOT, env=doit.env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    check_nothing_half_finished(doit)
    doit("build:tiny")
    check_nothing_half_finished(doit)
    assert json.load(open(doit.path("tiny", "report.json")))["passed"] is True


def test_concurrent_builds_on_one_store(tmp_path):
    """Two separate processes, two build folders, one store: each stage is built once, the
    other process waits for it and is served from the store; nothing is duplicated."""
    a = Doit(tmp_path / "a" / "build", tmp_path / "decls", store=tmp_path / "store")
    b = Doit(tmp_path / "b" / "build", tmp_path / "decls", store=tmp_path / "store")
    declare_tiny(a)
    procs = [subprocess.Popen(d.argv("build:tiny"), cwd=ROOT, env=d.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for d in (a, b)]
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, out + err
    assert sha(a.path("tiny", "tiny.wasm")) == sha(b.path("tiny", "tiny.wasm"))
    events = open(tmp_path / "store" / "events.log").read().split("\n")
    assert sum(" miss " in e for e in events) == len(ALL)
    assert sum(" hit local " in e for e in events) == len(ALL)
    assert os.listdir(tmp_path / "store" / "tmp") == []
    check_nothing_half_finished(a)


def test_doit_parallel_two_models(doit):
    declare_tiny(doit, name="tiny", seed=1)
    declare_tiny(doit, name="tiny2", seed=2)
    doit("-n", "2", "build:tiny", "build:tiny2")
    for name in ("tiny", "tiny2"):
        assert json.load(open(doit.path(name, "report.json")))["passed"] is True


# ------------------------------------------------------------------ store management


def test_cache_stats_and_trim(doit):
    declare_tiny(doit)
    doit("build:tiny")
    shutil.rmtree(doit.build)
    doit("build:tiny")
    stats = doit("cache_stats").stdout
    assert "hit_rate: 0.5" in stats and doit.store in stats
    before = len(os.listdir(os.path.join(doit.store, "cas")))
    out = doit("cache_trim", "--limit", "20K").stdout
    assert "removed_blobs" in out
    blobs = [os.path.join(doit.store, "cas", n) for n in os.listdir(os.path.join(doit.store, "cas"))]
    assert len(blobs) < before and sum(os.path.getsize(b) for b in blobs) <= 20 * 1024
    # entries whose blobs were trimmed are gone too: a fresh build rebuilds what is missing
    shutil.rmtree(doit.build)
    doit("build:tiny")
    assert "miss" in sources(doit).values()
    assert json.load(open(doit.path("tiny", "report.json")))["passed"] is True


def test_the_store_has_a_size_limit():
    assert local.size_limit({}) == 10 << 30                     # the default
    assert local.size_limit({"WASMFORGE_CACHE_MAX": "500M"}) == 500 << 20
    assert local.size_limit({"WASMFORGE_CACHE_MAX": "0"}) is None
    with pytest.raises(ValueError, match="WASMFORGE_CACHE_MAX='lots' is not a size"):
        local.size_limit({"WASMFORGE_CACHE_MAX": "lots"})


def test_trim_keeps_what_another_build_is_using(tmp_path):
    store = local.Store(str(tmp_path / "store"))
    shas = {}
    for key in ("a" * 64, "b" * 64):
        blob = tmp_path / key[:1]
        blob.write_bytes(key.encode() * 100)
        shas[key] = store.put_file(str(blob))
        store.put_action(key, {"outputs": {"x": {"sha256": shas[key], "size": 6400}}, "result": {}})
        old = time.time() - 7200
        os.utime(os.path.join(store.root, "ac", key), (old, old))
    with store.lock("a" * 64):                     # a build is reading or writing entry a
        assert store.in_use("a" * 64) and not store.in_use("b" * 64)
        store.trim(0)
    assert store.has_blob(shas["a" * 64]) and store.get_action("a" * 64) is not None
    assert not store.has_blob(shas["b" * 64]) and store.get_action("b" * 64) is None


def test_a_build_trims_the_store_to_its_limit(doit):
    declare_tiny(doit)
    res = doit("build:tiny", WASMFORGE_CACHE_MAX="20K")
    assert "over its limit" in res.stdout, res.stdout
    blobs = [os.path.join(doit.store, "cas", n) for n in os.listdir(os.path.join(doit.store, "cas"))]
    assert sum(os.path.getsize(b) for b in blobs) <= 20 * 1024
    assert os.path.isfile(doit.path("tiny", "tiny.wasm"))     # the build's outputs stay
    res = doit("build:tiny", WASMFORGE_CACHE_MAX="lots", check=False)
    assert res.returncode != 0 and "WASMFORGE_CACHE_MAX='lots' is not a size" in res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr


def test_verify_names_a_corrupted_blob_and_an_entry_without_its_blob(tmp_path):
    from wasmforge.store.local import Store

    store = Store(str(tmp_path / "store"))
    (tmp_path / "a.bin").write_bytes(b"some bytes")
    sha = store.put_file(str(tmp_path / "a.bin"))
    store.put_action("k1", {"outputs": {"a": {"sha256": sha, "size": 10}}, "result": {}})
    assert store.verify() == []
    blob = os.path.join(store.root, "cas", sha)
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.write(b"S")
    store.put_action("k2", {"outputs": {"b": {"sha256": "0" * 64, "size": 1}}, "result": {}})
    assert store.verify() == [f"blob {sha}: its bytes do not match its name",
                              "action k2: outputs ['b'] have no blob"]
