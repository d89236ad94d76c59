"""wasmforge's task graph. Thin on purpose: it turns each model declared in ``models/``
into one doit task per stage (``pipeline/stages.py`` says what each stage reads and
writes), plus ``build:<model>``, the whole pipeline for one model.

    doit build:resnet50        # ONNX -> validated build/resnet50/resnet50.wasm
    doit list --all            # every stage of every model
"""
import os
import sys

from doit.tools import config_changed

import models
from pipeline import stages
from pipeline.dsl import DeclarationError
from pipeline.errors import StageError
from toolchain import ToolchainError

DOIT_CONFIG = {"default_tasks": ["build:resnet50"], "verbosity": 2, "action_string_formatting": "new",
               # doit's state lives with the artifacts: delete build/ and both are gone
               "dep_file": os.path.join(stages.build_root(), ".doit.db")}

try:
    MODELS = models.load()
    GRAPHS = {name: stages.graph(m) for name, m in sorted(MODELS.items())}
except (DeclarationError, StageError, ToolchainError) as e:
    sys.exit(f"error: {e}")   # bad declaration or missing tool: say what and how, no traceback
os.makedirs(stages.build_root(), exist_ok=True)


def _stage_tasks(stage_name):
    for name, graph in GRAPHS.items():
        for st in graph:
            if st.name == stage_name:
                yield {"name": name,
                       "actions": [[sys.executable, "-m", "pipeline", st.name, name]],
                       "file_dep": st.file_dep, "targets": st.targets,
                       "uptodate": [config_changed(st.config)],
                       "doc": f"{st.name} stage of {name}", "clean": True}


def task_materialize():
    """zoo models: seeded, calibrated weights for the ONNX zoo's light graphs"""
    yield from _stage_tasks("materialize")


def task_import():
    """ONNX -> Relax IRModule"""
    yield from _stage_tasks("import")


def task_relax_build():
    """Relax -> lowered module for wasm32 (tuning log applied when present)"""
    yield from _stage_tasks("relax_build")


def task_emit():
    """lowered kernels -> wasm32 object with the system-lib constructor"""
    yield from _stage_tasks("emit")


def task_executor():
    """lowered main -> static plan (arena, calls, weights) as C"""
    yield from _stage_tasks("executor")


def task_link():
    """runtime + executor + weights + kernels -> WASI reactor module"""
    yield from _stage_tasks("link")


def task_opt():
    """wasm-opt with the module's features"""
    yield from _stage_tasks("opt")


def task_validate():
    """wasmtime vs onnxruntime on seeded inputs -> report.json"""
    yield from _stage_tasks("validate")


def task_build():
    """the whole pipeline for a model: build/<model>/<model>.wasm and report.json"""
    for name in sorted(MODELS):
        yield {"name": name, "actions": None, "task_dep": [f"validate:{name}"],
               "doc": f"build and validate {name}"}


def task_bench():
    """benchmark the built module against onnxruntime native and onnxruntime-web (always runs)"""
    for name in sorted(MODELS):
        p = stages.Paths(MODELS[name])
        yield {"name": name, "actions": [[sys.executable, "-m", "pipeline", "bench", name]],
               "file_dep": [p.published, p.source], "targets": [os.path.join(p.dir, "bench.json")],
               "uptodate": [False], "doc": f"benchmark {name}"}
