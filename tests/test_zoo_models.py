"""The other zoo models build and validate through the same graph as ResNet-50 (in the
repository's build folder, like test_resnet50).

Three of them, chosen for what they add to ResNet-50: SqueezeNet (NCHW concatenations,
a classifier of 125 channel blocks), AlexNet (grouped convolutions, an LRN, streamed
products over 240 MB of weights) and Inception-v1 (pools, concatenations, LRN). VGG-19,
DenseNet-121, ShuffleNet and ZFNet-512 run the same kernel classes (their default schedules
are tested on small shapes in tests/compiler/) and are built and validated by
``doit bench:all``; VGG-19 alone would add 3-4 minutes of CI for its 548 MB of weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


def build(name: str) -> None:
    """``doit build:<name>`` in the repository's build folder (nothing to do when it is up to date)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WASMFORGE_BUILD", "WASMFORGE_MODELS")}
    res = subprocess.run([sys.executable, "-m", "doit", f"build:{name}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.parametrize("name", ["squeezenet", "bvlc_alexnet", "inception_v1"])
def test_zoo_model_builds_and_validates(name):
    build(name)
    report = json.load(open(os.path.join(ROOT, "build", name, "report.json")))
    assert report["passed"] is True and report["non_wasi_imports"] == []
    for r in report["inputs"]:
        for out in r["outputs"].values():
            assert out["top1_equal"] is True
            assert out["max_abs_error"] <= out["allowed_abs_error"]
    # the materialized weights are not degenerate: no saturated softmax
    mat = json.load(open(os.path.join(ROOT, "build", name, "materialize", "stage.json")))
    assert max(mat["result"]["max_probability"]) < 0.99


def test_a_profile_leaves_out_the_once_calls_a_run_leaves_out():
    """SqueezeNet's Winograd weights are computed on an instance's first run only: a profile
    of later runs must not charge them."""
    import numpy as np

    from wasmforge.engines.host import WasmModel

    build("squeezenet")
    plan = json.load(open(os.path.join(ROOT, "build", "squeezenet", "executor", "plan.json")))
    once = {c["kernel"] for c in plan["calls"][:plan["once_calls"]]}
    assert once and all(k.startswith("winograd_weight") for k in once)
    m = WasmModel(os.path.join(ROOT, "build", "squeezenet", "squeezenet.wasm"))
    prof = m.profile(np.zeros(m.inputs[0]["shape"], np.float32), runs=1)
    assert not once & {k["kernel"] for k in prof["kernels"]}
    assert sum(k["calls"] for k in prof["kernels"]) == len(plan["calls"]) - plan["once_calls"]
