"""Releases: a reproducible bundle, refusals, and OCI publishing to a real registry."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile

import pytest
from conftest import ROOT, Doit, copy_checkout, make_tiny_onnx
from test_oci import Registry

from wasmforge.release import oci


def declare(doit, name="tiny", seed=0, version="1.0.0", tolerance=""):
    make_tiny_onnx(os.path.join(doit.decls, f"{name}.onnx"), seed=seed)
    tol = f", tolerance=Tolerance({tolerance})" if tolerance else ""
    doit.declare(f"{name}.py", "from wasmforge.dsl import Tolerance, model\n"
                               f"model({name!r}, onnx={name + '.onnx'!r}, version={version!r}{tol})\n")


def release(doit, name="tiny", version="1.0.0"):
    return os.path.join(doit.dist, name, version)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    r = Registry(tmp_path_factory.mktemp("registry"))
    yield r
    r.stop()


def test_release_bundle_is_complete_deterministic_and_verifiable(doit):
    declare(doit)
    doit("publish:tiny")
    rel = release(doit)
    assert sorted(os.listdir(rel)) == ["SHA256SUMS", "libtiny.a", "manifest.json", "oci", "tiny-1.0.0.tar.gz",
                                       "tiny.h", "tiny.threads.wasm", "tiny.wasm", "wasmforge.h"]
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=rel, capture_output=True).returncode == 0
    assert sha(os.path.join(rel, "tiny.wasm")) == sha(doit.path("tiny", "tiny.wasm"))
    man = json.load(open(os.path.join(rel, "manifest.json")))
    assert man["model"] == "tiny" and man["version"] == "1.0.0" and man["validation"]["passed"] is True
    assert man["source"]["sha256"] == sha(os.path.join(doit.decls, "tiny.onnx"))
    assert {"clang", "wasm-ld", "wasm-opt", "apache-tvm"} <= set(man["toolchain"])
    assert "simd128" in man["features"] and man["inputs"][0]["shape"] == [1, 3, 8, 8]
    mt = man["variants"]["threads"]
    assert mt["sha256"] == sha(os.path.join(rel, "tiny.threads.wasm")) == sha(doit.path("tiny", "tiny.threads.wasm"))
    assert mt["validation"]["passed"] is True and mt["validated_with_threads"] == 2 and "atomics" in mt["features"]
    with tarfile.open(os.path.join(rel, "tiny-1.0.0.tar.gz")) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["SHA256SUMS", "libtiny.a", "manifest.json", "tiny.h",
                                             "tiny.threads.wasm", "tiny.wasm", "wasmforge.h"]
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o644 for m in members)
        assert tar.extractfile("tiny.wasm").read() == open(os.path.join(rel, "tiny.wasm"), "rb").read()
    before = sha(os.path.join(rel, "tiny-1.0.0.tar.gz"))
    doit("publish:tiny")                           # publishing the same build again: a no-op
    assert sha(os.path.join(rel, "tiny-1.0.0.tar.gz")) == before


def test_a_module_that_failed_validation_is_not_published(doit):
    declare(doit, name="strict", tolerance="atol=0.0, rtol=0.0")
    res = doit("publish:strict", check=False)
    assert res.returncode != 0 and "validation failed" in res.stderr
    assert not os.path.exists(os.path.join(doit.dist, "strict"))
    # and publish itself refuses a failed report, whatever is on disk
    os.makedirs(doit.path("strict"), exist_ok=True)
    res = subprocess.run([sys.executable, "-m", "wasmforge", "publish", "strict"], cwd=ROOT, env=doit.env(),
                         capture_output=True, text=True)
    assert res.returncode != 0 and "validation did not pass" in res.stderr
    assert not os.path.exists(os.path.join(doit.dist, "strict"))


def test_a_released_version_is_never_overwritten_with_other_content(doit):
    declare(doit, seed=1)
    doit("publish:tiny")
    first = sha(os.path.join(release(doit), "tiny-1.0.0.tar.gz"))
    declare(doit, seed=2)                           # new weights, same version
    res = doit("publish:tiny", check=False)
    assert res.returncode != 0 and "already released with different content" in res.stderr
    assert sha(os.path.join(release(doit), "tiny-1.0.0.tar.gz")) == first
    declare(doit, seed=2, version="1.0.1")
    doit("publish:tiny")
    assert os.path.isfile(os.path.join(release(doit, version="1.0.1"), "tiny-1.0.1.tar.gz"))


@pytest.mark.parametrize("spec, target", [
    ("127.0.0.1:5000", ("127.0.0.1:5000", "tiny")),
    ("127.0.0.1:5000/zoo/", ("127.0.0.1:5000", "zoo/tiny")),
    ("https://ghcr.io/acme/models", ("https://ghcr.io", "acme/models/tiny")),
    ("http://127.0.0.1:5000", ("http://127.0.0.1:5000", "tiny")),
    ("", None),
])
def test_registry_target_keeps_the_scheme_with_the_registry(monkeypatch, spec, target):
    from wasmforge.release.publish import registry_target

    monkeypatch.setenv("WASMFORGE_REGISTRY", spec)
    assert registry_target("tiny") == target


def test_oci_push_pull_and_refusal(doit, registry, tmp_path):
    env = {"WASMFORGE_REGISTRY": f"http://{registry.address}/wasmforge"}   # the URL form
    declare(doit, seed=1)
    doit("publish:tiny", **env)
    pulled = oci.pull(registry.address, "wasmforge/tiny", "1.0.0", str(tmp_path / "pulled"))
    layer = oci.blob_path(str(tmp_path / "pulled"), pulled["layer_digest"])
    assert sha(layer) == sha(doit.path("tiny", "tiny.wasm"))
    digest = oci.tag_exists(registry.address, "wasmforge/tiny", "1.0.0")
    doit("publish:tiny", **env)                     # again: nothing to push
    # another machine built other content under the same version: the registry refuses it
    other = Doit(tmp_path / "other" / "build", doit.decls)
    declare(other, seed=2)
    res = other("publish:tiny", check=False, **env)
    assert res.returncode != 0 and "already has this version with other content" in res.stderr
    assert oci.tag_exists(registry.address, "wasmforge/tiny", "1.0.0") == digest


def test_two_clean_checkouts_release_byte_identical_bundles(tmp_path):
    decls = tmp_path / "decls"
    decls.mkdir()
    make_tiny_onnx(decls / "tiny.onnx")
    (decls / "tiny.toml").write_text('name = "tiny"\nonnx = "tiny.onnx"\nversion = "2.0.0"\n')
    out = []
    for i in (1, 2):
        checkout = copy_checkout(tmp_path / f"checkout{i}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("WASMFORGE_")}
        env["WASMFORGE_MODELS"] = str(decls)
        res = subprocess.run([sys.executable, "-m", "doit", "publish:tiny"], cwd=checkout, env=env,
                             capture_output=True, text=True, timeout=1800)
        assert res.returncode == 0, res.stdout + res.stderr
        rel = os.path.join(checkout, "dist", "tiny", "2.0.0")
        out.append((sha(os.path.join(rel, "tiny.wasm")), sha(os.path.join(rel, "tiny-2.0.0.tar.gz")),
                    json.load(open(os.path.join(checkout, "build", "tiny", "emit", "stage.json")))["cache"]))
    assert out[0][2] == out[1][2] == "miss"         # both really built: separate stores
    assert out[0][:2] == out[1][:2]


def test_resnet50_release_pushed_to_the_registry_pulls_back_bit_identical(registry, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("WASMFORGE_BUILD", "WASMFORGE_MODELS", "WASMFORGE_CACHE")}
    env.update(WASMFORGE_DIST=str(tmp_path / "dist"), WASMFORGE_REGISTRY=f"{registry.address}/zoo")
    res = subprocess.run([sys.executable, "-m", "doit", "publish:resnet50"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stdout + res.stderr
    version = json.load(open(tmp_path / "dist" / "resnet50" / os.listdir(tmp_path / "dist" / "resnet50")[0]
                             / "manifest.json"))["version"]
    pulled = oci.pull(registry.address, "zoo/resnet50", version, str(tmp_path / "pulled"))
    layer = oci.blob_path(str(tmp_path / "pulled"), pulled["layer_digest"])
    assert sha(layer) == sha(os.path.join(ROOT, "build", "resnet50", "resnet50.wasm"))


def test_republishing_after_a_benchmark_keeps_the_release(doit):
    """New benchmark figures would change the manifest, not the module: the release stays."""
    declare(doit)
    doit("publish:tiny")
    tar = os.path.join(release(doit), "tiny-1.0.0.tar.gz")
    before = sha(tar)
    res = doit("bench:tiny", WASMFORGE_BENCH_REPEATS="1", WASMFORGE_BENCH_ROUNDS="2")
    assert "onnxruntime native 1t" in res.stdout
    with open(doit.path("tiny", "bench.json")) as f:
        bench = json.load(f)
    # two rounds of one timing each: every system's median is over both rounds' timings
    assert bench["rounds"] == 2
    timed = [s for s in bench["systems"].values() if "median_ms" in s]
    assert timed and all(len(s["times_ms"]) == 2 for s in timed)
    # our module's startup is timed once (the first round), not once per round
    ours = bench["systems"]["wasmforge wasmtime 1t"]
    assert ours["load_ms"] > 0 and ours["load_from_aot_cache_ms"] > 0 and ours["first_ms"] > 0
    doit("publish:tiny")
    assert sha(tar) == before
