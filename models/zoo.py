"""The ONNX model zoo's "light" models, with seeded, calibrated weights."""
from pipeline.dsl import model, zoo

model("resnet50", source=zoo("resnet50"), tune_trials=1500)
model("squeezenet", source=zoo("squeezenet"))
model("bvlc_alexnet", source=zoo("bvlc_alexnet"))
model("vgg19", source=zoo("vgg19"))
model("inception_v1", source=zoo("inception_v1"))
