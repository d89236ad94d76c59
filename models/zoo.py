"""The ONNX model zoo's "light" models, with seeded, calibrated weights."""
from wasmforge.dsl import model, zoo

# its tuning logs were made for kernels with TVM's batch-norm arithmetic in their epilogues:
# folded, 4,767 of their ~4,800 records match no kernel (the folded kernels, untuned, ran in
# 0.97 of the logs' time on an Intel Xeon); re-tune before folding
model("resnet50", source=zoo("resnet50"), tune_trials=1500, fold_batch_norm=False)
model("squeezenet", source=zoo("squeezenet"))
model("bvlc_alexnet", source=zoo("bvlc_alexnet"))
# VGG-19's 3x3 weights are 80 MB: Winograd's 6x6 transformed weights would add 240 MB to a
# 550 MB module (untuned, it ran 8.2 s per inference with Winograd, 23 s without)
model("vgg19", source=zoo("vgg19"), winograd=False)
model("inception_v1", source=zoo("inception_v1"))
model("densenet121", source=zoo("densenet121"))
# inception_v2 is not declared: no seeded weights make its output depend on its input
# (materialize refuses them)
model("shufflenet", source=zoo("shufflenet"))
model("zfnet512", source=zoo("zfnet512"))
