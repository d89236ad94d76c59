/* wasmforge_measure.c: the measurement module MetaSchedule's candidates are timed in.
 *
 * Autotuning must time a candidate as what it will ship as: wasm32 code in the wasm engine.
 * WASI has no sockets, so there is no RPC server; instead the tuner links each candidate
 * kernel (a system-lib object registering "main") with this file into a tiny WASI reactor
 * and the host calls it in-process. The host describes the kernel's arguments in
 * wfb_desc(): int32 count, then per argument int32 ndim, uint8 code, uint8 bits,
 * uint16 lanes, int64 shape[ndim]. wfb_setup() allocates and fills them, wfb_run(n) calls
 * the kernel n times.
 */
#include "wasmforge_ffi.c"

#define WFB_MAX_ARGS 32
#define WFB_MAX_DIMS 8

typedef int (*wf_kernel_fn)(void* self, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result);

static uint8_t wfb_descriptor[4096] __attribute__((aligned(8)));
static DLTensor wfb_tensors[WFB_MAX_ARGS];
static int64_t wfb_shapes[WFB_MAX_ARGS][WFB_MAX_DIMS];
static TVMFFIAny wfb_args[WFB_MAX_ARGS];
static int32_t wfb_nargs;
static wf_kernel_fn wfb_fn;

void* WF_EXPORT(wfb_desc)(void) { return wfb_descriptor; }

int32_t WF_EXPORT(wfb_setup)(void) {
  const uint8_t* p = wfb_descriptor;
  int32_t n;
  memcpy(&n, p, 4);
  p += 4;
  if (n < 0 || n > WFB_MAX_ARGS) {
    wf_set_error("bench: %d arguments (at most %d)", n, WFB_MAX_ARGS);
    return -1;
  }
  uint32_t rng = 12345u;
  for (int32_t i = 0; i < n; ++i) {
    int32_t ndim;
    memcpy(&ndim, p, 4);
    DLDataType dt;
    dt.code = p[4];
    dt.bits = p[5];
    memcpy(&dt.lanes, p + 6, 2);
    p += 8;
    if (ndim < 0 || ndim > WFB_MAX_DIMS) {
      wf_set_error("bench: argument %d has %d dimensions", i, ndim);
      return -1;
    }
    uint64_t count = 1;
    for (int32_t d = 0; d < ndim; ++d) {
      memcpy(&wfb_shapes[i][d], p, 8);
      p += 8;
      count *= (uint64_t)wfb_shapes[i][d];
    }
    uint64_t bytes = count * ((dt.bits * dt.lanes + 7u) / 8u);
    void* data = wf_alloc(bytes + 64);
    if (data == NULL) {
      wf_set_error("bench: out of memory for argument %d (%llu bytes)", i, (unsigned long long)bytes);
      return -1;
    }
    if (dt.code == kDLFloat && dt.bits == 32) {
      float* f = (float*)data;
      for (uint64_t k = 0; k < count; ++k) {
        rng = rng * 1103515245u + 12345u;
        f[k] = (float)((rng >> 8) & 0xffff) / 32768.0f - 1.0f;
      }
    } else {
      memset(data, 0, (size_t)bytes);
    }
    DLTensor* t = &wfb_tensors[i];
    t->data = data;
    t->device.device_type = kDLCPU;
    t->device.device_id = 0;
    t->ndim = ndim;
    t->dtype = dt;
    t->shape = wfb_shapes[i];
    t->strides = NULL;
    t->byte_offset = 0;
    wfb_args[i].type_index = kTVMFFIDLTensorPtr;
    wfb_args[i].zero_padding = 0;
    wfb_args[i].v_ptr = t;
  }
  wfb_nargs = n;
  wfb_fn = (wf_kernel_fn)wf_lookup("main");
  if (wfb_fn == NULL) {
    wf_set_error("bench: kernel 'main' is not registered (%u symbols): was _initialize called?",
                 wf_num_symbols);
    return -1;
  }
  return 0;
}

int32_t WF_EXPORT(wfb_run)(int32_t iters) {
  for (int32_t i = 0; i < iters; ++i) {
    TVMFFIAny result;
    memset(&result, 0, sizeof(result));
    int rc = wfb_fn(NULL, wfb_args, wfb_nargs, &result);
    if (rc != 0) return rc;
  }
  return 0;
}
