/* wasmforge_runtime.c: the C runtime linked into every wasmforge module.
 *
 * One translation unit (one clang argv to hash). It provides:
 *   - the tvm-ffi symbols TVM's wasm32 kernels import (wasmforge_ffi.c, included);
 *   - the generic interpreter for the static plan the executor stage generates;
 *   - the exported C ABI documented in wasmforge.h.
 * Errors go to a fixed static buffer: no heap is needed to report a failure.
 */
#include "wasmforge_ffi.c"

#include "wasmforge.h"
#include "wasmforge_plan.h"

/* ------------------------------------------------------ the plan interpreter */

typedef int (*wf_kernel_fn)(void* self, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result);

static int wf_ready;

static uint8_t* wf_region_base(const wf_plan* p, const wf_tensor* t) {
  switch (t->region) {
    case WF_REGION_ARENA: return p->arena;
    case WF_REGION_WEIGHTS: return (uint8_t*)p->weights;
    case WF_REGION_INPUT: return p->inputs[t->index].data;
    case WF_REGION_OUTPUT: return p->outputs[t->index].data;
    default: return NULL;
  }
}

static int wf_prepare(const wf_plan* p) {
  if (wf_registry_overflow) {
    wf_set_error("system-lib registry full: more than %d symbols registered", WF_MAX_SYMBOLS);
    return -1;
  }
  for (uint32_t k = 0; k < p->num_kernels; ++k) {
    p->kernel_ptrs[k] = wf_lookup(p->kernel_names[k]);
    if (p->kernel_ptrs[k] == NULL) {
      wf_set_error(
          "kernel '%s' is not registered (%u symbols registered): was _initialize called, "
          "and was the kernel object linked?",
          p->kernel_names[k], wf_num_symbols);
      return -1;
    }
  }
  for (uint32_t i = 0; i < p->num_tensors; ++i) {
    const wf_tensor* t = &p->tensors[i];
    DLTensor* d = &p->dltensors[i];
    d->data = wf_region_base(p, t) + t->offset;
    d->device.device_type = kDLCPU;
    d->device.device_id = 0;
    d->ndim = t->ndim;
    d->dtype = t->dtype;
    d->shape = (int64_t*)&p->shapes[t->shape];
    d->strides = NULL;
    d->byte_offset = 0;
  }
  wf_ready = 1;
  return 0;
}

/* Call c of the plan: its kernel on its arguments. */
static int wf_call_kernel(const wf_plan* p, uint32_t c, TVMFFIAny* argv) {
  const wf_call* call = &p->calls[c];
  for (uint32_t a = 0; a < call->num_args; ++a) {
    const wf_arg* arg = &p->args[call->first_arg + a];
    TVMFFIAny* v = &argv[a];
    v->zero_padding = 0;
    if (arg->kind == WF_ARG_TENSOR) {
      v->type_index = kTVMFFIDLTensorPtr;
      v->v_ptr = &p->dltensors[arg->tensor];
    } else if (arg->kind == WF_ARG_INT) {
      v->type_index = kTVMFFIInt;
      v->v_int64 = arg->i;
    } else {
      v->type_index = kTVMFFIFloat;
      v->v_float64 = arg->f;
    }
  }
  TVMFFIAny result;
  memset(&result, 0, sizeof(result));
  result.type_index = kTVMFFINone;
  wf_error[0] = '\0';
  int rc = ((wf_kernel_fn)p->kernel_ptrs[call->kernel])(NULL, argv, (int32_t)call->num_args, &result);
  if (rc != 0) {
    char detail[sizeof(wf_error)];
    memcpy(detail, wf_error, sizeof(detail));
    wf_set_error("kernel '%s' (call %u of %u) failed: %s", p->kernel_names[call->kernel], c + 1,
                 p->num_calls, detail[0] ? detail : "no message");
  }
  return rc;
}

static int wf_once_done;   /* the once-calls have run: their results stay */

int32_t WF_EXPORT(wasmforge_run)(void) {
  const wf_plan* p = &wasmforge_plan;
  if (!wf_ready && wf_prepare(p) != 0) return -1;
  TVMFFIAny argv[p->max_call_args ? p->max_call_args : 1];
  for (uint32_t c = wf_once_done ? p->num_once_calls : 0; c < p->num_calls; ++c) {
    int rc = wf_call_kernel(p, c, argv);
    if (rc != 0) return rc;
    if (c + 1 == p->num_once_calls) wf_once_done = 1;
  }
  for (uint32_t o = 0; o < p->num_outputs; ++o) {
    const wf_io* out = &p->outputs[o];
    const DLTensor* src = &p->dltensors[out->tensor];
    if ((uint8_t*)src->data != out->data) memcpy(out->data, src->data, out->nbytes);
  }
  return 0;
}

/* ------------------------------------------------------ stepping, for profilers */

uint32_t WF_EXPORT(wasmforge_num_calls)(void) { return wasmforge_plan.num_calls; }
uint32_t WF_EXPORT(wasmforge_num_once_calls)(void) { return wasmforge_plan.num_once_calls; }

const char* WF_EXPORT(wasmforge_call_kernel)(uint32_t c) {
  const wf_plan* p = &wasmforge_plan;
  return c < p->num_calls ? p->kernel_names[p->calls[c].kernel] : NULL;
}

int32_t WF_EXPORT(wasmforge_run_call)(uint32_t c) {
  const wf_plan* p = &wasmforge_plan;
  if (!wf_ready && wf_prepare(p) != 0) return -1;
  if (c >= p->num_calls) {
    wf_set_error("call %u out of range: the plan has %u calls", c, p->num_calls);
    return -1;
  }
  TVMFFIAny argv[p->max_call_args ? p->max_call_args : 1];
  return wf_call_kernel(p, c, argv);
}

/* ------------------------------------------------------ I/O addresses */

uint32_t WF_EXPORT(wasmforge_num_inputs)(void) { return wasmforge_plan.num_inputs; }
uint32_t WF_EXPORT(wasmforge_num_outputs)(void) { return wasmforge_plan.num_outputs; }

void* WF_EXPORT(wasmforge_input_ptr)(uint32_t i) {
  return i < wasmforge_plan.num_inputs ? wasmforge_plan.inputs[i].data : NULL;
}
uint32_t WF_EXPORT(wasmforge_input_size)(uint32_t i) {
  return i < wasmforge_plan.num_inputs ? wasmforge_plan.inputs[i].nbytes : 0;
}
void* WF_EXPORT(wasmforge_output_ptr)(uint32_t i) {
  return i < wasmforge_plan.num_outputs ? wasmforge_plan.outputs[i].data : NULL;
}
uint32_t WF_EXPORT(wasmforge_output_size)(uint32_t i) {
  return i < wasmforge_plan.num_outputs ? wasmforge_plan.outputs[i].nbytes : 0;
}
