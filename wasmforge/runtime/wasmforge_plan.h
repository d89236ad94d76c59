/* wasmforge_plan.h: the static execution plan shared by the generated executor and the runtime.
 *
 * The executor stage turns a model's lowered Relax `main` into these tables: every tensor
 * lives at a fixed offset in one region (the arena, the weights, an input or an output
 * buffer), and running the model is walking `calls` in order. Nothing is allocated while
 * running; kernels may still ask the runtime for scratch workspace.
 */
#ifndef WASMFORGE_PLAN_H_
#define WASMFORGE_PLAN_H_

#include <stdint.h>
#include <dlpack/dlpack.h>

enum { WF_REGION_ARENA = 0, WF_REGION_WEIGHTS = 1, WF_REGION_INPUT = 2, WF_REGION_OUTPUT = 3 };
enum { WF_ARG_TENSOR = 0, WF_ARG_INT = 1, WF_ARG_FLOAT = 2 };

typedef struct {
  uint8_t region;      /* WF_REGION_* */
  uint32_t index;      /* input/output number for WF_REGION_INPUT/OUTPUT, else 0 */
  uint32_t offset;     /* byte offset inside the region */
  int32_t ndim;
  DLDataType dtype;
  uint32_t shape;      /* index of the first extent in wf_plan.shapes */
} wf_tensor;

typedef struct {
  uint8_t kind;        /* WF_ARG_* */
  uint32_t tensor;     /* WF_ARG_TENSOR: index in wf_plan.tensors */
  int64_t i;           /* WF_ARG_INT */
  double f;            /* WF_ARG_FLOAT */
} wf_arg;

typedef struct {
  uint32_t kernel;     /* index in wf_plan.kernel_names */
  uint32_t first_arg;  /* index of the first argument in wf_plan.args */
  uint32_t num_args;
} wf_call;

typedef struct {
  const char* name;
  uint8_t* data;       /* a static buffer of `nbytes`, 64-byte aligned */
  uint32_t nbytes;
  uint32_t tensor;     /* the tensor that holds the value inside the plan */
} wf_io;

typedef struct {
  uint32_t num_kernels;
  const char* const* kernel_names;
  void** kernel_ptrs;            /* resolved from the system-lib registry on first run */
  uint32_t num_tensors;
  const wf_tensor* tensors;
  DLTensor* dltensors;           /* filled once from `tensors` */
  const int64_t* shapes;
  uint32_t num_args;
  const wf_arg* args;
  uint32_t num_calls;
  const wf_call* calls;
  uint32_t max_call_args;
  uint32_t num_once_calls;       /* calls[0..num_once_calls) compute constants: the first run only */
  uint32_t num_inputs;
  const wf_io* inputs;
  uint32_t num_outputs;
  const wf_io* outputs;          /* after the calls, each output's tensor is copied here */
  uint8_t* arena;
  uint32_t arena_bytes;
  const uint8_t* weights;
  uint32_t weights_bytes;
} wf_plan;

/* Provided by the generated executor (executor.c). */
extern const wf_plan wasmforge_plan;

#endif /* WASMFORGE_PLAN_H_ */
