"""The ONNX model zoo's "light" models, with seeded, calibrated weights."""
from wasmforge.dsl import model, zoo

# its tuning logs were made for kernels with TVM's batch-norm arithmetic in their epilogues:
# folded, 4,767 of their ~4,800 records match no kernel (the folded kernels, untuned, ran in
# 0.97 of the logs' time on an Intel Xeon); re-tune before folding
model("resnet50", source=zoo("resnet50"), tune_trials=1500, fold_batch_norm=False)
model("squeezenet", source=zoo("squeezenet"))
model("bvlc_alexnet", source=zoo("bvlc_alexnet"))
model("vgg19", source=zoo("vgg19"))
model("inception_v1", source=zoo("inception_v1"))
model("densenet121", source=zoo("densenet121"))
# inception_v2 is not declared: no seeded weights make its output depend on its input
# (materialize refuses them)
model("shufflenet", source=zoo("shufflenet"))
model("zfnet512", source=zoo("zfnet512"))
