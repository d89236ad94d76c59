"""The stages of one model, each a value that carries its action, as a Bazel action does:
its input files, its output files, its config (every input that is not a file) and the
function that runs it. ``run_stage`` serves a stage from the store or runs it.

A stage's config holds its parameters, the identities of the tools it runs and the digest
of the code it runs (each stage module's ``CODE``). The same dict feeds doit's
``config_changed`` and the stage key, so the two cannot disagree; the key adds the sha256 of
every input file (by label, never by path or mtime, so keys agree across checkouts and
machines). This module is orchestration: it is in no stage's key, so editing it rebuilds
nothing.

Two variants of the module are built: ``PORTABLE`` (its own memory, one thread) and
``THREADS`` (a shared imported memory, validated on 2 threads). The threads variant links
the portable kernels, or its own when the model has a threads tuning log.

``stage.json`` (key, seconds, cache hit or miss, result) is a stage's last, atomic write: a
stage killed before it has not finished, whatever else it wrote.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from doit.dependency import FileChangedChecker

from wasmforge import ROOT, generators, references, toolchain
from wasmforge.dsl import Generated, Model, Zoo
from wasmforge.errors import StageError
from wasmforge.stages import (
    component,
    emit,
    executor,
    http,
    importer,
    link,
    materialize,
    opt,
    relax_build,
    validate,
)
from wasmforge.store import digests, files
from wasmforge.store.local import Store
from wasmforge.store.remote import Remote
from wasmforge.store.tiered import TieredStore

SCHEMA = 2   # bump to disown every cached result at once (Bazel's salt)


@dataclass(frozen=True)
class Variant:
    """One build of the module: its stages are named ``<stage><suffix>``, its files
    ``<model><dot>.wasm``, and it is validated on ``threads`` threads."""
    name: str
    suffix: str
    dot: str
    threads: int

    def stage(self, base: str) -> str:
        return base + self.suffix


PORTABLE = Variant("portable", "", "", 1)
THREADS = Variant("threads", "_threads", ".threads", 2)

# every stage's doc, in build order: the table doit lists and the README mirrors
STAGE_DOCS = {
    "materialize": "zoo models: seeded, calibrated weights for the ONNX zoo's light graphs; generated models: their graph",
    "import": "ONNX -> Relax IRModule",
    "relax_build": "Relax -> lowered module for wasm32 (tuning log applied when present)",
    "emit": "lowered kernels -> wasm32 object with the system-lib constructor",
    "executor": "lowered main -> static plan (arena, calls, weights) as C",
    "link": "runtime + executor + weights + kernels -> WASI reactor module",
    "opt": "wasm-opt with the module's features",
    "validate": "wasmtime vs onnxruntime on seeded inputs -> report.json",
    "relax_build_threads": "the threads variant's kernels, with its own tuning log first (models that have one)",
    "emit_threads": "the threads variant's kernels -> wasm32 object (models with a threads tuning log)",
    "link_threads": "the threads variant: shared imported memory, atomics, a worker entry point",
    "opt_threads": "wasm-opt for the threads variant",
    "validate_threads": "the threads variant on 2 threads vs onnxruntime -> report.threads.json",
    "component": "the validated module as a WASI 0.2 component (WIT wasmforge:model/inference), checked "
                 "against it -> <model>.component.wasm",
    "http": "the component behind the Open Inference Protocol over wasi:http, checked in wasmtime serve "
            "-> <model>.http.wasm",
    "http_aot": "wasmtime compile: the HTTP component for this CPU -> <model>.http.cwasm (what serve runs)",
}
STAGE_NAMES = tuple(STAGE_DOCS)


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
        if isinstance(self.model.source, (Zoo, Generated)):
            return self.stage("materialize", "source.onnx")
        return self.model.source

    @property
    def component(self) -> str:
        """The published component: present only when its check passed."""
        return os.path.join(self.dir, f"{self.model.name}.component.wasm")

    @property
    def http(self) -> str:
        """The published HTTP component: present only when its check passed."""
        return os.path.join(self.dir, f"{self.model.name}.http.wasm")

    @property
    def http_aot(self) -> str:
        return self.stage("http_aot", f"{self.model.name}.http.cwasm")

    def module(self, v: Variant = PORTABLE) -> str:
        """The published module of a variant: present only when its validation passed."""
        return os.path.join(self.dir, f"{self.model.name}{v.dot}.wasm")

    def report(self, v: Variant = PORTABLE) -> str:
        return os.path.join(self.dir, f"report{v.dot}.json")

    @property
    def published(self) -> str:
        return self.module(PORTABLE)

    @property
    def published_threads(self) -> str:
        return self.module(THREADS)


@dataclass
class Stage:
    name: str
    inputs: dict[str, str]     # label -> path of every input file
    outputs: dict[str, str]    # label -> path of every output file (cached)
    config: dict               # every non-file input
    stage_json: str
    action: Callable[[], dict] = field(repr=False)   # runs the stage for real; its result summary
    doc: str = ""

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
        return {label: digests.file_sha256(path) for label, path in self.inputs.items()}


def stage_key(name: str, config: dict, input_digests: dict[str, str]) -> str:
    """The cache key of a stage: pure, from its config and its inputs' digests."""
    return digests.digest({"schema": SCHEMA, "stage": name, "config": config, "inputs": input_digests})


def code_digest(module) -> dict[str, str]:
    """The digest of each file a stage module runs (its ``CODE``), labelled by its path in the
    package, so that the labels agree across checkouts."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    return {os.path.relpath(os.path.abspath(f), pkg): digests.file_sha256(f) for f in module.CODE}


def _py(*names: str) -> list[dict]:
    return [toolchain.python_package(n) for n in names]


def params(m: Model) -> dict:
    return {"materialize": materialize.MaterializeParams(m.source.name, m.source.seed)
            if isinstance(m.source, Zoo) else None,
            "import": importer.ImportParams(inputs=m.inputs),
            "relax_build": relax_build.BuildParams(mattr=m.mattr, conv_block=m.conv_block, winograd=m.winograd,
                                                    fold_batch_norm=m.fold_batch_norm),
            "link": link.LinkParams(),
            "link_threads": link.LinkParams(threads=True),
            "opt": opt.OptParams(level=m.opt_level, split_load_splats=(m.engine == "wasmtime"))}


def _metadata(m: Model, p: Paths, build: relax_build.BuildParams, v: Variant) -> dict:
    io = files.read_json(p.stage("import", "io.json"))
    names = lambda d: [os.path.basename(f) for f in relax_build.tuning_files(d)]   # noqa: E731
    return link.metadata(m.name, io, p.source, build.target_dict(), names(m.tuning_dir()),
                         names(m.threads_tuning_dir()), toolchain.python_package("apache-tvm")["version"],
                         threads=v is THREADS)


def stages(m: Model) -> list[Stage]:
    """The stages of one model, in order, each with its action."""
    p = Paths(m)
    pr = params(m)
    build = pr["relax_build"]
    tvm = _py("apache-tvm", "apache-tvm-ffi")
    out: list[Stage] = []

    def outs(stage: str, *names: str) -> dict[str, str]:
        return {f"{stage}/{f}": p.stage(stage, f) for f in names}

    def add(name: str, module, inputs: dict, outputs: dict, config: dict, action: Callable[[Stage], dict]) -> None:
        st = Stage(name, inputs, outputs, {**config, "code": code_digest(module)}, p.stage_json(name),
                   action=lambda: action(st), doc=STAGE_DOCS[name])
        out.append(st)

    imported = outs("import", "model.json", "io.json")
    lowered = outs("relax_build", "lowered.json")
    ex_files = outs("executor", "executor.c", "weights.bin", "weights.S", "plan.json")
    tuning = {f"tuning/{os.path.basename(f)}": f for f in relax_build.tuning_files(m.tuning_dir())}
    threads_tuning = {f"threads_tuning/{os.path.basename(f)}": f
                      for f in relax_build.tuning_files(m.threads_tuning_dir())}
    build_config = {"params": asdict(build), "passes": relax_build.pass_names(build), "tools": tvm}
    emit_config = {"params": asdict(build), "tools": tvm}

    if isinstance(m.source, Generated):
        add("materialize", generators, {}, outs("materialize", "source.onnx"),
            {"params": asdict(m.source), "tools": _py("onnx", "onnxruntime", "numpy")},
            lambda st: generators.run(m.source.name, m.source.seed, p.source))
    if isinstance(m.source, Zoo):
        add("materialize", materialize, {"zoo": materialize.zoo_path(m.source.name)},
            outs("materialize", "source.onnx"),
            {"params": asdict(pr["materialize"]), "tools": _py("onnx", "onnxruntime", "numpy")},
            lambda st: materialize.run(pr["materialize"], p.source))
    add("import", importer, {"source": p.source}, imported,
        {"params": asdict(pr["import"]), "tools": tvm + _py("onnx")},
        lambda st: importer.run(p.source, pr["import"], st.outputs["import/model.json"], st.outputs["import/io.json"]))
    add("relax_build", relax_build, {"import/model.json": imported["import/model.json"], **tuning}, lowered,
        build_config,
        lambda st: relax_build.run(st.inputs["import/model.json"], m.tuning_dir(), build,
                                   st.outputs["relax_build/lowered.json"]))
    add("emit", emit, dict(lowered), outs("emit", "kernels.o"), emit_config,
        lambda st: emit.run(st.inputs["relax_build/lowered.json"], build, st.outputs["emit/kernels.o"]))
    add("executor", executor, {**lowered, "import/io.json": imported["import/io.json"]}, ex_files, {"tools": tvm},
        lambda st: executor.run(st.inputs["relax_build/lowered.json"], st.inputs["import/io.json"],
                                p.stage("executor")))
    # the threads variant's own kernels, from its own tuning log (schedules tuned for and
    # measured on several cores), when the model has one; else it links the portable kernels
    kernels = {PORTABLE: "emit/kernels.o", THREADS: "emit/kernels.o"}
    if threads_tuning:
        kernels[THREADS] = "emit_threads/kernels.o"
        add("relax_build_threads", relax_build,
            {"import/model.json": imported["import/model.json"], **tuning, **threads_tuning},
            outs("relax_build_threads", "kernels.json"), build_config,
            lambda st: relax_build.run(st.inputs["import/model.json"], m.tuning_dir(), build,
                                       st.outputs["relax_build_threads/kernels.json"], m.threads_tuning_dir()))
        add("emit_threads", emit, outs("relax_build_threads", "kernels.json"), outs("emit_threads", "kernels.o"),
            emit_config,
            lambda st: emit.run(st.inputs["relax_build_threads/kernels.json"], build,
                                st.outputs["emit_threads/kernels.o"]))

    common = {"source": p.source, "import/io.json": imported["import/io.json"],
              **{f"runtime/{f}": os.path.join(link.RUNTIME_DIR, f) for f in link.RUNTIME_SOURCES},
              **{k: v for k, v in ex_files.items() if not k.endswith("plan.json")}}
    link_tools = [toolchain.clang().identity(), toolchain.wasm_ld().identity()] + tvm

    def add_variant(v: Variant) -> None:
        """link, opt and validate of one variant."""
        linked = outs(v.stage("link"), f"{m.name}{v.dot}.linked.wasm")
        optimized = outs(v.stage("opt"), f"{m.name}{v.dot}.wasm")
        # the portable variant's objects too: a release archives them (lib<model>.a)
        objects = {f"link/obj/{o}": p.stage("link", "obj", o) for o in link.OBJECTS} if v is PORTABLE else {}
        own_kernels = kernels[v] != kernels[PORTABLE]
        (linked_label, linked_path), = linked.items()
        (opt_label, opt_path), = optimized.items()
        link_params = pr[v.stage("link")]

        def run_link(st: Stage) -> dict:
            return link.run(st.inputs[kernels[v]], p.stage("executor"), _metadata(m, p, build, v), link_params,
                            toolchain.clang(), toolchain.wasm_ld(), linked_path, p.stage(v.stage("link"), "obj"))

        def run_validate(st: Stage) -> dict:
            opt_result = files.read_json(p.stage_json(v.stage("opt")))["result"]
            sizes = {"before_wasm_opt": opt_result["bytes_before"], "after_wasm_opt": opt_result["bytes_after"]}
            # the stages this variant's module was built by: the portable stages up to the
            # executor, then its own
            built_by = {s.name: p.stage_json(s.name) for s in out
                        if not s.name.startswith("validate")
                        and (s.name.endswith(THREADS.suffix) == (v is THREADS)
                             or (v is THREADS and s.name not in ("link", "opt")))}
            report = validate.run(st.inputs[opt_label], p.source, m.seeds, m.tolerance, built_by, sizes,
                                  p.module(v), p.report(v), threads=v.threads, same_as=st.inputs.get("portable"),
                                  reference_sets=m.references, ranges=dict(m.ranges))
            return {"passed": report["passed"]}

        add(v.stage("link"), link, {kernels[v]: p.stage(*kernels[v].split("/")), **common}, {**linked, **objects},
            {"params": asdict(link_params), "model": m.name, "target": build.target_dict(),
             "tools": link_tools},
            run_link)
        add(v.stage("opt"), opt, dict(linked), optimized,
            {"params": asdict(pr["opt"]), "tools": [toolchain.wasm_opt().identity()]},
            lambda st: opt.run(st.inputs[linked_label], pr["opt"], toolchain.wasm_opt(), opt_path))
        # the threads variant, when it runs the portable kernels, must give the validated
        # portable module's exact bytes (its own kernels may sum in another order)
        add(v.stage("validate"), validate,
            {**optimized, "source": p.source, **reference_files,
             **({"portable": p.module(PORTABLE)} if v is THREADS and not own_kernels else {})},
            {os.path.basename(p.report(v)): p.report(v), os.path.basename(p.module(v)): p.module(v)},
            {"seeds": list(m.seeds), "tolerance": asdict(m.tolerance), "tools": _py("wasmtime", "onnxruntime"),
             **({"ranges": {k: list(v) for k, v in m.ranges}} if m.ranges else {}),
             **({"threads": v.threads} if v is THREADS else {})},
            run_validate)

    # each reference set's files, labelled by the set's position and the file's name
    reference_files = {f"reference/{i}/{os.path.basename(f)}": f
                       for i, ref in enumerate(m.references) for f in references.files_of(ref)}
    for v in (PORTABLE, THREADS):
        add_variant(v)
    report_component = os.path.join(p.dir, "report.component.json")
    add("component", component,
        {"module": p.module(PORTABLE), "source": p.source, "import/io.json": imported["import/io.json"],
         **component.wit_files()},
        {os.path.basename(p.component): p.component, os.path.basename(report_component): report_component},
        {"seeds": list(m.seeds), "tolerance": asdict(m.tolerance),
         "tools": [toolchain.wasm_tools().identity()] + _py("wasmtime", "onnxruntime"),
         **({"ranges": {k: list(v) for k, v in m.ranges}} if m.ranges else {})},
        lambda st: component.run(st.inputs["module"], p.source, st.inputs["import/io.json"], m.name, m.seeds,
                                 m.tolerance, dict(m.ranges), toolchain.wasm_tools(),
                                 p.stage("component", os.path.basename(p.component)), p.component,
                                 report_component))
    report_http = os.path.join(p.dir, "report.http.json")
    add("http", http, {"component": p.component, "source": p.source, "handler": http.HANDLER_SOURCE,
                       **component.wit_files()},
        {os.path.basename(p.http): p.http, os.path.basename(report_http): report_http},
        {"seed": m.seeds[0], "tools": [toolchain.clang().identity(), toolchain.wasm_tools().identity(),
                                       toolchain.wasmtime_cli().identity()] + _py("wasmtime"),
         **({"ranges": {k: list(v) for k, v in m.ranges}} if m.ranges else {})},
        lambda st: http.run(st.inputs["component"], p.source, m.seeds, dict(m.ranges), toolchain.clang(),
                            toolchain.wasm_tools(), toolchain.wasmtime_cli(),
                            p.stage("http", os.path.basename(p.http)), p.http, report_http))
    add("http_aot", http, {"http": p.http}, {"http_aot/" + os.path.basename(p.http_aot): p.http_aot},
        {"tools": [toolchain.wasmtime_cli().identity()], "cpu": toolchain.cpu_identity()},
        lambda st: http.compile_aot(st.inputs["http"], toolchain.wasmtime_cli(), p.http_aot))
    return out


def run_stage(m: Model, name: str, store: Store | None = None) -> dict:
    """Serve stage ``name`` of ``m`` from the store (local, then remote), or run it and store
    what it made. Returns its result summary with ``cache`` (hit local, hit remote, miss)."""
    p = Paths(m)
    digests.set_digest_memo(os.path.join(p.root, ".digests.json"))
    by_name = {s.name: s for s in stages(m)}
    if name not in by_name:
        raise ValueError(f"unknown stage {name!r} for {m.name}; stages: {', '.join(by_name)}")
    st = by_name[name]
    t0 = time.perf_counter()
    key = stage_key(name, st.config, st.input_digests())
    store = TieredStore(store or Store(), Remote.from_env())
    with store.lock(key):
        entry, source = store.restore(key, st.outputs)
        if entry is None:
            store.clear(st.outputs)
            entry = store.save(key, name, st.outputs, st.action(), round(time.perf_counter() - t0, 3))
        store.local.record(source, name)
    result = entry["result"]
    files.write_json(st.stage_json, {"stage": name, "model": m.name, "key": key, "cache": source,
                                     "seconds": round(time.perf_counter() - t0, 3),
                                     "built_seconds": entry.get("seconds"), "result": result})
    digests.save_digest_memo()
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
        return sha != digests.file_sha256(file_path)

    def get_state(self, dep, current_state):
        st = os.stat(dep)
        if current_state and current_state[0] == st.st_mtime:
            return None
        return st.st_mtime, st.st_size, digests.file_sha256(dep)
