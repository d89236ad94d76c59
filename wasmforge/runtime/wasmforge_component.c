/* wasmforge_component.c: the model as the WIT interface wasmforge:model/inference
 * (wasmforge/component/wit/model.wit), in the component model's canonical ABI.
 *
 * Linked into the portable module only (not the threads variant, not lib<model>.a), so the
 * validated <model>.wasm is itself the core module that `wasm-tools component new` wraps.
 * The exports are the canonical ABI's core functions for wasm32:
 *
 *   wasmforge:model/inference@0.1.0#metadata () -> i32        a model-info, stored
 *   wasmforge:model/inference@0.1.0#infer (i32 ptr, i32 len) -> i32
 *                                        list<tensor> in, a result<list<tensor>, string> out
 *   cabi_post_wasmforge:model/inference@0.1.0#infer (i32)   after the host has read it
 *   cabi_realloc (ptr, old size, align, new size) -> ptr    where the host lowers arguments
 *
 * Layouts (canonical ABI, wasm32): string and list are {ptr, len}; the datatype enum is a u8;
 *   tensor-info {name @0, datatype @8, shape @12}          20 bytes, align 4
 *   model-info  {name @0, inputs @8, outputs @16}          24 bytes, align 4
 *   tensor      {name @0, datatype @8, shape @12, data @20} 28 bytes, align 4
 *   result      {discriminant u8 @0, payload {ptr, len} @4} 12 bytes, align 4
 * The arguments' memory (allocated by the host through cabi_realloc) belongs to the callee:
 * infer frees it. What infer and metadata return lives in static or once-allocated memory,
 * so the post-return function has nothing to free; an output's data is the module's own
 * output buffer, read by the host in place.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wasmforge.h"
#include "wasmforge_plan.h"

#ifndef WF_MODEL_NAME
#define WF_MODEL_NAME "model"
#endif

#define WF_IFACE "wasmforge:model/inference@0.1.0"
#define WF_CABI(name) __attribute__((export_name(name)))

/* The WIT enum `datatype`, in its declaration order. */
enum {
  WF_DT_BOOL, WF_DT_UINT8, WF_DT_UINT16, WF_DT_UINT32, WF_DT_UINT64, WF_DT_INT8, WF_DT_INT16,
  WF_DT_INT32, WF_DT_INT64, WF_DT_FP16, WF_DT_FP32, WF_DT_FP64, WF_DT_COUNT, WF_DT_NONE = 255
};
static const char* const wf_dt_names[WF_DT_COUNT] = {
    "bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "fp16",
    "fp32", "fp64"};

typedef struct { const char* ptr; uint32_t len; } wf_str;
typedef struct { const void* ptr; uint32_t len; } wf_list;

typedef struct {
  wf_str name;
  uint8_t datatype;
  wf_list shape;   /* list<u32> */
} wf_tensor_info;

typedef struct {
  wf_str name;
  wf_list inputs;  /* list<tensor-info> */
  wf_list outputs;
} wf_model_info;

typedef struct {
  wf_str name;
  uint8_t datatype;
  wf_list shape;   /* list<u32> */
  wf_list data;    /* list<u8> */
} wf_cabi_tensor;

typedef struct {
  uint8_t is_err;
  wf_list payload; /* ok: list<tensor>; err: string */
} wf_result;

_Static_assert(sizeof(wf_tensor_info) == 20 && _Alignof(wf_tensor_info) == 4, "tensor-info layout");
_Static_assert(sizeof(wf_model_info) == 24, "model-info layout");
_Static_assert(sizeof(wf_cabi_tensor) == 28 && _Alignof(wf_cabi_tensor) == 4, "tensor layout");
_Static_assert(sizeof(wf_result) == 12, "result layout");

void* WF_CABI("cabi_realloc") cabi_realloc(void* ptr, size_t old_size, size_t align, size_t new_size) {
  (void)old_size;
  if (new_size == 0) return (void*)align;   /* an empty list: any aligned, non-null address */
  void* out = ptr && old_size ? realloc(ptr, new_size) : malloc(new_size);
  if (out == NULL) __builtin_trap();        /* the host cannot be told otherwise */
  (void)align;                              /* malloc aligns to 16, the largest any type asks */
  return out;
}

static uint8_t wf_datatype(DLDataType t) {
  if (t.lanes != 1) return WF_DT_NONE;
  switch (t.code) {
    case kDLBool: return t.bits == 8 ? WF_DT_BOOL : WF_DT_NONE;
    case kDLUInt:
      return t.bits == 8 ? WF_DT_UINT8 : t.bits == 16 ? WF_DT_UINT16 : t.bits == 32 ? WF_DT_UINT32
           : t.bits == 64 ? WF_DT_UINT64 : WF_DT_NONE;
    case kDLInt:
      return t.bits == 8 ? WF_DT_INT8 : t.bits == 16 ? WF_DT_INT16 : t.bits == 32 ? WF_DT_INT32
           : t.bits == 64 ? WF_DT_INT64 : WF_DT_NONE;
    case kDLFloat:
      return t.bits == 16 ? WF_DT_FP16 : t.bits == 32 ? WF_DT_FP32 : t.bits == 64 ? WF_DT_FP64 : WF_DT_NONE;
    default: return WF_DT_NONE;
  }
}

static wf_str wf_cstr(const char* s) { return (wf_str){s, (uint32_t)strlen(s)}; }

/* ------------------------------------------------------ the I/O tables, built once */

static wf_tensor_info* wf_infos;   /* inputs, then outputs */
static uint32_t* wf_shapes;        /* every extent of every input and output, as u32 */
static wf_cabi_tensor* wf_out;     /* infer's ok payload: one tensor per output */

static const wf_tensor* wf_io_tensor(const wf_io* io) { return &wasmforge_plan.tensors[io->tensor]; }

static void wf_tables(void) {
  if (wf_infos) return;
  const wf_plan* p = &wasmforge_plan;
  uint32_t n = p->num_inputs + p->num_outputs, extents = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const wf_io* io = i < p->num_inputs ? &p->inputs[i] : &p->outputs[i - p->num_inputs];
    extents += (uint32_t)wf_io_tensor(io)->ndim;
  }
  wf_infos = calloc(n ? n : 1, sizeof(*wf_infos));
  wf_shapes = calloc(extents ? extents : 1, sizeof(*wf_shapes));
  wf_out = calloc(p->num_outputs ? p->num_outputs : 1, sizeof(*wf_out));
  if (!wf_infos || !wf_shapes || !wf_out) __builtin_trap();
  uint32_t* next = wf_shapes;
  for (uint32_t i = 0; i < n; ++i) {
    const wf_io* io = i < p->num_inputs ? &p->inputs[i] : &p->outputs[i - p->num_inputs];
    const wf_tensor* t = wf_io_tensor(io);
    for (int32_t d = 0; d < t->ndim; ++d) next[d] = (uint32_t)p->shapes[t->shape + d];
    wf_infos[i] = (wf_tensor_info){wf_cstr(io->name), wf_datatype(t->dtype), {next, (uint32_t)t->ndim}};
    next += t->ndim;
  }
  for (uint32_t o = 0; o < p->num_outputs; ++o) {
    const wf_tensor_info* info = &wf_infos[p->num_inputs + o];
    wf_out[o] = (wf_cabi_tensor){info->name, info->datatype, info->shape,
                                 {p->outputs[o].data, p->outputs[o].nbytes}};
  }
}

void* WF_CABI(WF_IFACE "#metadata") wf_cabi_metadata(void) {
  static wf_model_info info;
  wf_tables();
  const wf_plan* p = &wasmforge_plan;
  info = (wf_model_info){wf_cstr(WF_MODEL_NAME), {wf_infos, p->num_inputs},
                         {wf_infos + p->num_inputs, p->num_outputs}};
  return &info;
}

/* ------------------------------------------------------ infer */

static char wf_message[512];
static wf_result wf_ret;

static int wf_str_eq(wf_str a, const char* b) { return strlen(b) == a.len && memcmp(a.ptr, b, a.len) == 0; }

/* A message naming the problem, into wf_message; returns the error result. */
static wf_result* wf_fail(const char* what, wf_str name, const char* detail) {
  size_t n = 0, cap = sizeof(wf_message) - 1;
#define WF_APPEND(s, len) do { size_t l_ = (len); if (l_ > cap - n) l_ = cap - n; memcpy(wf_message + n, (s), l_); n += l_; } while (0)
  WF_APPEND(what, strlen(what));
  if (name.ptr) { WF_APPEND(" '", 2); WF_APPEND(name.ptr, name.len > 64 ? 64 : name.len); WF_APPEND("'", 1); }
  if (detail) WF_APPEND(detail, strlen(detail));
#undef WF_APPEND
  wf_message[n] = '\0';
  wf_ret = (wf_result){1, {wf_message, (uint32_t)n}};
  return &wf_ret;
}

static void wf_format_shape(char* buf, size_t cap, const uint32_t* dims, uint32_t n) {
  size_t k = 0;
  buf[k++] = '[';
  for (uint32_t d = 0; d < n && k + 12 < cap; ++d) {
    char digits[11];
    int nd = 0;
    uint32_t v = dims[d];
    do { digits[nd++] = (char)('0' + v % 10); v /= 10; } while (v);
    if (d) { buf[k++] = ','; buf[k++] = ' '; }
    while (nd) buf[k++] = digits[--nd];
  }
  buf[k++] = ']';
  buf[k] = '\0';
}

/* Checks one given tensor against input i; NULL when it fits. */
static wf_result* wf_check(const wf_cabi_tensor* t, uint32_t i) {
  const wf_tensor_info* info = &wf_infos[i];
  char detail[192], want[80], got[80];
  if (t->datatype != info->datatype) {
    const char* g = t->datatype < WF_DT_COUNT ? wf_dt_names[t->datatype] : "?";
    const char* w = info->datatype < WF_DT_COUNT ? wf_dt_names[info->datatype] : "?";
    strcpy(detail, ": datatype ");
    strcat(detail, g);
    strcat(detail, ", the model takes ");
    strcat(detail, w);
    return wf_fail("input", t->name, detail);
  }
  int same = t->shape.len == info->shape.len;
  for (uint32_t d = 0; same && d < t->shape.len; ++d)
    same = ((const uint32_t*)t->shape.ptr)[d] == ((const uint32_t*)info->shape.ptr)[d];
  if (!same) {
    wf_format_shape(got, sizeof(got), t->shape.ptr, t->shape.len > 8 ? 8 : t->shape.len);
    wf_format_shape(want, sizeof(want), info->shape.ptr, info->shape.len);
    strcpy(detail, ": shape ");
    strcat(detail, got);
    strcat(detail, ", the model takes ");
    strcat(detail, want);
    return wf_fail("input", t->name, detail);
  }
  if (t->data.len != wasmforge_plan.inputs[i].nbytes)
    return wf_fail("input", t->name, ": its data's length does not match its shape and datatype");
  return NULL;
}

static void wf_free_args(wf_cabi_tensor* ts, uint32_t n) {
  for (uint32_t k = 0; k < n; ++k) {
    if (ts[k].name.len) free((void*)ts[k].name.ptr);
    if (ts[k].shape.len) free((void*)ts[k].shape.ptr);
    if (ts[k].data.len) free((void*)ts[k].data.ptr);
  }
  if (n) free(ts);
}

static wf_result* wf_infer(const wf_cabi_tensor* ts, uint32_t n) {
  const wf_plan* p = &wasmforge_plan;
  uint8_t given[p->num_inputs ? p->num_inputs : 1];
  memset(given, 0, sizeof(given));
  for (uint32_t k = 0; k < n; ++k) {
    uint32_t i = 0;
    while (i < p->num_inputs && !wf_str_eq(ts[k].name, p->inputs[i].name)) ++i;
    if (i == p->num_inputs) return wf_fail("no input named", ts[k].name, ": see metadata() for the model's inputs");
    if (given[i]) return wf_fail("input", ts[k].name, " is given twice");
    wf_result* bad = wf_check(&ts[k], i);
    if (bad) return bad;
    given[i] = 1;
  }
  for (uint32_t i = 0; i < p->num_inputs; ++i)
    if (!given[i]) return wf_fail("missing input", wf_cstr(p->inputs[i].name), NULL);
  for (uint32_t k = 0; k < n; ++k) {
    uint32_t i = 0;
    while (!wf_str_eq(ts[k].name, p->inputs[i].name)) ++i;
    memcpy(p->inputs[i].data, ts[k].data.ptr, ts[k].data.len);
  }
  if (wasmforge_run() != 0) return wf_fail("the model failed: ", (wf_str){0, 0}, wasmforge_last_error());
  wf_ret = (wf_result){0, {wf_out, p->num_outputs}};
  return &wf_ret;
}

void* WF_CABI(WF_IFACE "#infer") wf_cabi_infer(wf_cabi_tensor* ts, uint32_t n) {
  wf_tables();
  wf_result* r = wf_infer(ts, n);
  wf_free_args(ts, n);
  return r;
}

void WF_CABI("cabi_post_" WF_IFACE "#infer") wf_cabi_post_infer(void* ret) { (void)ret; }
