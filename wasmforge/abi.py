"""The module's ABI, in one table: what every wasmforge module exports, and what its
``wasmforge.metadata`` custom section says about it. The link stage exports these names and
embeds ``metadata_abi``; ``runtime/wasmforge.h`` declares them in C; ``docs/abi.md`` is
checked against this table by the tests.
"""
from __future__ import annotations

# name -> what it does; the order is the link line's order (it fixes the export section)
EXPORTS = {
    "wasmforge_run": "run the model on the inputs written; 0 is success",
    "wasmforge_num_inputs": "number of inputs",
    "wasmforge_num_outputs": "number of outputs",
    "wasmforge_input_ptr": "(i) where input i's bytes go, C order; NULL when i is out of range",
    "wasmforge_input_size": "(i) input i's size in bytes",
    "wasmforge_output_ptr": "(i) where output i's bytes are after a run; NULL when i is out of range",
    "wasmforge_output_size": "(i) output i's size in bytes",
    "wasmforge_last_error": "a NUL-terminated message after a failed run",
    "wasmforge_num_calls": "number of kernel calls in a run (for profilers)",
    "wasmforge_call_kernel": "(c) the name of call c's kernel; NULL when c is out of range",
    "wasmforge_run_call": "(c) make call c alone; calls 0..n-1 in order compute a run, outputs not copied",
    "wasmforge_num_once_calls": "how many of the first calls compute constants: wasmforge_run makes them "
                                "on its first run only",
}
# the threads variant's own exports (its memory is the imported, shared env.memory)
THREADS_EXPORTS = {
    "wasmforge_threads_prepare": "(workers) on the first instance, after _initialize",
    "wasmforge_worker_stack": "(id) the initial stack pointer of worker id (1-based); 0 when it has none",
    "wasmforge_worker": "(id, stack) on a new instance per worker thread; serves parallel loops "
                        "until wasmforge_threads_stop()",
    "wasmforge_threads_attached": "number of workers attached: run once it equals the workers",
    "wasmforge_threads_stop": "make every worker return",
    "wasmforge_threads_tasks": "parallel tasks the workers have run (a count, for tests and profiles)",
    "wasmforge_threads_worker_died": "from a worker's thread whose wasmforge_worker trapped: the "
                                     "launching thread stops waiting for it",
}

# the portable module's canonical-ABI exports of the WIT interface wasmforge:model/inference
# (runtime/wasmforge_component.c, which names them itself): what `wasm-tools component new`
# lifts into the component's typed functions (docs/serving.md)
COMPONENT_EXPORTS = {
    "wasmforge:model/inference@0.1.0#metadata": "`metadata()`: a pointer to the model-info record",
    "wasmforge:model/inference@0.1.0#infer": "`infer(list<tensor>)`: a pointer to the result record",
    "cabi_post_wasmforge:model/inference@0.1.0#infer": "after the host has read infer's result (frees nothing)",
    "cabi_realloc": "where the host lowers infer's arguments (the callee frees them)",
}


def exports(threads: bool) -> tuple[str, ...]:
    return tuple(EXPORTS) + (tuple(THREADS_EXPORTS) if threads else ())


def metadata_abi(threads: bool) -> dict:
    """The ``abi`` entry of the module's metadata: how a host drives it."""
    abi = {"initialize": "_initialize", "run": "wasmforge_run",
           "inputs": "wasmforge_input_ptr/wasmforge_input_size",
           "outputs": "wasmforge_output_ptr/wasmforge_output_size",
           "error": "wasmforge_last_error"}
    if threads:
        abi["threads"] = {
            "memory": "imports env.memory (shared): the host creates it and gives it to every instance",
            "prepare": "wasmforge_threads_prepare(workers) on the first instance, after _initialize",
            "worker": "wasmforge_worker(id, wasmforge_worker_stack(id)) on a new instance per worker "
                      "thread, ids 1..workers; never _initialize a worker; it returns after "
                      "wasmforge_threads_stop()",
            "attached": "wasmforge_threads_attached(): run only once every worker has attached"}
    return abi
