"""wasmforge's task graph. Thin on purpose: it turns each model declared in ``models/``
into one doit task per stage (``pipeline/stages.py`` says what each stage reads and
writes), plus ``build:<model>``, the whole pipeline for one model.

    doit build:resnet50        # ONNX -> validated build/resnet50/resnet50.wasm
    doit list --all            # every stage of every model
"""
import atexit
import functools
import os
import shlex
import sys

from doit.action import CmdAction
from doit.tools import config_changed

import models
from pipeline import cache, stages
from pipeline.dsl import DeclarationError
from pipeline.errors import StageError
from toolchain import ToolchainError

DOIT_CONFIG = {"default_tasks": ["build:resnet50"], "verbosity": 2, "action_string_formatting": "new",
               # doit's state lives with the artifacts: delete build/ and both are gone
               "dep_file": os.path.join(stages.build_root(), ".doit.db"),
               # inputs are compared by sha256 (after an mtime/size short-cut), as the keys are
               "check_file_uptodate": stages.Sha256Checker}

cache.set_digest_memo(os.path.join(stages.build_root(), ".digests.json"))
atexit.register(cache.save_digest_memo)
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


def task_relax_build_threads():
    """the threads variant's kernels, with its own tuning log first (models that have one)"""
    yield from _stage_tasks("relax_build_threads")


def task_emit_threads():
    """the threads variant's kernels -> wasm32 object (models with a threads tuning log)"""
    yield from _stage_tasks("emit_threads")


def task_link_threads():
    """the threads variant: shared imported memory, atomics, a worker entry point"""
    yield from _stage_tasks("link_threads")


def task_opt_threads():
    """wasm-opt for the threads variant"""
    yield from _stage_tasks("opt_threads")


def task_validate_threads():
    """the threads variant on 2 threads vs onnxruntime -> report.threads.json"""
    yield from _stage_tasks("validate_threads")


def task_build():
    """the whole pipeline for a model: build/<model>/<model>.wasm (+ .threads.wasm) and report.json"""
    for name in sorted(MODELS):
        yield {"name": name, "actions": None, "task_dep": [f"validate:{name}", f"validate_threads:{name}"],
               "doc": f"build and validate {name}"}


def task_bench():
    """benchmark the built module against onnxruntime native and onnxruntime-web (always runs)"""
    for name in sorted(MODELS):
        p = stages.Paths(MODELS[name])
        yield {"name": name, "actions": [[sys.executable, "-m", "pipeline", "bench", name]],
               "file_dep": [p.published, p.published_threads, p.source], "targets": [os.path.join(p.dir, "bench.json")],
               "uptodate": [False], "doc": f"benchmark {name}"}


def task_cache_stats():
    """print the local cache's location, size, entries and hit rate"""
    def show():
        for k, v in cache.Store().stats().items():
            print(f"{k:>12}: {v}")
    return {"actions": [show], "uptodate": [False], "verbosity": 2}


def task_cache_trim():
    """trim the local cache to --limit (e.g. 5G), least recently used first"""
    def trim(limit):
        print(cache.Store().trim(cache.parse_size(limit)))
    return {"actions": [(trim,)], "params": [{"name": "limit", "long": "limit", "default": "10G",
                                              "help": "size to trim the cache to (K, M, G suffixes)"}],
            "uptodate": [False], "verbosity": 2}


def _tune_cmd(name, trials, focus, jobs, threads, fresh, recheck, grid, only):
    return (f"{shlex.quote(sys.executable)} -m pipeline tune {name}" + (f" --trials {trials}" if trials else "")
            + (f" --focus {focus}" if focus else "") + (f" --jobs {jobs}" if jobs > 1 else "")
            + (f" --threads {threads}" if threads > 1 else "") + (" --fresh" if fresh else "") + (" --recheck" if recheck else "")
            + (" --grid" if grid else "") + (f" --only {shlex.quote(only)}" if only else ""))


def task_tune():
    """autotune the model's kernels measured in wasmtime; writes models/<name>.tuning/ (resumable)"""
    for name in sorted(MODELS):
        yield {"name": name, "actions": [CmdAction(functools.partial(_tune_cmd, name))],
               "task_dep": [f"import:{name}"], "uptodate": [False], "verbosity": 2,
               "params": [{"name": "trials", "long": "trials", "type": int, "default": 0,
                           "help": "trial budget, records already in the log included "
                                   "(default: the model's tune_trials)"},
                          {"name": "focus", "long": "focus", "type": int, "default": 0,
                           "help": "tune only the K kernels costing the most time by the log, "
                                   "an equal share each (default: every kernel)"},
                          {"name": "jobs", "long": "jobs", "type": int, "default": 1,
                           "help": "tuning processes side by side, one per core, each on its "
                                   "share of the kernels (default: 1)"},
                          {"name": "threads", "long": "threads", "type": int, "default": 1,
                           "help": "tune the threads variant's own kernels, for T cores and measured "
                                   "on T threads, into models/<name>.threads.tuning/ (default: 1: the "
                                   "one-thread log)"},
                          {"name": "fresh", "long": "fresh", "type": bool, "default": False,
                           "help": "search from scratch, not from the log's best schedules; "
                                   "the new records are added to the log"},
                          {"name": "recheck", "long": "recheck", "type": bool, "default": False,
                           "help": "with --threads: no search; re-time the threads log's best "
                                   "schedules against the one-thread log's, side by side, and keep "
                                   "those timings (a --threads run ends with this)"},
                          {"name": "grid", "long": "grid", "type": bool, "default": False,
                           "help": "no search: time every register-tiled schedule of each blocked "
                                   "convolution against the log's best, side by side, and add the "
                                   "winners to the log (then re-time the threads log's kernels)"},
                          {"name": "only", "long": "only", "type": str, "default": "",
                           "help": "with --grid: only the kernels whose name contains TEXT "
                                   "(e.g. winograd)"}],
               "doc": f"tune {name}"}


def task_publish():
    """release the validated module: bundle, manifest, SHA256SUMS, tar.gz, OCI (+ push with WASMFORGE_REGISTRY)"""
    for name in sorted(MODELS):
        yield {"name": name, "actions": [[sys.executable, "-m", "pipeline", "publish", name]],
               "task_dep": [f"build:{name}"], "uptodate": [False], "doc": f"publish {name}"}
