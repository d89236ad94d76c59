"""wasmforge: ONNX model -> standalone, validated WASI module, one stage per module.

Stages, in order: materialize (zoo models only) -> import -> relax_build -> emit ->
executor -> link -> opt -> validate. Each stage module exposes ``run(...)`` and its
parameters; ``pipeline.stages`` wires them to paths, gives each its config and its pure
cache key (``stage_key``), and serves it from the content-addressed store
(``pipeline.cache``, ``pipeline.remote``) or runs it. ``dodo.py`` turns the stages into doit
tasks. Around them: ``tune`` (autotuning in wasmtime), ``publish`` (releases, ``oci``,
``staticlib``), ``bench``, ``host`` (run a module from Python) and ``wasmbin``.
"""
