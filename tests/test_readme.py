"""The README's examples, run as written, on the ResNet-50 module `doit build:resnet50` makes
(and on its release for the static-library link line)."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import RESNET50_THREADS_LOG, ROOT


def readme_blocks(lang: str) -> list[str]:
    with open(os.path.join(ROOT, "README.md")) as f:
        return re.findall(rf"```{lang}\n(.*?)```", f.read(), flags=re.S)


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMFORGE_")}
    dist = tmp_path_factory.mktemp("dist")
    env["WASMFORGE_DIST"] = str(dist)
    res = subprocess.run([sys.executable, "-m", "doit", "publish:resnet50"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stdout + res.stderr
    yield str(dist)
    shutil.rmtree(dist, ignore_errors=True)   # two ResNet-50 modules and a bundle: 1.3 GB


def test_the_python_examples(resnet50, monkeypatch):
    """The one-thread example, then the threads one (it reuses the first block's ``x``)."""
    first, threads = [b for b in readme_blocks("python") if "WasmModel(" in b]
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(first, "README.md", "exec"), scope)   # noqa: S102 - our own README
    probs = scope["probs"]
    assert probs.shape == (1, 1000) and abs(float(probs.sum()) - 1.0) < 1e-4
    exec(compile(threads, "README.md", "exec"), scope)   # noqa: S102
    if RESNET50_THREADS_LOG:   # kernels of its own: the same result, within the validate tolerance
        from wasmforge.dsl import Tolerance
        from wasmforge.stages.validate import compare

        assert compare(scope["probs"], probs, Tolerance())["passed"]
    else:
        np.testing.assert_array_equal(scope["probs"], probs)   # 2 threads, the same bytes


def test_the_wasmtime_cli_example(resnet50):
    (line,) = [ln for b in readme_blocks("sh") for ln in b.splitlines() if "--invoke wasmforge_run" in ln]
    argv = shlex.split(line.split("#")[0])
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0"


def test_the_static_library_link_line(resnet50, tmp_path):
    """README's clang + wasmtime lines, with the release folder and an I/O folder of ours."""
    (block,) = [b for b in readme_blocks("sh") if "libresnet50.a" in b]
    version = os.listdir(os.path.join(resnet50, "resnet50"))[0]
    rel = os.path.join(resnet50, "resnet50", version)
    io = tmp_path / "io"
    io.mkdir()
    x = np.random.default_rng(7).standard_normal((1, 3, 224, 224)).astype(np.float32)
    (io / "input.bin").write_bytes(x.tobytes())
    script = block.replace("\\\n", " ").replace("dist/resnet50/0.1.0", rel).replace("/tmp/io", str(io))
    script = script.replace("-o app.wasm", f"-o {tmp_path}/app.wasm").replace(" app.wasm ", f" {tmp_path}/app.wasm ")
    for line in script.strip().splitlines():
        res = subprocess.run(shlex.split(line), cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"{line}\n{res.stderr}"
    from wasmforge.engines.host import WasmModel

    want = WasmModel(os.path.join(rel, "resnet50.wasm")).run(x)[0]
    got = np.frombuffer((io / "output.bin").read_bytes(), np.float32).reshape(want.shape)
    np.testing.assert_array_equal(got, want)
