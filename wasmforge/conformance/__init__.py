"""Conformance: ONNX's own test models (shipped in the ``onnx`` wheel under
``onnx/backend/test/data/``: ``pytorch-converted``, ``pytorch-operator``, ``simple``), each
built through the real pipeline and validated against its bundled expected outputs.

Each case gets a declaration (``<out>/models/<name>.toml``: the model, its
``test_data_set_*`` folders as references, and the input shapes those pin) and is built in a
process of its own, with a time limit, up to the portable module's validation. Its outcome is
one of:

- ``passed``: the module agrees with the expected outputs (and with onnxruntime when it runs);
- ``refused``: a stage refused the model with a clear reason (the operator or feature);
- ``failed``: the module was built and gives a wrong answer;
- ``crashed``: anything else (a traceback, a signal, the time limit).

``summary.json`` holds every case's outcome and reason, and the counts.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

OUTCOMES = ("passed", "refused", "failed", "crashed")
SUITES = ("pytorch-converted", "pytorch-operator", "simple")
# the backend tests' own tolerance (onnx.backend.test.case.test_case: rtol 1e-3), on our
# per-output scale (|got - want| <= atol + rtol * max|want|)
TOLERANCE = {"atol": 1e-6, "rtol": 1e-3, "min_top5": 4}
TIME_LIMIT = 300   # seconds per case
# the fixed sample CI builds: every outcome but the two that must not happen, and the
# features behind them: old opsets only the references can check, grouped and depthwise
# convolutions, Gather indices, per-channel PRelu, n-ary Max, integer and boolean tensors;
# sequences, strings, training operators and a shape given as an input, which are refused
SAMPLE = ("test_avgpool2d", "test_batchnorm2d_eval", "test_conv1d_groups", "test_conv2d_depthwise_with_multiplier",
          "test_convtranspose2d", "test_embedding", "test_maxpool2d_stride_padding_dilation",
          "test_prelu_2d_multiparam", "test_logsoftmax", "test_pixelshuffle", "test_operator_max",
          "test_operator_index", "test_operator_pad", "test_operator_permute2", "test_operator_addmm",
          "test_sign_model", "test_shrink", "test_sequence_model1", "test_expand_shape_model1",
          "test_gradient_of_add", "test_strnorm_model_monday_casesensintive_lower")


@dataclass(frozen=True)
class Case:
    name: str      # a model name: lower case, unique over the suites
    suite: str
    dir: str       # holds model.onnx and test_data_set_*/

    @property
    def onnx(self) -> str:
        return os.path.join(self.dir, "model.onnx")


def data_root() -> str:
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def cases(root: str | None = None) -> list[Case]:
    """Every test model of the three suites, named ``test_<what>`` in lower case (a name two
    suites share takes its suite as a prefix)."""
    root = root or data_root()
    found = [(suite, d) for suite in SUITES for d in sorted(os.listdir(os.path.join(root, suite)))
             if os.path.isfile(os.path.join(root, suite, d, "model.onnx"))]
    lowered = [d.lower() for _, d in found]
    out = []
    for suite, d in found:
        name = d.lower() if lowered.count(d.lower()) == 1 else f"{re.sub('[^a-z0-9]', '_', suite)}_{d.lower()}"
        out.append(Case(name, suite, os.path.join(root, suite, d)))
    return out


def pinned_inputs(case: Case) -> dict[str, list[int]]:
    """The shapes of the inputs whose graph shape is not static, as the first reference set
    gives them (a backend test model may leave its batch or length dimensions open)."""
    import onnx

    from wasmforge.references import read_tensor

    model = onnx.load(case.onnx, load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    names = [i for i in model.graph.input if i.name not in inits]
    first = os.path.join(case.dir, "test_data_set_0")
    out = {}
    for k, vi in enumerate(names):
        dims = vi.type.tensor_type.shape.dim
        static = all(d.HasField("dim_value") and d.dim_value > 0 for d in dims)
        pb = os.path.join(first, f"input_{k}.pb")
        if static or not os.path.isfile(pb):
            continue
        shape = list(read_tensor(pb).shape)
        if shape and all(d > 0 for d in shape):
            out[vi.name] = shape
    return out


def declaration(case: Case) -> str:
    """The case's TOML declaration."""
    try:
        pins = pinned_inputs(case)
    except Exception:   # an unreadable model: the import stage says what is wrong with it
        pins = {}
    lines = [f'name = "{case.name}"', f'onnx = "{case.onnx}"', f'reference = ["{case.dir}"]',
             "seeds = [1]", "[tolerance]"] + [f"{k} = {v}" for k, v in TOLERANCE.items()]
    if pins:
        lines += ["[inputs]"] + [f'"{k}" = {v}' for k, v in sorted(pins.items())]
    return "\n".join(lines) + "\n"


def classify(stage: str, problem: str) -> tuple[str, str]:
    """A stage error's outcome and reason: a module that validation found wrong failed;
    any other stage error is a refusal whose message names the reason."""
    if stage == "validate" and problem.startswith("validation failed"):
        return "failed", problem
    return "refused", problem


def counts(results: list[dict]) -> dict[str, int]:
    return {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES}


def table(summary: dict) -> str:
    """The summary as a table: counts, then every case that did not pass and why."""
    c = summary["counts"]
    rows = [f"{summary['total']} ONNX test models: " + ", ".join(f"{c[o]} {o}" for o in OUTCOMES), ""]
    for r in summary["cases"]:
        if r["outcome"] != "passed":
            rows.append(f"  {r['outcome']:<8} {r['name']:<44} {r['stage'] or '':<12} {r['reason'][:200]}")
    return "\n".join(rows)
