"""The shared remote cache, against a real nginx (WebDAV) on loopback."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import RESNET50_THREADS_LOG, ROOT, Doit, Nginx, copy_checkout, ran, sha
from test_cache import ALL, declare_tiny, sources


def second_machine(tmp_path, first: Doit) -> Doit:
    """Same declarations, a new build folder and a new, empty local store."""
    return Doit(tmp_path / "second" / "build", first.decls, store=tmp_path / "second" / "store")


def test_a_second_machine_builds_from_the_remote_without_tvm(doit, nginx, tmp_path, no_tvm):
    declare_tiny(doit)
    doit("build:tiny", WASMFORGE_REMOTE_CACHE=nginx.url)
    assert os.listdir(os.path.join(nginx.data, "cache", "ac"))
    other = second_machine(tmp_path, doit)
    other("build:tiny", WASMFORGE_REMOTE_CACHE=nginx.url, **no_tvm)
    assert set(sources(other).values()) == {"hit remote"}
    assert sha(other.path("tiny", "tiny.wasm")) == sha(doit.path("tiny", "tiny.wasm"))
    # what came from the remote is now in the second machine's own store
    shutil.rmtree(other.build)
    other("build:tiny", **no_tvm)
    assert set(sources(other).values()) == {"hit local"}


def test_results_built_before_the_remote_was_configured_are_shared(doit, nginx, tmp_path, no_tvm):
    declare_tiny(doit)
    doit("build:tiny")                                   # no remote yet
    shutil.rmtree(doit.build)
    doit("build:tiny", WASMFORGE_REMOTE_CACHE=nginx.url)  # local hits, pushed to the remote
    other = second_machine(tmp_path, doit)
    other("build:tiny", WASMFORGE_REMOTE_CACHE=nginx.url, **no_tvm)
    assert set(sources(other).values()) == {"hit remote"}


@pytest.mark.parametrize("which", ["unreachable", "http 500"])
def test_a_broken_remote_warns_and_builds_locally(doit, nginx, which):
    url = "http://127.0.0.1:9/cache" if which == "unreachable" else nginx.bad_url
    declare_tiny(doit)
    res = doit("build:tiny", WASMFORGE_REMOTE_CACHE=url, WASMFORGE_REMOTE_CACHE_TIMEOUT="3")
    assert "remote cache" in res.stderr and "building locally" in res.stderr
    assert set(sources(doit).values()) == {"miss"}
    assert json.load(open(doit.path("tiny", "report.json")))["passed"] is True


def test_a_blob_that_does_not_match_its_digest_is_ignored(doit, nginx, tmp_path):
    declare_tiny(doit)
    doit("build:tiny", WASMFORGE_REMOTE_CACHE=nginx.url)
    emit_key = json.load(open(doit.path("tiny", "emit", "stage.json")))["key"]
    entry = json.load(open(os.path.join(nginx.data, "cache", "ac", emit_key)))
    blob = os.path.join(nginx.data, "cache", "cas", entry["outputs"]["emit/kernels.o"]["sha256"])
    with open(blob, "r+b") as f:                        # the server now serves poisoned bytes
        f.seek(64)
        f.write(b"poison")
    other = second_machine(tmp_path, doit)
    res = other("build:tiny", WASMFORGE_REMOTE_CACHE=nginx.url)
    assert "does not match its digest" in res.stderr
    assert sources(other)["emit"] == "miss" and sources(other)["import"] == "hit remote"
    local_blob = os.path.join(other.store, "cas", os.path.basename(blob))
    assert sha(local_blob) == os.path.basename(blob)    # nothing poisoned reached the store
    assert json.load(open(other.path("tiny", "report.json")))["passed"] is True


def test_credentials_come_from_the_environment_and_are_never_written(tmp_path, no_tvm):
    user, password = "team", "s3cr3t-Pa55word"
    server = Nginx(tmp_path / "authed", auth=(user, password))
    try:
        first = Doit(tmp_path / "one" / "build", tmp_path / "decls", store=tmp_path / "one" / "store")
        declare_tiny(first)
        creds = {"WASMFORGE_REMOTE_CACHE": server.url, "WASMFORGE_REMOTE_CACHE_USER": user,
                 "WASMFORGE_REMOTE_CACHE_PASSWORD": password}
        outputs = [first("build:tiny", **creds)]
        # without credentials the server says 401: a warning, and a local build
        nocred = Doit(tmp_path / "two" / "build", tmp_path / "decls", store=tmp_path / "two" / "store")
        res = nocred("build:tiny", WASMFORGE_REMOTE_CACHE=server.url)
        assert "HTTP 401" in res.stderr and set(sources(nocred).values()) == {"miss"}
        # with them, a fresh machine is served by the remote
        third = Doit(tmp_path / "three" / "build", tmp_path / "decls", store=tmp_path / "three" / "store")
        outputs.append(third("build:tiny", **creds, **no_tvm))
        assert set(sources(third).values()) == {"hit remote"}
        # credentials in the URL work too, and are not echoed in warnings
        url = server.url.replace("http://", f"http://{user}:{password}@")
        fourth = Doit(tmp_path / "four" / "build", tmp_path / "decls", store=tmp_path / "four" / "store")
        outputs.append(fourth("build:tiny", WASMFORGE_REMOTE_CACHE=url, **no_tvm))
        bad = url.replace(str(server.port), str(server.bad_port))
        outputs.append(Doit(tmp_path / "five" / "build", tmp_path / "decls", store=tmp_path / "five" / "store")(
            "build:tiny", WASMFORGE_REMOTE_CACHE=bad))
        assert "building locally" in outputs[-1].stderr
        for res in outputs:
            assert password not in res.stdout + res.stderr
        for d in ("one", "two", "three", "four", "five"):
            for dirpath, _, files in os.walk(tmp_path / d):
                for name in files:
                    with open(os.path.join(dirpath, name), "rb") as f:
                        assert password.encode() not in f.read(), os.path.join(dirpath, name)
    finally:
        server.stop()


def test_a_clean_second_checkout_builds_resnet50_from_the_remote_without_tvm(nginx, tmp_path, no_tvm):
    """The product, shared: this checkout builds (or restores from its store) ResNet-50 with
    the remote configured, which fills it; a copy of the sources at another path, with no build folder
    and no store, then builds ResNet-50 with TVM unimportable."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WASMFORGE_BUILD", "WASMFORGE_MODELS", "WASMFORGE_CACHE")}
    env["WASMFORGE_REMOTE_CACHE"] = nginx.url
    doit = [sys.executable, "-m", "doit", "build:resnet50"]
    # a fresh build folder, so every stage runs (served by this checkout's store when it has
    # the results, built otherwise) and meets the remote; an up-to-date build/ would run none
    first = {**env, "WASMFORGE_BUILD": str(tmp_path / "first-build")}
    res = subprocess.run(doit, cwd=ROOT, env=first, capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stdout + res.stderr
    checkout = tmp_path / "checkout"
    copy_checkout(checkout)
    res = subprocess.run(doit, cwd=checkout, env={**env, **no_tvm}, capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stdout + res.stderr
    expect = ["materialize"] + ALL + (["relax_build_threads", "emit_threads"] if RESNET50_THREADS_LOG else [])
    assert len(ran(res)) == len(expect)   # every stage, materialize included, was asked for ...
    for stage in expect:
        rec = json.load(open(checkout / "build" / "resnet50" / stage / "stage.json"))
        assert rec["cache"] == "hit remote", stage           # ... and served by the remote
    report = json.load(open(checkout / "build" / "resnet50" / "report.json"))
    assert report["passed"] is True
    assert sha(checkout / "build" / "resnet50" / "resnet50.wasm") == sha(tmp_path / "first-build" / "resnet50" / "resnet50.wasm")
