"""wasmforge's task graph. Thin on purpose: it turns each model declared in ``models/`` into
one doit task per stage (``wasmforge/graph.py`` says what each stage reads, writes and runs),
plus ``build:<model>``, the whole pipeline for one model.

    doit build:resnet50        # ONNX -> validated build/resnet50/resnet50.wasm
    doit list --all            # every stage of every model
"""
import atexit
import inspect
import os
import shlex
import sys

from doit.action import CmdAction
from doit.tools import config_changed

from wasmforge import declarations, graph, report
from wasmforge.dsl import DeclarationError
from wasmforge.errors import StageError
from wasmforge.store import digests, local
from wasmforge.toolchain import ToolchainError
from wasmforge.tune.options import TuneOptions, option_table

DOIT_CONFIG = {"default_tasks": ["build:resnet50"], "verbosity": 2, "action_string_formatting": "new",
               # doit's state lives with the artifacts: delete build/ and both are gone
               "dep_file": os.path.join(graph.build_root(), ".doit.db"),
               # inputs are compared by sha256 (after an mtime/size short-cut), as the keys are
               "check_file_uptodate": graph.Sha256Checker}

digests.set_digest_memo(os.path.join(graph.build_root(), ".digests.json"))
atexit.register(digests.save_digest_memo)
try:
    MODELS = declarations.load()
    STAGES = {name: graph.stages(m) for name, m in sorted(MODELS.items())}
except (DeclarationError, StageError, ToolchainError) as e:
    sys.exit(f"error: {e}")   # bad declaration or missing tool: say what and how, no traceback
os.makedirs(graph.build_root(), exist_ok=True)
PY = [sys.executable, "-m", "wasmforge"]


def task_stages():
    """one task per stage (``doit list``), one subtask per model"""
    for stage, doc in graph.STAGE_DOCS.items():
        yield {"basename": stage, "name": None, "doc": doc}
        for name, stages in STAGES.items():
            for st in stages:
                if st.name == stage:
                    yield {"basename": stage, "name": name, "actions": [PY + ["stage", stage, name]],
                           "file_dep": st.file_dep, "targets": st.targets,
                           "uptodate": [config_changed(st.config)], "doc": f"{stage} stage of {name}",
                           "clean": True}


def task_build():
    """the whole pipeline for a model: build/<model>/<model>.wasm (+ .threads.wasm) and report.json;
    then the store is trimmed to WASMFORGE_CACHE_MAX (10G), least recently used first"""
    for name in sorted(MODELS):
        yield {"name": name, "actions": [(report.finish_build, [MODELS[name]])],
               "task_dep": [f"validate:{name}", f"validate_threads:{name}"], "doc": f"build and validate {name}"}


def task_bench():
    """benchmark the built module against onnxruntime native and onnxruntime-web (always runs);
    bench:all, the suite: every suite model paired with onnxruntime-web on 1 and 2 threads ->
    build/bench/summary.json and suite.svg"""
    from wasmforge.bench.suite import SUITE

    suite = [m for m in SUITE if m in MODELS]
    yield {"name": "all", "actions": [PY[:2] + ["wasmforge.bench.suite", "--models", ",".join(suite)]],
           "task_dep": [f"build:{m}" for m in suite], "uptodate": [False], "verbosity": 2,
           "doc": "the benchmark suite (WASMFORGE_BENCH_TURNS turns a model, 8)"}
    for name in sorted(MODELS):
        p = graph.Paths(MODELS[name])
        yield {"name": name, "actions": [PY + ["bench", name]],
               "file_dep": [p.published, p.published_threads, p.source], "targets": [os.path.join(p.dir, "bench.json")],
               "uptodate": [False], "doc": f"benchmark {name}"}


def task_conformance():
    """build ONNX's own test models (in the onnx wheel) and validate them against their expected
    outputs: build/conformance/summary.json (--sample: the fixed sample CI runs)"""
    def cmd(sample, only, jobs):
        return shlex.join(PY[:2] + ["wasmforge.conformance", "--jobs", str(jobs), "--only", only]
                          + (["--sample"] if sample else []))
    return {"actions": [CmdAction(cmd)], "uptodate": [False], "verbosity": 2,
            "params": [{"name": "sample", "long": "sample", "type": bool, "default": False,
                        "help": "only the fixed sample of cases CI runs"},
                       {"name": "only", "long": "only", "type": str, "default": "",
                        "help": "only the cases whose name contains this text"},
                       {"name": "jobs", "long": "jobs", "type": int, "default": os.cpu_count() or 1,
                        "help": "cases built at once"}]}


def task_cache_stats():
    """print the local cache's location, size, entries and hit rate"""
    def show():
        for k, v in local.Store().stats().items():
            print(f"{k:>12}: {v}")
    return {"actions": [show], "uptodate": [False], "verbosity": 2}


def task_cache_verify():
    """check every blob of the local cache against its digest and every entry against its blobs"""
    def verify():
        problems = local.Store().verify()
        print("\n".join(problems) or "the cache verifies")
        return not problems
    return {"actions": [verify], "uptodate": [False], "verbosity": 2}


def task_cache_trim():
    """trim the local cache to --limit (e.g. 5G), least recently used first"""
    def trim(limit):
        print(local.Store().trim(local.parse_size(limit)))
    return {"actions": [(trim,)], "params": [{"name": "limit", "long": "limit", "default": "10G",
                                              "help": "size to trim the cache to (K, M, G suffixes)"}],
            "uptodate": [False], "verbosity": 2}


def _tune_action(name: str) -> CmdAction:
    """The tune command for ``name``, taking the task's parameters (doit passes a callable
    the parameters its signature names)."""
    def cmd(**options):
        return shlex.join(PY + ["tune", name] + TuneOptions(**options).argv())
    cmd.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY)
                                           for n, *_ in option_table()])
    return CmdAction(cmd)


def task_tune():
    """autotune the model's kernels measured in wasmtime; writes models/<name>.tuning/ (resumable)"""
    params = [{"name": n, "long": n, "type": kind, "default": default, "help": text}
              for n, kind, default, text in option_table()]
    for name in sorted(MODELS):
        yield {"name": name, "actions": [_tune_action(name)],
               "task_dep": [f"import:{name}"], "uptodate": [False], "verbosity": 2, "params": params,
               "doc": f"tune {name}"}


def task_serve():
    """serve the model over HTTP (the Open Inference Protocol) with wasmtime serve, on the
    AOT-compiled <model>.http.cwasm: doit serve:<model> [--port 8080] [--host 127.0.0.1]"""
    params = [{"name": "port", "long": "port", "type": int, "default": 8080, "help": "the port to listen on"},
              {"name": "host", "long": "host", "type": str, "default": "127.0.0.1",
               "help": "the address to listen on (0.0.0.0: every interface)"}]
    for name in sorted(MODELS):
        def cmd(port, host, name=name):
            return shlex.join(PY + ["serve", name, "--port", str(port), "--host", host])
        yield {"name": name, "actions": [CmdAction(cmd, buffering=1)], "task_dep": [f"http_aot:{name}"],
               "uptodate": [False], "verbosity": 2, "params": params, "doc": f"serve {name} over HTTP"}


def task_publish():
    """release the validated module: bundle, manifest, SHA256SUMS, tar.gz, OCI (+ push with WASMFORGE_REGISTRY)"""
    for name in sorted(MODELS):
        yield {"name": name, "actions": [PY + ["publish", name]],
               "task_dep": [f"build:{name}"], "uptodate": [False], "doc": f"publish {name}"}
