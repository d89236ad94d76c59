"""wasmforge: ONNX model -> standalone, validated WASI module, one stage per module.

Stages, in order: materialize (zoo models only) -> import -> build -> emit -> executor ->
link -> opt -> validate. Each stage module exposes a small pure ``key(...)`` that digests
everything that can change its output, and ``run(...)``. ``pipeline.stages`` wires them
to paths; ``dodo.py`` turns them into doit tasks.
"""
