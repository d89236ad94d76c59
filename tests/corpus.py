"""A generated corpus of bad and odd models and declarations: what a user's files can get
wrong. ``generate(folder)`` writes each case into a folder of its own (the ONNX file, any
side files, and one declaration) and returns them; ``tests/test_corpus.py`` builds each one
through the real task graph.

Every case must end in a clear error that names a file and the problem, except the flipped
bytes: a byte flipped inside a weight leaves a valid model, which must then build and pass
validation like any other (``expect = "error or valid"``).

    python tests/corpus.py /tmp/corpus     # write the corpus, to look at it
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Case:
    name: str              # also the model's name and its folder's
    dir: str
    needles: tuple[str, ...]   # what the error must say (besides "error:")
    expect: str = "error"      # or "error or valid"


def _helpers():
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    return onnx, TensorProto, helper, numpy_helper


def small_model(*, nodes=None, inputs=None, outputs=None, inits=None, opset=17, ir=8):
    """x[1,4,6,6] -> Conv(4->4, 3x3) -> Relu -> y: the base most cases alter."""
    onnx, T, helper, nh = _helpers()
    rng = np.random.default_rng(0)
    w = nh.from_array(rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32), "W")
    nodes = nodes if nodes is not None else [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                                             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    inputs = inputs if inputs is not None else [helper.make_tensor_value_info("x", T.FLOAT, [1, 4, 6, 6])]
    outputs = outputs if outputs is not None else [helper.make_tensor_value_info("y", T.FLOAT, [1, 4, 6, 6])]
    graph = helper.make_graph(nodes, "corpus", inputs, outputs, [w] if inits is None else inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    return model


def _case(root: str, name: str, *, model=None, raw: bytes | None = None, toml: str | None = None,
          py: str | None = None, needles=(), expect="error", extra: dict[str, bytes] | None = None) -> Case:
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    if model is not None:
        raw = model.SerializeToString()
    if raw is not None:
        with open(os.path.join(d, f"{name}.onnx"), "wb") as f:
            f.write(raw)
    for rel, data in (extra or {}).items():
        with open(os.path.join(d, rel), "wb") as f:
            f.write(data)
    if py is not None:
        with open(os.path.join(d, f"{name}.py"), "w") as f:
            f.write(py)
    else:
        with open(os.path.join(d, f"{name}.toml"), "w") as f:
            f.write(toml if toml is not None else f'name = "{name}"\nonnx = "{name}.onnx"\n')
    return Case(name, d, tuple(needles), expect)


def _external_model(location: str, length: int | None = None):
    """The small model with its weight stored outside the file, at ``location``."""
    onnx, T, helper, nh = _helpers()
    model = small_model()
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(length or 4 * 4 * 4 * 9))):
        e = w.external_data.add()
        e.key, e.value = k, v
    return model


def generate(root: str) -> list[Case]:
    onnx, T, helper, nh = _helpers()
    os.makedirs(root, exist_ok=True)
    cases: list[Case] = []
    add = lambda *a, **k: cases.append(_case(root, *a, **k))   # noqa: E731
    good = small_model().SerializeToString()
    weight = small_model().graph.initializer[0].raw_data
    w_at = good.find(weight)

    # truncation at many offsets: every prefix ends inside a field
    for cut in (1, 2, 5, 9, 17, 33, 64, 120, w_at + 10, w_at + len(weight) // 2, len(good) - 40, len(good) - 3):
        add(f"truncated_{cut}", raw=good[:cut], needles=(f"truncated_{cut}.onnx",))
    # flipped bytes: in the structure (names, types, shapes, attributes) and in the weight
    for at in (0, 3, 7, 12, 20, 30, 45, w_at - 6, w_at + 40, len(good) - 20, len(good) - 8, len(good) - 1):
        raw = bytearray(good)
        raw[at] ^= 0xFF
        add(f"flipped_{at}", raw=bytes(raw), needles=(f"flipped_{at}.onnx",), expect="error or valid")

    # graph structure
    add("undefined_value", model=small_model(nodes=[helper.make_node("Relu", ["nowhere"], ["y"])]),
        needles=("undefined_value.onnx", "nowhere"))
    add("duplicate_output_names", model=small_model(nodes=[helper.make_node("Relu", ["x"], ["y"]),
                                                          helper.make_node("Sigmoid", ["x"], ["y"])]),
        needles=("duplicate_output_names.onnx", "'y'"))
    add("duplicate_initializers", model=small_model(inits=[small_model().graph.initializer[0]] * 2),
        needles=("duplicate_initializers.onnx", "W initializer name is not unique"))
    add("duplicate_inputs", model=small_model(inputs=[helper.make_tensor_value_info("x", T.FLOAT, [1, 4, 6, 6])] * 2),
        needles=("duplicate_inputs.onnx", "'x'"))
    add("cycle", model=small_model(nodes=[helper.make_node("Add", ["x", "b"], ["a"]),
                                          helper.make_node("Relu", ["a"], ["b"]),
                                          helper.make_node("Relu", ["b"], ["y"])]),
        needles=("cycle.onnx",))
    add("empty_graph", model=small_model(nodes=[], outputs=[helper.make_tensor_value_info("x", T.FLOAT, [1, 4, 6, 6])]),
        needles=("empty_graph.onnx", "no nodes"))
    add("output_is_input", model=small_model(
        nodes=[helper.make_node("Relu", ["x"], ["unused"])],
        outputs=[helper.make_tensor_value_info("x", T.FLOAT, [1, 4, 6, 6])]),
        needles=("output_is_input.onnx", "output 'x'", "computes nothing"))
    add("no_inputs", model=small_model(nodes=[helper.make_node("Relu", ["W"], ["y"])], inputs=[],
                                       outputs=[helper.make_tensor_value_info("y", T.FLOAT, [4, 4, 3, 3])]),
        needles=("no_inputs.onnx", "no inputs"))
    add("unknown_operator", model=small_model(nodes=[helper.make_node("Frobnicate", ["x"], ["y"])]),
        needles=("unknown_operator.onnx", "Frobnicate"))

    # dimensions
    for tag, dims in (("zero_dim", [1, 0, 6, 6]), ("negative_dim", [1, -4, 6, 6])):
        add(tag, model=small_model(inputs=[helper.make_tensor_value_info("x", T.FLOAT, dims)],
                                   outputs=[helper.make_tensor_value_info("y", T.FLOAT, dims)],
                                   nodes=[helper.make_node("Relu", ["x"], ["y"])]),
            needles=(f"{tag}.onnx", "'x'"))
    add("huge_dim", model=small_model(inputs=[helper.make_tensor_value_info("x", T.FLOAT, [1, 1 << 40])],
                                      outputs=[helper.make_tensor_value_info("y", T.FLOAT, [1, 1 << 40])],
                                      nodes=[helper.make_node("Relu", ["x"], ["y"])]),
        needles=("huge_dim.onnx", "'x'", "4 GiB"))
    bad_w = small_model().graph.initializer[0]
    bad_w.dims[0] = 5   # 5x4x3x3 declared, 4x4x3x3 of data
    add("initializer_size_mismatch", model=small_model(inits=[bad_w]), needles=("initializer_size_mismatch.onnx", "tensor name: W", "too small"))
    add("declared_zero_dim", model=small_model(),
        toml='name = "declared_zero_dim"\nonnx = "declared_zero_dim.onnx"\n[inputs]\nx = [1, 0, 6, 6]\n',
        needles=("declared_zero_dim.toml", "positive integers"))

    # element types the pipeline cannot compile
    for tag, elem in (("string_input", T.STRING), ("complex_input", T.COMPLEX64), ("bfloat16_input", T.BFLOAT16)):
        add(tag, model=small_model(inputs=[helper.make_tensor_value_info("x", elem, [1, 4])],
                                   outputs=[helper.make_tensor_value_info("y", elem, [1, 4])],
                                   nodes=[helper.make_node("Identity", ["x"], ["y"])], inits=[]),
            needles=(f"{tag}.onnx", "'x'", onnx.TensorProto.DataType.Name(elem).lower()))
    bf = helper.make_tensor("B", T.BFLOAT16, [4], [1.0, 2.0, 3.0, 4.0])
    add("bfloat16_weight", model=small_model(
        nodes=[helper.make_node("Cast", ["B"], ["bf"], to=T.FLOAT),
               helper.make_node("Add", ["x", "bf"], ["y"])],
        inputs=[helper.make_tensor_value_info("x", T.FLOAT, [1, 4])],
        outputs=[helper.make_tensor_value_info("y", T.FLOAT, [1, 4])], inits=[bf]),
        needles=("bfloat16_weight.onnx",), expect="error or valid")
    st = helper.make_tensor("S", T.STRING, [1], [b"hello"])
    add("string_weight", model=small_model(
        nodes=[helper.make_node("Identity", ["x"], ["y"])],
        inputs=[helper.make_tensor_value_info("x", T.FLOAT, [1, 4])],
        outputs=[helper.make_tensor_value_info("y", T.FLOAT, [1, 4])], inits=[st]),
        needles=("string_weight.onnx", "'S'", "string"))

    # external data
    w_bytes = bytes(weight)
    add("external_relative_escape", model=_external_model("../outside.bin"),
        needles=("external_relative_escape.onnx", "outside.bin", "outside the model's folder"))
    with open(os.path.join(root, "outside.bin"), "wb") as f:
        f.write(w_bytes)
    add("external_absolute", model=_external_model(os.path.join(root, "outside.bin")),
        needles=("external_absolute.onnx", "outside.bin", "outside the model's folder"))
    add("external_missing", model=_external_model("weights.bin"),
        needles=("external_missing.onnx", "weights.bin", "file not found"))
    add("external_short", model=_external_model("weights.bin"), extra={"weights.bin": w_bytes[:100]},
        needles=("external_short.onnx", "weights.bin", "holds only 100 bytes"))
    c = _case(root, "external_symlink", model=_external_model("weights.bin"),
              needles=("external_symlink.onnx", "weights.bin", "outside the model's folder"))
    os.symlink(os.path.join(root, "outside.bin"), os.path.join(c.dir, "weights.bin"))
    cases.append(c)
    add("external_directory", model=_external_model("."), needles=("external_directory.onnx", "not a regular file"))

    # opsets and domains
    add("opset_too_new", model=small_model(opset=99), needles=("opset_too_new.onnx", "opset 99"))
    add("opset_zero", model=small_model(opset=0), needles=("opset_zero.onnx", "opset"))
    add("opset_too_old_for_op", model=small_model(opset=1, ir=3), needles=("opset_too_old_for_op.onnx",))
    m = small_model()
    m.graph.node[1].domain = "com.example"
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    add("unknown_domain", model=m, needles=("unknown_domain.onnx", "com.example"))
    m = small_model()
    del m.opset_import[:]
    add("no_opset", model=m, needles=("no_opset.onnx", "opset"))
    add("ir_version_too_new", model=small_model(ir=99), needles=("ir_version_too_new.onnx", "ir_version 99"))

    # malformed TOML declarations
    for tag, text, needle in (
        ("toml_syntax", 'name = "toml_syntax\nonnx = \n', "cannot read"),
        ("toml_name_type", 'name = 5\nonnx = "x.onnx"\n', "name must match"),
        ("toml_bad_name", 'name = "Bad Name"\nonnx = "x.onnx"\n', "name must match"),
        ("toml_unknown_key", 'name = "toml_unknown_key"\nonnx = "x.onnx"\nturbo = true\n', "turbo"),
        ("toml_missing_name", 'onnx = "x.onnx"\n', "missing key 'name'"),
        ("toml_both_sources", 'name = "toml_both_sources"\nonnx = "x.onnx"\nzoo = "resnet50"\n', "exactly one"),
        ("toml_inputs_type", 'name = "toml_inputs_type"\nonnx = "x.onnx"\ninputs = "x"\n', "inputs"),
        ("toml_inputs_values", 'name = "toml_inputs_values"\nonnx = "x.onnx"\n[inputs]\nx = ["a", 2]\n', "positive integers"),
        ("toml_seeds_type", 'name = "toml_seeds_type"\nonnx = "x.onnx"\nseeds = "abc"\n', "seeds"),
        ("toml_tolerance_key", 'name = "toml_tolerance_key"\nonnx = "x.onnx"\n[tolerance]\nslack = 1\n', "tolerance"),
        ("toml_tolerance_value", 'name = "toml_tolerance_value"\nonnx = "x.onnx"\n[tolerance]\natol = "big"\n', "tolerance"),
        ("toml_conv_block", 'name = "toml_conv_block"\nonnx = "x.onnx"\nconv_block = -1\n', "conv_block"),
        ("toml_unknown_zoo", 'name = "toml_unknown_zoo"\nzoo = "lenet"\n', "unknown zoo model"),
        ("toml_reference_missing", 'name = "toml_reference_missing"\nonnx = "x.onnx"\nreference = "refs"\n', "refs"),
        ("toml_mattr_type", 'name = "toml_mattr_type"\nonnx = "x.onnx"\nmattr = 3\n', "mattr"),
    ):
        add(tag, toml=text, needles=(f"{tag}.toml", needle))
    # malformed Python declarations
    for tag, text, needle in (
        ("py_syntax", "from wasmforge.dsl import model\nmodel('py_syntax', onnx='x.onnx'\n", "SyntaxError"),
        ("py_raises", "raise RuntimeError('half-written declaration')\n", "half-written declaration"),
        ("py_import", "import no_such_module_here\n", "no_such_module_here"),
        ("py_bad_argument", "from wasmforge.dsl import model\nmodel('py_bad_argument', onnx='x.onnx', turbo=True)\n",
         "turbo"),
        ("py_tolerance_type", "from wasmforge.dsl import model\nmodel('py_tolerance_type', onnx='x.onnx', "
                              "tolerance=0.1)\n", "tolerance"),
    ):
        add(tag, py=text, needles=(f"{tag}.py", needle))
    return cases


if __name__ == "__main__":
    for case in generate(sys.argv[1]):
        print(case.name, case.expect, case.needles)
