"""The stage graph for one model: paths, dependencies and how to run each stage.

``dodo.py`` turns ``graph(model)`` into doit tasks; ``python -m pipeline <stage> <model>``
runs one stage (``run_stage``), timing it and writing ``stage.json`` (key, seconds, result)
as the stage's last, atomic write.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import toolchain
from pipeline import cache, emit, executor, importer, link, materialize, opt, relax_build, validate
from pipeline.dsl import ROOT, Model, Zoo

STAGES = ("materialize", "import", "relax_build", "emit", "executor", "link", "opt", "validate")


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


@dataclass
class Stage:
    name: str
    file_dep: list[str]
    targets: list[str]
    config: dict          # every non-file input: parameters and tool identities


def _py(*names: str) -> list[dict]:
    return [toolchain.python_package(n) for n in names]


def params(m: Model) -> dict:
    return {"import": importer.ImportParams(inputs=m.inputs),
            "relax_build": relax_build.BuildParams(mattr=m.mattr),
            "link": link.LinkParams(),
            "opt": opt.OptParams(level=m.opt_level)}


def graph(m: Model) -> list[Stage]:
    """The stages of one model, in order. Tool identities are probed lazily per stage."""
    p = Paths(m)
    pr = params(m)
    tvm_tools = _py("apache-tvm", "apache-tvm-ffi")
    stages = []
    if isinstance(m.source, Zoo):
        stages.append(Stage("materialize", [], [p.source],
                            {"params": asdict(materialize.MaterializeParams(m.source.name, m.source.seed)),
                             "tools": _py("onnx", "onnxruntime", "numpy")}))
    stages += [
        Stage("import", [p.source], [p.stage("import", "model.json"), p.stage("import", "io.json")],
              {"params": asdict(pr["import"]), "tools": tvm_tools + _py("onnx")}),
        Stage("relax_build", [p.stage("import", "model.json")] + relax_build.tuning_files(m.tuning_dir()),
              [p.stage("relax_build", "lowered.json")],
              {"params": asdict(pr["relax_build"]), "passes": relax_build.PASS_NAMES,
               "tools": tvm_tools}),
        Stage("emit", [p.stage("relax_build", "lowered.json")], [p.stage("emit", "kernels.o")],
              {"params": asdict(pr["relax_build"]), "tools": tvm_tools}),
        Stage("executor", [p.stage("relax_build", "lowered.json"), p.stage("import", "io.json"),
                           executor.__file__],
              [p.stage("executor", f) for f in ("executor.c", "weights.bin", "weights.S", "plan.json")],
              {"tools": tvm_tools}),
        Stage("link", [p.stage("emit", "kernels.o")] +
              [p.stage("executor", f) for f in ("executor.c", "weights.bin", "weights.S")] +
              [os.path.join(link.RUNTIME_DIR, f) for f in link.RUNTIME_SOURCES] +
              [p.source, p.stage("import", "io.json")],
              [p.stage("link", f"{m.name}.linked.wasm")],
              {"params": asdict(pr["link"]), "metadata_options": asdict(pr["relax_build"]),
               "tools": [toolchain.clang().identity(), toolchain.wasm_ld().identity()] + tvm_tools}),
        Stage("opt", [p.stage("link", f"{m.name}.linked.wasm")], [p.stage("opt", f"{m.name}.wasm")],
              {"params": asdict(pr["opt"]), "tools": [toolchain.wasm_opt().identity()]}),
        Stage("validate", [p.stage("opt", f"{m.name}.wasm"), p.source], [p.report, p.published],
              {"seeds": list(m.seeds), "tolerance": asdict(m.tolerance),
               "tools": _py("wasmtime", "onnxruntime")}),
    ]
    for s in stages:
        s.targets.append(p.stage_json(s.name))
    return stages


def metadata(m: Model, p: Paths) -> dict:
    io = cache.read_json(p.stage("import", "io.json"))
    pr = params(m)
    return {"wasmforge": 1, "model": m.name, "inputs": io["inputs"], "outputs": io["outputs"],
            "source": {"file": os.path.basename(p.source), "sha256": cache.file_sha256(p.source)},
            "build": {"target": pr["relax_build"].target_dict(), "system_lib": True,
                      "tuning_log": [os.path.basename(f) for f in relax_build.tuning_files(m.tuning_dir())],
                      "tvm": toolchain.python_package("apache-tvm")["version"]},
            "abi": {"initialize": "_initialize", "run": "wasmforge_run",
                    "inputs": "wasmforge_input_ptr/wasmforge_input_size",
                    "outputs": "wasmforge_output_ptr/wasmforge_output_size",
                    "error": "wasmforge_last_error"}}


def run_stage(m: Model, name: str) -> dict:
    p = Paths(m)
    pr = params(m)
    st = {s.name: s for s in graph(m)}[name]
    t0 = time.perf_counter()
    if name == "materialize":
        result = materialize.run(materialize.MaterializeParams(m.source.name, m.source.seed), p.source)
    elif name == "import":
        result = importer.run(p.source, pr["import"], *st.targets[:2])
    elif name == "relax_build":
        result = relax_build.run(p.stage("import", "model.json"), m.tuning_dir(), pr["relax_build"], st.targets[0])
    elif name == "emit":
        result = emit.run(p.stage("relax_build", "lowered.json"), pr["relax_build"], st.targets[0])
    elif name == "executor":
        result = executor.run(p.stage("relax_build", "lowered.json"), p.stage("import", "io.json"), p.stage("executor"))
    elif name == "link":
        result = link.run(p.stage("emit", "kernels.o"), p.stage("executor"), metadata(m, p), pr["link"],
                          toolchain.clang(), toolchain.wasm_ld(), st.targets[0], p.stage("link", "obj"))
    elif name == "opt":
        result = opt.run(p.stage("link", f"{m.name}.linked.wasm"), pr["opt"], toolchain.wasm_opt(), st.targets[0])
    elif name == "validate":
        opt_stage = cache.read_json(p.stage_json("opt"))["result"]
        sizes = {"before_wasm_opt": opt_stage["bytes_before"], "after_wasm_opt": opt_stage["bytes_after"]}
        files = {s: p.stage_json(s) for s in STAGES if s != "validate"}
        report = validate.run(p.stage("opt", f"{m.name}.wasm"), p.source,
                              m.seeds, m.tolerance, files, sizes, p.published, p.report)
        result = {"passed": report["passed"]}
    else:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    seconds = round(time.perf_counter() - t0, 3)
    cache.write_json(p.stage_json(name), {"stage": name, "model": m.name, "seconds": seconds,
                                          "config": cache.digest(st.config), "result": result})
    return result
