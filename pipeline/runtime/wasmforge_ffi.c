/* wasmforge_ffi.c: the tvm-ffi services TVM's wasm32 kernels import.
 *
 * The system-lib registry (TVMFFIEnvModRegisterSystemLibSymbol) that the kernel object's
 * constructor fills, error reporting into a fixed static buffer (no heap needed to report
 * a failure), workspace allocation and a serial parallel-launch. Not a translation unit of
 * its own: wasmforge_runtime.c (the model module) and wasmforge_bench.c (the tuning
 * measurement module) each include it, so each is built by one clang argv.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tvm/ffi/c_api.h>

#define WF_EXPORT(name) __attribute__((export_name(#name))) name

/* ---------------------------------------------------------------- errors */

static char wf_error[1024];

static void wf_set_error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(wf_error, sizeof(wf_error), fmt, ap);
  va_end(ap);
}

/* Kernels report failures (shape checks, workspace exhaustion) through this call, then
 * return non-zero; the message parts are static strings inside the kernel object. */
void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t num_parts) {
  size_t n = (size_t)snprintf(wf_error, sizeof(wf_error), "%s: ", kind ? kind : "Error");
  for (int32_t i = 0; i < num_parts && n < sizeof(wf_error) - 1; ++i) {
    if (parts[i] == NULL) continue;
    size_t len = strlen(parts[i]);
    if (len > sizeof(wf_error) - 1 - n) len = sizeof(wf_error) - 1 - n;
    memcpy(wf_error + n, parts[i], len);
    n += len;
  }
  wf_error[n] = '\0';
}

void TVMFFIErrorSetRaisedFromCStr(const char* kind, const char* message) {
  const char* parts[1] = {message};
  TVMFFIErrorSetRaisedFromCStrParts(kind, parts, 1);
}

const char* WF_EXPORT(wasmforge_last_error)(void) { return wf_error; }

/* ------------------------------------------------------ system-lib registry */

/* The kernel object's constructor (__tvm_module_startup) registers every kernel here.
 * In a reactor module `_initialize` runs the constructors, so nobody calls
 * __wasm_call_ctors by hand. */
#define WF_MAX_SYMBOLS 8192
static struct {
  const char* name;
  void* ptr;
} wf_symbols[WF_MAX_SYMBOLS];
static uint32_t wf_num_symbols;
static int wf_registry_overflow;

int TVMFFIEnvModRegisterSystemLibSymbol(const char* name, void* ptr) {
  if (wf_num_symbols == WF_MAX_SYMBOLS) {
    wf_registry_overflow = 1;
    return -1;
  }
  wf_symbols[wf_num_symbols].name = name;
  wf_symbols[wf_num_symbols].ptr = ptr;
  ++wf_num_symbols;
  return 0;
}

static void* wf_lookup(const char* name) {
  static const char prefix[] = "__tvm_ffi_";
  for (uint32_t i = 0; i < wf_num_symbols; ++i) {
    const char* s = wf_symbols[i].name;
    if (strcmp(s, name) == 0) return wf_symbols[i].ptr;
    if (strncmp(s, prefix, sizeof(prefix) - 1) == 0 && strcmp(s + sizeof(prefix) - 1, name) == 0)
      return wf_symbols[i].ptr;
  }
  return NULL;
}

/* ------------------------------------------------------ backend services */

void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                               int dtype_bits_hint) {
  (void)device_type, (void)device_id, (void)dtype_code_hint, (void)dtype_bits_hint;
  size_t n = (size_t)((nbytes + 63) & ~(uint64_t)63);
  void* p = aligned_alloc(64, n ? n : 64);
  if (p == NULL) wf_set_error("out of memory: workspace of %llu bytes", (unsigned long long)nbytes);
  return p;
}

int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr) {
  (void)device_type, (void)device_id;
  free(ptr);
  return 0;
}

typedef struct {
  void* sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);

/* Serial: the job runs inline as task 0 of 1 (threads are another issue's work). */
int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  (void)num_task;
  TVMParallelGroupEnv env = {NULL, 1};
  return flambda(0, &env, cdata);
}

int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id, (void)penv;
  return 0;
}

