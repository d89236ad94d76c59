"""The stage graph for one model: inputs, outputs, configuration and key of every stage,
and ``run_stage``, which serves a stage from the cache or runs it.

A stage's *config* is every input that is not a file: its parameters, the identities of the
tools it runs and the digest of its own code. The same dict feeds doit's ``config_changed``
and the stage key, so the two cannot disagree; the key adds the sha256 of every input file
(by label, never by path or mtime, so keys agree across checkouts and machines).

``run_stage`` looks the key up in the local store, then the remote one; on a hit it
restores the outputs without running the stage (no TVM), on a miss it runs the stage and
stores the outputs. ``stage.json`` (key, seconds, cache hit or miss, result) is the stage's
last, atomic write: a stage killed before it has not finished, whatever else it wrote.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field

from doit.dependency import FileChangedChecker

import toolchain
from pipeline import cache, emit, executor, importer, link, materialize, opt, relax_build, validate
from pipeline.dsl import ROOT, Model, Zoo
from pipeline.errors import StageError
from pipeline.remote import Remote

STAGES = ("materialize", "import", "relax_build", "emit", "executor", "link", "opt", "validate",
          "relax_build_threads", "emit_threads", "link_threads", "opt_threads", "validate_threads")
THREADS = "_threads"   # the suffix of the threads variant's stages (link, opt, validate; and
                       # relax_build, emit when the model has a threads tuning log)
VALIDATE_THREADS = 2   # threads the threads variant is validated with
SCHEMA = 1   # bump to disown every cached result at once (Bazel's salt)

_HERE = os.path.dirname(os.path.abspath(__file__))
# the code each stage runs: its digest is part of the stage's config
CODE = {
    "materialize": ["materialize.py"],
    "import": ["importer.py"],
    "relax_build": ["relax_build.py", "conv_lowering.py", "microkernel.py"],
    "emit": ["emit.py", "relax_build.py"],
    "executor": ["executor.py"],
    "link": ["link.py", "wasmbin.py", "stages.py"],   # stages.py: the metadata() it embeds
    "opt": ["opt.py", "wasmbin.py"],
    "validate": ["validate.py", "host.py", "wasmbin.py"],
}
CODE.update({f"{s}{THREADS}": CODE[s] for s in ("relax_build", "emit", "link", "opt", "validate")})


def base_stage(name: str) -> tuple[str, bool]:
    """``link_threads`` -> (``link``, True): the variant's stages run the same code."""
    return (name[:-len(THREADS)], True) if name.endswith(THREADS) else (name, False)


def build_root() -> str:
    return os.path.abspath(os.environ.get("WASMFORGE_BUILD", os.path.join(ROOT, "build")))


@dataclass
class Paths:
    model: Model
    root: str = field(default_factory=build_root)

    @property
    def dir(self) -> str:
        return os.path.join(self.root, self.model.name)

    def stage(self, name: str, *parts: str) -> str:
        return os.path.join(self.dir, name, *parts)

    def stage_json(self, name: str) -> str:
        return self.stage(name, "stage.json")

    @property
    def source(self) -> str:
        if isinstance(self.model.source, Zoo):
            return self.stage("materialize", "source.onnx")
        return self.model.source

    @property
    def published(self) -> str:
        return os.path.join(self.dir, f"{self.model.name}.wasm")

    @property
    def report(self) -> str:
        return os.path.join(self.dir, "report.json")

    @property
    def published_threads(self) -> str:
        return os.path.join(self.dir, f"{self.model.name}.threads.wasm")

    @property
    def report_threads(self) -> str:
        return os.path.join(self.dir, "report.threads.json")


@dataclass
class Stage:
    name: str
    inputs: dict[str, str]     # label -> path of every input file
    outputs: dict[str, str]    # label -> path of every output file (cached)
    config: dict               # every non-file input
    stage_json: str

    @property
    def file_dep(self) -> list[str]:
        return list(self.inputs.values())

    @property
    def targets(self) -> list[str]:
        return list(self.outputs.values()) + [self.stage_json]

    def input_digests(self) -> dict[str, str]:
        for label, path in self.inputs.items():
            if not os.path.isfile(path):
                raise StageError(self.name, path, "model file not found" if label == "source" else
                                 f"input {label} not found: run the stages before {self.name}")
        return {label: cache.file_sha256(path) for label, path in self.inputs.items()}


def stage_key(name: str, config: dict, input_digests: dict[str, str]) -> str:
    """The cache key of a stage: pure, from its config and its inputs' digests."""
    return cache.digest({"schema": SCHEMA, "stage": name, "config": config, "inputs": input_digests})


def _py(*names: str) -> list[dict]:
    return [toolchain.python_package(n) for n in names]


def _code(stage: str) -> dict[str, str]:
    return {f: cache.file_sha256(os.path.join(_HERE, f)) for f in CODE[stage]}


def params(m: Model) -> dict:
    return {"materialize": materialize.MaterializeParams(m.source.name, m.source.seed)
            if isinstance(m.source, Zoo) else None,
            "import": importer.ImportParams(inputs=m.inputs),
            "relax_build": relax_build.BuildParams(mattr=m.mattr, conv_block=m.conv_block, winograd=m.winograd),
            "link": link.LinkParams(),
            "link_threads": link.LinkParams(threads=True),
            "opt": opt.OptParams(level=m.opt_level)}


def graph(m: Model) -> list[Stage]:
    """The stages of one model, in order."""
    p = Paths(m)
    pr = params(m)
    tvm = _py("apache-tvm", "apache-tvm-ffi")

    def outs(stage: str, *files: str) -> dict[str, str]:
        return {f"{stage}/{f}": p.stage(stage, f) for f in files}

    def mk(name: str, inputs: dict, outputs: dict, config: dict) -> Stage:
        return Stage(name, inputs, outputs, {**config, "code": _code(name)}, p.stage_json(name))

    lowered = outs("relax_build", "lowered.json")
    imported = outs("import", "model.json", "io.json")
    ex_files = outs("executor", "executor.c", "weights.bin", "weights.S", "plan.json")
    linked = outs("link", f"{m.name}.linked.wasm")
    link_objects = {f"link/obj/{o}": p.stage("link", "obj", o) for o in link.OBJECTS}
    optimized = outs("opt", f"{m.name}.wasm")
    linked_mt = outs("link_threads", f"{m.name}.threads.linked.wasm")
    optimized_mt = outs("opt_threads", f"{m.name}.threads.wasm")
    threads_tuning = {f"threads_tuning/{os.path.basename(f)}": f
                      for f in relax_build.tuning_files(m.threads_tuning_dir())}
    stages = []
    if isinstance(m.source, Zoo):
        stages.append(mk("materialize", {"zoo": materialize.zoo_path(m.source.name)},
                         outs("materialize", "source.onnx"),
                         {"params": asdict(pr["materialize"]), "tools": _py("onnx", "onnxruntime", "numpy")}))
    tuning = {f"tuning/{os.path.basename(f)}": f for f in relax_build.tuning_files(m.tuning_dir())}
    runtime = {f"runtime/{f}": os.path.join(link.RUNTIME_DIR, f) for f in link.RUNTIME_SOURCES}
    build_config = {"params": asdict(pr["relax_build"]), "passes": relax_build.pass_names(pr["relax_build"]),
                    "tools": tvm}
    emit_config = {"params": asdict(pr["relax_build"]), "tools": tvm}
    stages += [
        mk("import", {"source": p.source}, imported,
           {"params": asdict(pr["import"]), "tools": tvm + _py("onnx")}),
        mk("relax_build", {"import/model.json": imported["import/model.json"], **tuning}, lowered, build_config),
        mk("emit", dict(lowered), outs("emit", "kernels.o"), emit_config),
        mk("executor", {**lowered, "import/io.json": imported["import/io.json"]}, ex_files,
           {"tools": tvm}),
    ]
    # the threads variant's own kernels, from its own tuning log (schedules tuned for and
    # measured on several cores), when the model has one; else it links the portable kernels
    own_kernels = bool(threads_tuning)
    if own_kernels:
        kernels_mt = outs("relax_build_threads", "kernels.json")
        stages += [
            mk("relax_build_threads", {"import/model.json": imported["import/model.json"], **tuning, **threads_tuning},
               kernels_mt, build_config),
            mk("emit_threads", dict(kernels_mt), outs("emit_threads", "kernels.o"), emit_config),
        ]
    common = {"source": p.source, "import/io.json": imported["import/io.json"], **runtime,
              **{k: v for k, v in ex_files.items() if not k.endswith("plan.json")}}
    link_inputs = {"emit/kernels.o": p.stage("emit", "kernels.o"), **common}
    kernels = "emit_threads/kernels.o" if own_kernels else "emit/kernels.o"
    link_inputs_mt = {kernels: p.stage(kernels.split("/")[0], "kernels.o"), **common}
    link_tools = [toolchain.clang().identity(), toolchain.wasm_ld().identity()] + tvm
    opt_tools = [toolchain.wasm_opt().identity()]
    validate_config = {"seeds": list(m.seeds), "tolerance": asdict(m.tolerance),
                       "tools": _py("wasmtime", "onnxruntime")}
    for sfx, lk, op, report, published, objects in (
            ("", linked, optimized, p.report, p.published, link_objects),
            (THREADS, linked_mt, optimized_mt, p.report_threads, p.published_threads, {})):
        stages += [
            # the portable variant's objects too: a release archives them (lib<model>.a)
            mk(f"link{sfx}", link_inputs_mt if sfx else link_inputs, {**lk, **objects},
               {"params": asdict(pr[f"link{sfx}"]), "model": m.name, "target": pr["relax_build"].target_dict(),
                "tools": link_tools}),
            mk(f"opt{sfx}", dict(lk), op, {"params": asdict(pr["opt"]), "tools": opt_tools}),
            # the threads variant, when it runs the portable kernels, must give the validated
            # portable module's exact bytes (its own kernels may sum in another order)
            mk(f"validate{sfx}", {**op, "source": p.source,
                                  **({"portable": p.published} if sfx and not own_kernels else {})},
               {os.path.basename(report): report, os.path.basename(published): published},
               {**validate_config, **({"threads": VALIDATE_THREADS} if sfx else {})}),
        ]
    return stages


def metadata(m: Model, p: Paths, threads: bool = False) -> dict:
    """What the module says about itself, in its ``wasmforge.metadata`` custom section."""
    io = cache.read_json(p.stage("import", "io.json"))
    pr = params(m)
    threads_log = [os.path.basename(f) for f in relax_build.tuning_files(m.threads_tuning_dir())]
    abi_threads = {"threads": {
        "memory": "imports env.memory (shared): the host creates it and gives it to every instance",
        "prepare": "wasmforge_threads_prepare(workers) on the first instance, after _initialize",
        "worker": "wasmforge_worker(id, wasmforge_worker_stack(id)) on a new instance per worker "
                  "thread, ids 1..workers; never _initialize a worker; it returns after "
                  "wasmforge_threads_stop()",
        "attached": "wasmforge_threads_attached(): run only once every worker has attached"}} if threads else {}
    return {"wasmforge": 1, "model": m.name, "inputs": io["inputs"], "outputs": io["outputs"],
            "source": {"file": os.path.basename(p.source), "sha256": cache.file_sha256(p.source)},
            "build": {"target": pr["relax_build"].target_dict(), "system_lib": True,
                      "tuning_log": [os.path.basename(f) for f in relax_build.tuning_files(m.tuning_dir())],
                      **({"threads_tuning_log": threads_log} if threads and threads_log else {}),
                      "tvm": toolchain.python_package("apache-tvm")["version"]},
            "abi": {"initialize": "_initialize", "run": "wasmforge_run",
                    "inputs": "wasmforge_input_ptr/wasmforge_input_size",
                    "outputs": "wasmforge_output_ptr/wasmforge_output_size",
                    "error": "wasmforge_last_error", **abi_threads}}


def execute(m: Model, st: Stage) -> dict:
    """Run one stage for real; returns its result summary."""
    p = Paths(m)
    pr = params(m)
    o = st.outputs
    name, threads = base_stage(st.name)
    sfx, dot = (THREADS, ".threads") if threads else ("", "")
    if name == "materialize":
        return materialize.run(pr["materialize"], p.source)
    if name == "import":
        return importer.run(p.source, pr["import"], o["import/model.json"], o["import/io.json"])
    if name == "relax_build":
        return relax_build.run(st.inputs["import/model.json"], m.tuning_dir(), pr["relax_build"],
                               *((o["relax_build_threads/kernels.json"], m.threads_tuning_dir()) if threads
                                 else (o["relax_build/lowered.json"],)))
    if name == "emit":
        src = "relax_build_threads/kernels.json" if threads else "relax_build/lowered.json"
        return emit.run(st.inputs[src], pr["relax_build"], o[f"emit{sfx}/kernels.o"])
    if name == "executor":
        return executor.run(st.inputs["relax_build/lowered.json"], st.inputs["import/io.json"], p.stage("executor"))
    if name == "link":
        kernels = st.inputs.get(f"emit{sfx}/kernels.o") or st.inputs["emit/kernels.o"]
        return link.run(kernels, p.stage("executor"), metadata(m, p, threads),
                        pr[f"link{sfx}"], toolchain.clang(), toolchain.wasm_ld(),
                        o[f"link{sfx}/{m.name}{dot}.linked.wasm"], p.stage(f"link{sfx}", "obj"))
    if name == "opt":
        return opt.run(st.inputs[f"link{sfx}/{m.name}{dot}.linked.wasm"], pr["opt"], toolchain.wasm_opt(),
                       o[f"opt{sfx}/{m.name}{dot}.wasm"])
    if name == "validate":
        opt_result = cache.read_json(p.stage_json(f"opt{sfx}"))["result"]
        sizes = {"before_wasm_opt": opt_result["bytes_before"], "after_wasm_opt": opt_result["bytes_after"]}
        # the stages this variant's module was built by (the threads variant's: the portable
        # stages up to the executor, then its own)
        files = {s.name: p.stage_json(s.name) for s in graph(m)
                 if base_stage(s.name)[0] != "validate" and (base_stage(s.name)[1] == threads
                                                             or (threads and s.name not in ("link", "opt")))}
        report = validate.run(st.inputs[f"opt{sfx}/{m.name}{dot}.wasm"], p.source, m.seeds, m.tolerance, files,
                              sizes, p.published_threads if threads else p.published,
                              p.report_threads if threads else p.report,
                              threads=VALIDATE_THREADS if threads else 1,
                              same_as=st.inputs.get("portable"))
        return {"passed": report["passed"]}
    raise ValueError(f"unknown stage {st.name!r}; stages: {', '.join(STAGES)}")


def run_stage(m: Model, name: str, store: cache.Store | None = None) -> dict:
    p = Paths(m)
    cache.set_digest_memo(os.path.join(p.root, ".digests.json"))
    by_name = {s.name: s for s in graph(m)}
    if name not in by_name:
        raise ValueError(f"unknown stage {name!r} for {m.name}; stages: {', '.join(by_name)}")
    st = by_name[name]
    t0 = time.perf_counter()
    key = stage_key(name, st.config, st.input_digests())
    store = store or cache.Store()
    remote = Remote.from_env()
    with store.lock(key):
        entry, source = store.get_action(key), "hit local"
        if entry is None and remote is not None:
            entry, source = remote.get_action(key), "hit remote"
            if entry is not None and not all(store.has_blob(o["sha256"]) or remote.fetch_blob(store, o["sha256"])
                                             for o in entry["outputs"].values()):
                entry = None
        if entry is not None and cache.restore(store, entry, st.outputs):
            result = entry["result"]
            if source == "hit remote":
                store.put_action(key, entry)
            elif remote is not None and remote.upload and remote.get_action(key) is None:
                remote.put(store, key, entry)   # built before the team's remote was configured
        else:
            source = "miss"
            for path in st.outputs.values():   # they may be links into the store: never write
                with contextlib.suppress(FileNotFoundError):   # through one (tools write in place)
                    os.unlink(path)
            result = execute(m, st)
            outputs = {}
            for label, path in st.outputs.items():
                sha = store.put_file(path)
                outputs[label] = {"sha256": sha, "size": os.path.getsize(path)}
            entry = {"stage": name, "outputs": outputs, "result": result,
                     "seconds": round(time.perf_counter() - t0, 3)}
            store.put_action(key, entry)
            if remote is not None:
                remote.put(store, key, entry)
        store.record(source, name)
    seconds = round(time.perf_counter() - t0, 3)
    cache.write_json(st.stage_json, {"stage": name, "model": m.name, "key": key, "cache": source,
                                     "seconds": seconds, "built_seconds": entry.get("seconds"),
                                     "result": result})
    cache.save_digest_memo()
    return {"cache": source, **result} if isinstance(result, dict) else result


class Sha256Checker(FileChangedChecker):
    """doit file checker: (mtime, size) short-cut, then sha256 through the same memo the
    stage keys use (doit's MD5Checker, with our digest)."""

    def check_modified(self, file_path, file_stat, state):
        mtime, size, sha = state
        if file_stat.st_mtime == mtime:
            return False
        if file_stat.st_size != size:
            return True
        return sha != cache.file_sha256(file_path)

    def get_state(self, dep, current_state):
        st = os.stat(dep)
        if current_state and current_state[0] == st.st_mtime:
            return None
        return st.st_mtime, st.st_size, cache.file_sha256(dep)
