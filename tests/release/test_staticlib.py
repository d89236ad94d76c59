"""lib<model>.a: the link stage's objects as an archive a user links into their own WASI
program (examples/run_model.c), run in the wasmtime CLI and compared with the published
module."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from wasmforge import toolchain
from wasmforge.engines import wasmbin
from wasmforge.engines.host import WasmModel
from wasmforge.release import staticlib

AR = shutil.which("llvm-ar-19") or "/usr/bin/llvm-ar-19"
NM = shutil.which("llvm-nm-19") or "/usr/bin/llvm-nm-19"
WASMTIME = os.path.join(os.path.dirname(sys.executable), "wasmtime")


@pytest.fixture(scope="module")
def built(tiny_build, tmp_path_factory):
    d = tiny_build
    base = tmp_path_factory.mktemp("staticlib")
    wasm = d.path("tiny", "tiny.wasm")
    objects = [d.path("tiny", "link", "obj", n) for n in ("runtime.o", "executor.o", "weights.o")]
    objects.append(d.path("tiny", "emit", "kernels.o"))
    with open(wasm, "rb") as f:
        meta = wasmbin.metadata(f.read())
    out = base / "lib"
    return {"wasm": wasm, "objects": objects, "meta": meta, "out": str(out),
            "result": staticlib.run("tiny", objects, meta, AR, str(out))}


def test_archive_and_header(built):
    r = built["result"]
    assert r["members"] == ["runtime.o", "executor.o", "weights.o", "kernels.o"]
    nm = subprocess.run([NM, r["archive"]["path"]], capture_output=True, text=True, check=True).stdout
    assert any(line.split()[-2:] == ["T", "wasmforge_run"] for line in nm.splitlines() if line.strip())
    with open(r["header"]["path"]) as f:
        h = f.read()
    for line in ("int32_t wasmforge_run(void);", '#define TINY_INPUT0_NAME "x"',
                 "#define TINY_INPUT0_SHAPE {1, 3, 8, 8}", "#define TINY_INPUT0_BYTES 768",
                 '#define TINY_OUTPUT0_DTYPE "float32"', "#define TINY_OUTPUT0_BYTES 40"):
        assert line in h


def test_archive_is_deterministic(built, tmp_path):
    again = staticlib.run("tiny", built["objects"], built["meta"], AR, str(tmp_path))
    assert again["archive"]["sha256"] == built["result"]["archive"]["sha256"]
    assert again["header"]["sha256"] == built["result"]["header"]["sha256"]
    assert sorted(os.listdir(tmp_path)) == ["libtiny.a", "tiny.h", "wasmforge.h"]   # no temporaries left


def test_user_program_linked_against_the_archive_matches_the_published_module(built, tmp_path):
    """The docstring's link line, then `wasmtime run --dir`: run_model.c's output bytes equal
    the published (wasm-opt'ed) module's: the same kernels, and wasm-opt keeps float
    semantics."""
    app = str(tmp_path / "app.wasm")
    argv = staticlib.user_link_argv(toolchain.clang().path, [os.path.join(ROOT, "examples", "run_model.c")],
                                    built["out"], built["result"]["archive"]["path"], app)
    res = subprocess.run(argv, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    x = np.random.default_rng(7).standard_normal((1, 3, 8, 8)).astype(np.float32)
    x.tofile(tmp_path / "in.bin")
    res = subprocess.run([WASMTIME, "run", f"--dir={tmp_path}::/data", app, "/data/in.bin", "/data/out.bin"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(1, 10)
    want = WasmModel(built["wasm"]).run(x)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=0)

    # a wrong-sized input is refused with a message and a non-zero exit
    (tmp_path / "short.bin").write_bytes(b"\0" * 10)
    res = subprocess.run([WASMTIME, "run", f"--dir={tmp_path}::/data", app, "/data/short.bin", "/data/o.bin"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "expected exactly 768 bytes" in res.stderr
