"""Model declarations: the Python DSL and its TOML form, and their errors."""
from __future__ import annotations

import pytest

from wasmforge import dsl


@pytest.fixture(autouse=True)
def clean_registry(empty_registry):
    yield


def test_python_declaration_resolves_paths_next_to_it(tmp_path):
    decl = tmp_path / "m.py"
    m = dsl.model("mynet", onnx="nets/my.onnx", inputs={"x": [1, 3, 32, 32]}, declared_in=str(decl))
    assert m.source == str(tmp_path / "nets" / "my.onnx")
    assert m.input_shapes == {"x": (1, 3, 32, 32)}
    assert m.tuning_dir() == str(tmp_path / "mynet.tuning")
    assert dsl.lookup("mynet") is m


@pytest.mark.parametrize("kwargs, msg", [
    ({"name": "Bad-Name", "onnx": "a.onnx"}, "name must match"),
    ({"name": "both", "onnx": "a.onnx", "source": dsl.Zoo("resnet50")}, "exactly one of"),
    ({"name": "neither"}, "exactly one of"),
    ({"name": "shape", "onnx": "a.onnx", "inputs": {"x": [1, -3]}}, "positive integers"),
    ({"name": "lvl", "onnx": "a.onnx", "opt_level": "-O9"}, "not a wasm-opt level"),
    ({"name": "blk", "onnx": "a.onnx", "conv_block": -4}, "conv_block must be 0"),
    ({"name": "blk", "onnx": "a.onnx", "conv_block": "16"}, "conv_block must be 0"),
    ({"name": "wino", "onnx": "a.onnx", "winograd": "yes"}, "winograd must be true or false"),
    ({"name": "bn", "onnx": "a.onnx", "fold_batch_norm": 1}, "fold_batch_norm must be true or false"),
    ({"name": "eng", "onnx": "a.onnx", "engine": "spidermonkey"}, "engine must be one of ['v8', 'wasmtime']"),
])
def test_bad_declarations_name_the_file(tmp_path, kwargs, msg):
    with pytest.raises(dsl.DeclarationError) as e:
        dsl.model(declared_in=str(tmp_path / "decl.py"), **kwargs)
    assert msg in str(e.value) and "decl.py" in str(e.value)


def test_duplicate_names_are_refused(tmp_path):
    dsl.model("dup", onnx="a.onnx", declared_in=str(tmp_path / "one.py"))
    with pytest.raises(dsl.DeclarationError, match="already declared in"):
        dsl.model("dup", onnx="b.onnx", declared_in=str(tmp_path / "two.py"))


def test_unknown_zoo_model_lists_the_known_ones():
    with pytest.raises(dsl.DeclarationError, match="known: resnet50"):
        dsl.zoo("resnet51")


def test_generated_models_in_toml(tmp_path, empty_registry):
    (tmp_path / "g.toml").write_text('name = "enc"\ngenerated = "text_encoder"\nseed = 3\n')
    assert dsl.model_from_toml(str(tmp_path / "g.toml")).source == dsl.Generated("text_encoder", 3)
    (tmp_path / "h.toml").write_text('name = "h"\ngenerated = "lenet"\n')
    with pytest.raises(dsl.DeclarationError, match=r"h.toml: unknown generated model 'lenet'; known: text_encoder"):
        dsl.model_from_toml(str(tmp_path / "h.toml"))


def test_the_engine_decides_whether_the_opt_stage_splits_load_splats(tmp_path, empty_registry):
    from wasmforge import graph

    (tmp_path / "v.toml").write_text('name = "v"\nonnx = "v.onnx"\nengine = "v8"\n')
    (tmp_path / "w.toml").write_text('name = "w"\nonnx = "w.onnx"\n')
    assert graph.params(dsl.model_from_toml(str(tmp_path / "v.toml")))["opt"].split_load_splats is False
    assert graph.params(dsl.model_from_toml(str(tmp_path / "w.toml")))["opt"].split_load_splats is True


def test_toml_declaration(tmp_path):
    (tmp_path / "t.toml").write_text('name = "t"\nonnx = "t.onnx"\nseeds = [4]\n[inputs]\nx = [1, 2]\n'
                                     '[tolerance]\nrtol = 0.01\n')
    m = dsl.model_from_toml(str(tmp_path / "t.toml"))
    assert m.source == str(tmp_path / "t.onnx") and m.seeds == (4,)
    assert m.input_shapes == {"x": (1, 2)} and m.tolerance.rtol == 0.01


def test_toml_unknown_key(tmp_path):
    (tmp_path / "t.toml").write_text('name = "t"\nonnx = "t.onnx"\nbatch = 3\n')
    with pytest.raises(dsl.DeclarationError, match=r"t.toml: unknown keys \['batch'\]"):
        dsl.model_from_toml(str(tmp_path / "t.toml"))


def test_unknown_model_lists_declared():
    dsl.model("known", onnx="a.onnx", declared_in="/x/decl.py")
    with pytest.raises(dsl.DeclarationError, match="declared: known"):
        dsl.lookup("other")
