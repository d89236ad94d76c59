"""The benchmark suite's own models, written as ONNX graphs by wasmforge/generators.py: what
the zoo's convolutional networks do not cover (attention and layer norm; depthwise
convolutions and ReLU6)."""
from wasmforge.dsl import generated, model

model("text_encoder", source=generated("text_encoder"))
model("mobilenet_v2", source=generated("mobilenet_v2"))
