/* wasmforge.h: the C ABI every wasmforge module exports (and lib<model>.a provides).
 *
 * A host instantiates the module, calls `_initialize` once (a WASI reactor: it runs the
 * constructors that register every kernel), then for each inference:
 *   1. writes each input's bytes at wasmforge_input_ptr(i) (wasmforge_input_size(i) bytes,
 *      C-contiguous, the dtype and shape recorded in the "wasmforge.metadata" custom section),
 *   2. calls wasmforge_run(); 0 means success,
 *   3. reads each output's bytes at wasmforge_output_ptr(i) (wasmforge_output_size(i) bytes).
 * On failure wasmforge_run() returns non-zero and wasmforge_last_error() is a NUL-terminated
 * message.
 *
 * The threads variant (<model>.threads.wasm) also exports wasmforge_threads_prepare,
 * wasmforge_worker_stack, wasmforge_worker, wasmforge_threads_attached, wasmforge_threads_stop
 * and wasmforge_threads_tasks, and imports its shared memory as env.memory; the host protocol
 * is in docs/threads.md and in the module's metadata (abi.threads). lib<model>.a is
 * the portable, single-threaded build.
 */
#ifndef WASMFORGE_H_
#define WASMFORGE_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int32_t wasmforge_run(void);
uint32_t wasmforge_num_inputs(void);
uint32_t wasmforge_num_outputs(void);
void* wasmforge_input_ptr(uint32_t i);   /* NULL when i is out of range */
uint32_t wasmforge_input_size(uint32_t i);
void* wasmforge_output_ptr(uint32_t i);  /* NULL when i is out of range */
uint32_t wasmforge_output_size(uint32_t i);
const char* wasmforge_last_error(void);

/* Stepping, for profilers: the run is wasmforge_num_calls() kernel calls in order;
 * wasmforge_run_call(c) makes call c alone (0 on success) and wasmforge_call_kernel(c) names
 * its kernel (NULL when c is out of range). Calls 0..n-1 in order compute what
 * wasmforge_run() does, except that the outputs are not copied to wasmforge_output_ptr().
 * The host times each call with its own clock: the module imports nothing for it.
 * The first calls may compute constants (the Winograd weights): wasmforge_run() makes them on
 * its first run only, and the stepping API makes them each time it is asked to. */
uint32_t wasmforge_num_calls(void);
const char* wasmforge_call_kernel(uint32_t c);
int32_t wasmforge_run_call(uint32_t c);
uint32_t wasmforge_num_once_calls(void);   /* the first calls, which compute constants */

#ifdef __cplusplus
}
#endif

#endif /* WASMFORGE_H_ */
