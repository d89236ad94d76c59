"""wasmforge's task graph. Thin on purpose: it turns each model declared in ``models/``
into one doit task per stage (``pipeline/stages.py`` says what each stage reads and
writes), plus ``build:<model>``, the whole pipeline for one model.

    doit build:resnet50        # ONNX -> validated build/resnet50/resnet50.wasm
    doit list --all            # every stage of every model
"""
import sys

from doit.tools import config_changed

import models
from pipeline import stages

DOIT_CONFIG = {"default_tasks": ["build:resnet50"], "verbosity": 2, "action_string_formatting": "new"}

MODELS = models.load()


def _stage_tasks(stage_name):
    for name, m in sorted(MODELS.items()):
        for st in stages.graph(m):
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
