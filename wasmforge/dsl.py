"""The model declaration DSL.

A declaration is a few lines in a file under ``models/``::

    from wasmforge.dsl import model
    model("mynet", onnx="mynet.onnx", inputs={"x": (1, 3, 32, 32)})   # path relative to this file

or, equally, a TOML file ``models/mynet.toml``::

    name = "mynet"
    onnx = "mynet.onnx"          # relative to this file
    [inputs]
    x = [1, 3, 32, 32]

``model()`` validates eagerly and registers the declaration; ``declarations.load()`` imports every
declaration file once. Errors name the declaring file.
"""
from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass, field

from wasmforge import ROOT, references

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore

ZOO_MODELS = ("resnet50", "squeezenet", "bvlc_alexnet", "vgg19", "inception_v1",
              "densenet121", "inception_v2", "shufflenet", "zfnet512")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")   # also a valid OCI tag


class DeclarationError(ValueError):
    pass


@dataclass(frozen=True)
class Zoo:
    """A model of the ONNX zoo's "light" set (shipped in the onnx wheel), with its
    ``ConstantOfShape`` weight fills replaced by seeded, calibrated weights."""

    name: str
    seed: int = 0


def zoo(name: str, seed: int = 0) -> Zoo:
    if name not in ZOO_MODELS:
        raise DeclarationError(f"unknown zoo model {name!r}; known: {', '.join(ZOO_MODELS)}")
    return Zoo(name, seed)


GENERATED_MODELS = ("text_encoder", "mobilenet_v2")   # wasmforge/generators.py
# the engines a module's code can be shaped for: "wasmtime" (Cranelift: wasmtime, wasmCloud,
# Spin, runwasi) or "v8" (Node, browsers); see stages/opt.py
ENGINES = ("wasmtime", "v8")


@dataclass(frozen=True)
class Generated:
    """A model this repository writes as an ONNX graph with seeded weights
    (``wasmforge/generators.py``): a BERT-style encoder, a MobileNetV2."""

    name: str
    seed: int = 0


def generated(name: str, seed: int = 0) -> Generated:
    if name not in GENERATED_MODELS:
        raise DeclarationError(f"unknown generated model {name!r}; known: {', '.join(GENERATED_MODELS)}")
    return Generated(name, seed)


@dataclass(frozen=True)
class Tolerance:
    """When the wasm module agrees with onnxruntime.

    Elementwise: |wasm - ort| <= atol + rtol * max|ort| for every output element (a float32
    reordering error scales with the output's magnitude, not each element's). Per input,
    top-1 must be identical and top-5 sets must share at least ``min_top5`` classes.
    """

    atol: float = 1e-6
    rtol: float = 1e-4
    min_top5: int = 4


@dataclass(frozen=True)
class Model:
    name: str
    source: str | Zoo | Generated         # path of a user's .onnx file, a zoo or a generated model
    declared_in: str
    inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()   # static shape overrides
    seeds: tuple[int, ...] = (1, 2, 3)    # validation inputs, drawn N(0, 1) from these seeds
    tolerance: Tolerance = field(default_factory=Tolerance)
    mattr: tuple[str, ...] = ("+simd128",)
    conv_block: int = 16                  # NCHW[b]c convolutions, weights pre-packed; 0: NCHW
    winograd: bool = True                 # F(4x4, 3x3) for 3x3 stride-1 convolutions
    fold_batch_norm: bool = True          # batch norms folded into the convolutions before them
    opt_level: str = "-O3"
    engine: str = "wasmtime"              # the engine the code is shaped for (ENGINES)
    tuning_log: str = ""                  # MetaSchedule database folder (absolute)
    tune_trials: int = 1000               # `doit tune:<name>` budget (--trials overrides)
    version: str = "0.1.0"                # release version (`doit publish:<name>`)
    references: tuple[str, ...] = ()      # reference sets (``references.expand``), absolute
    ranges: tuple[tuple[str, tuple[float, float]], ...] = ()   # validation inputs drawn from [low, high)

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.inputs)

    def tuning_dir(self) -> str:
        return self.tuning_log

    def threads_tuning_dir(self) -> str:
        """The threads variant's own tuning log, beside the one-thread log: schedules tuned for
        and measured on several cores (``doit tune:<name> --threads 2``), e.g.
        ``models/resnet50.threads.tuning/`` beside ``models/resnet50.tuning/``."""
        base = self.tuning_log[:-len(".tuning")] if self.tuning_log.endswith(".tuning") else self.tuning_log
        return base + ".threads.tuning"


REGISTRY: dict[str, Model] = {}


def _caller_file() -> str:
    for frame in inspect.stack()[2:]:
        if os.path.abspath(frame.filename) != os.path.abspath(__file__):
            return os.path.abspath(frame.filename)
    return os.path.join(ROOT, "<unknown>")


def shown(path: str) -> str:
    """A path as messages and reports name it: relative to the checkout when inside it."""
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


def model(name: str, onnx: str | None = None, source: Zoo | Generated | None = None, *,
          inputs: dict[str, tuple[int, ...]] | None = None, seeds=(1, 2, 3),
          tolerance: Tolerance | None = None, mattr=("+simd128",), conv_block: int = 16,
          winograd: bool = True, fold_batch_norm: bool = True, opt_level: str = "-O3", engine: str = "wasmtime",
          tuning_log: str = "", tune_trials: int = 1000,
          version: str = "0.1.0", reference: str | list[str] | tuple[str, ...] = (),
          ranges: dict[str, tuple[float, float]] | None = None,
          declared_in: str | None = None) -> Model:
    """Declare a model. Give exactly one of ``onnx`` (a path, absolute or relative to the
    declaring file's folder) and ``source=zoo(...)``. ``reference``: reference outputs to
    validate against (``wasmforge/references.py``), a path or a list of paths relative to the
    declaring file: ``.npz`` files, ``test_data_set_N`` folders, or folders of them.
    ``ranges``: per input, the ``[low, high)`` its validation inputs are drawn from (uniform;
    integers for integer inputs), e.g. ``{"ids": (0, 30522)}`` or ``{"x": (0.0, 1.0)}``.
    ``engine``: the engine whose code generator the module's code is shaped for (``ENGINES``);
    the module runs in any engine, a few percent faster in the one it names."""
    decl_file = os.path.abspath(declared_in) if declared_in else _caller_file()
    where = shown(decl_file)

    def bad(msg: str) -> DeclarationError:
        return DeclarationError(f"{where}: model {name!r}: {msg}")

    if not isinstance(name, str) or not _NAME.match(name):
        raise bad("name must match [a-z][a-z0-9_]* (it names build/<name>/ and doit tasks)")
    if (onnx is None) == (source is None):
        raise bad("give exactly one of onnx='path/to/model.onnx', source=zoo('resnet50') or "
                  "source=generated('mobilenet_v2')")
    if onnx is not None:
        src: str | Zoo | Generated = os.path.normpath(os.path.join(os.path.dirname(decl_file), onnx))
    else:
        src = source  # type: ignore[assignment]
    if inputs is not None and not isinstance(inputs, dict):
        raise bad(f"inputs must map input names to shapes, e.g. {{x = [1, 3, 224, 224]}}, got {inputs!r}")
    shapes = []
    for k, v in (inputs or {}).items():
        try:
            dims = tuple(int(d) for d in v)
        except (TypeError, ValueError):
            raise bad(f"inputs[{k!r}] must be a list of positive integers, got {v!r}") from None
        if not dims or any(d <= 0 for d in dims):
            raise bad(f"inputs[{k!r}] must be a list of positive integers, got {v!r}")
        shapes.append((k, dims))
    if (isinstance(seeds, (str, bytes)) or not isinstance(seeds, (list, tuple)) or not seeds
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds) or len(set(seeds)) != len(seeds)):
        raise bad(f"seeds must be a non-empty list of distinct integers, got {seeds!r}")
    if tolerance is not None and not isinstance(tolerance, Tolerance):
        raise bad(f"tolerance must be a Tolerance(atol=..., rtol=..., min_top5=...), got {tolerance!r}")
    tol = tolerance or Tolerance()
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in (tol.atol, tol.rtol)):
        raise bad(f"tolerance atol and rtol must be numbers >= 0, got {tol.atol!r} and {tol.rtol!r}")
    if not isinstance(tol.min_top5, int) or not 0 <= tol.min_top5 <= 5:
        raise bad(f"tolerance min_top5 must be an integer from 0 to 5, got {tol.min_top5!r}")
    if isinstance(mattr, str) or not isinstance(mattr, (list, tuple)) or not all(isinstance(a, str) for a in mattr):
        raise bad(f"mattr must be a list of target features such as [\"+simd128\"], got {mattr!r}")
    if not isinstance(conv_block, int) or isinstance(conv_block, bool) or conv_block < 0 or conv_block > 64:
        raise bad(f"conv_block must be 0 (NCHW convolutions) or a channel block from 1 to 64, got {conv_block!r}")
    if not isinstance(winograd, bool):
        raise bad(f"winograd must be true or false, got {winograd!r}")
    if not isinstance(fold_batch_norm, bool):
        raise bad(f"fold_batch_norm must be true or false, got {fold_batch_norm!r}")
    if opt_level not in ("-O0", "-O1", "-O2", "-O3", "-O4", "-Os", "-Oz"):
        raise bad(f"opt_level {opt_level!r} is not a wasm-opt level (-O0..-O4, -Os, -Oz)")
    if engine not in ENGINES:
        raise bad(f"engine must be one of {sorted(ENGINES)}, got {engine!r}")
    if not isinstance(tune_trials, int) or tune_trials < 0:
        raise bad(f"tune_trials must be a non-negative integer, got {tune_trials!r}")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise bad(f"version {version!r} must be a release version such as 1.0.0 (letters, digits, . _ -)")
    if ranges is not None and not isinstance(ranges, dict):
        raise bad(f"ranges must map input names to [low, high], got {ranges!r}")
    spans = []
    for k, v in (ranges or {}).items():
        ok = (isinstance(v, (list, tuple)) and len(v) == 2
              and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) and v[0] < v[1])
        if not ok:
            raise bad(f"ranges[{k!r}] must be [low, high] with low < high, got {v!r}")
        spans.append((k, (v[0], v[1])))
    refs = []
    for r in ([reference] if isinstance(reference, str) else list(reference)):
        if not isinstance(r, str):
            raise bad(f"reference must be a path or a list of paths, got {r!r}")
        try:
            refs += references.expand(os.path.normpath(os.path.join(os.path.dirname(decl_file), r)))
        except references.ReferenceError as e:
            raise bad(f"reference {r!r}: {e}") from None
    if name in REGISTRY and REGISTRY[name].declared_in != where:
        raise bad(f"already declared in {REGISTRY[name].declared_in}")
    m = Model(name=name, source=src, declared_in=where, inputs=tuple(sorted(shapes)),
              seeds=tuple(seeds), tolerance=tol,
              mattr=tuple(mattr), conv_block=conv_block, winograd=winograd,
              fold_batch_norm=fold_batch_norm, opt_level=opt_level,
              engine=engine, tune_trials=tune_trials, version=version, references=tuple(refs), ranges=tuple(sorted(spans)),
              # the tuning log lives next to the declaration: <folder>/<name>.tuning/
              tuning_log=os.path.normpath(os.path.join(os.path.dirname(decl_file),
                                                       tuning_log or f"{name}.tuning")))
    REGISTRY[name] = m
    return m


def model_from_toml(path: str) -> Model:
    """Declare a model from a TOML file (keys as ``model()``'s arguments)."""
    rel = shown(os.path.abspath(path))
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise DeclarationError(f"{rel}: cannot read model declaration: {e}") from e
    known = {"name", "onnx", "zoo", "generated", "seed", "inputs", "seeds", "tolerance", "mattr", "conv_block",
             "winograd", "fold_batch_norm", "opt_level", "engine", "tuning_log", "tune_trials", "version", "reference", "ranges"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DeclarationError(f"{rel}: unknown keys {unknown}; known: {sorted(known)}")
    if "name" not in data:
        raise DeclarationError(f"{rel}: missing key 'name'")
    onnx = data.get("onnx")
    try:
        source = (zoo(data["zoo"], data.get("seed", 0)) if "zoo" in data else
                  generated(data["generated"], data.get("seed", 0)) if "generated" in data else None)
        if "zoo" in data and "generated" in data:
            raise DeclarationError("give one of zoo and generated")
    except DeclarationError as e:
        raise DeclarationError(f"{rel}: {e}") from None
    tol = None
    if "tolerance" in data:
        fields = set(Tolerance.__dataclass_fields__)
        if not isinstance(data["tolerance"], dict) or set(data["tolerance"]) - fields:
            raise DeclarationError(f"{rel}: [tolerance] takes the keys {sorted(fields)}, got {data['tolerance']!r}")
        tol = Tolerance(**data["tolerance"])
    return model(data["name"], onnx=onnx, source=source, inputs=data.get("inputs"),
                 seeds=data.get("seeds", (1, 2, 3)), tolerance=tol,
                 mattr=data.get("mattr", ("+simd128",)), conv_block=data.get("conv_block", 16),
                 winograd=data.get("winograd", True), fold_batch_norm=data.get("fold_batch_norm", True),
                 opt_level=data.get("opt_level", "-O3"), engine=data.get("engine", "wasmtime"), tuning_log=data.get("tuning_log", ""),
                 tune_trials=data.get("tune_trials", 1000), version=data.get("version", "0.1.0"),
                 reference=data.get("reference", ()), ranges=data.get("ranges"),
                 declared_in=os.path.abspath(path))


def lookup(name: str) -> Model:
    if name not in REGISTRY:
        raise DeclarationError(f"unknown model {name!r}; declared: {', '.join(sorted(REGISTRY)) or 'none'}")
    return REGISTRY[name]
