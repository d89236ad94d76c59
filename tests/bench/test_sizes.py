"""bench.sizes: a module's bytes against its model's weights."""
from __future__ import annotations

import numpy as np

from wasmforge.bench import sizes


def test_weight_bytes_are_the_initializers(tiny_onnx):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(tiny_onnx)
    want = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    assert want > 0 and sizes.weight_bytes(str(tiny_onnx)) == want
    assert want == sum(np.prod(t.dims) * 4 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT) \
        + sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer if t.data_type != onnx.TensorProto.FLOAT)


def test_table_names_each_model_with_its_ratio():
    rows = [{"model": "resnet50", "weights_bytes": 102_440_624, "module_bytes": 102_800_000, "http_bytes": None,
             "ratio": 1.0035}]
    text = sizes.table(rows)
    assert "| resnet50 | 102.4 | 102.8 | 1.004 |  |" in text
