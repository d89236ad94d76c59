"""wasmforge: an ONNX model -> one standalone, validated WASI module, through a cached graph
of stages (materialize -> import -> relax_build -> emit -> executor -> link -> opt -> validate).

    stages/    one module per stage: its parameters and its run function
    graph.py   the stages of one model (inputs, outputs, config, action) and run_stage
    store/     digests, atomic files, the local and remote content-addressed stores
    compiler/  convolution lowering, register-tiled schedules and the rule that picks them
    tune/      autotuning, measured inside wasmtime
    release/   publish: bundles, the static library, OCI
    engines/   running a module: wasmtime from Python, pywasm, Node
    bench/     timing a module against onnxruntime and onnxruntime-web
    runtime/   the C runtime linked into every module
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository
