"""The model as a WASI 0.2 component: the WIT interface ``wasmforge:model/inference``
(``wit/model.wit``), the component made from the validated core module (``make``), and a
host that calls it through wasmtime's component API (``host``).
"""
from __future__ import annotations

import os

WIT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wit")
WORLD = "model"
INTERFACE = "wasmforge:model/inference@0.1.0"

# the WIT enum ``datatype``, by numpy dtype name (the names of the Open Inference Protocol)
DATATYPES = {"bool": "bool", "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
             "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64", "float16": "fp16",
             "float32": "fp32", "float64": "fp64"}
NUMPY_DTYPES = {v: k for k, v in DATATYPES.items()}
