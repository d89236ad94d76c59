/* wasmforge_ffi.c: the tvm-ffi services TVM's wasm32 kernels import.
 *
 * The system-lib registry (TVMFFIEnvModRegisterSystemLibSymbol) that the kernel object's
 * constructor fills, error reporting into a fixed static buffer (no heap needed to report
 * a failure), workspace allocation, and the parallel launch. Not a translation unit of its
 * own: wasmforge_runtime.c (the model module) and wasmforge_measure.c (the tuning measurement
 * module) each include it, so each is built by one clang argv.
 *
 * Nothing here calls libc's malloc or printf: wasi-libc as Debian ships it is compiled
 * without atomics, and wasm-ld refuses to put its malloc (or errno, which printf touches)
 * into a shared-memory module. Only the string functions are used. With `-matomics
 * -mbulk-memory` the same file builds the threads variant (see the thread pool below).
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include <tvm/ffi/c_api.h>

#define WF_EXPORT(name) __attribute__((export_name(#name))) name

/* ---------------------------------------------------------------- errors */

static char wf_error[1024];

/* A small vsnprintf: %s %d %u %llu %% are all the runtime's messages use. */
static size_t wf_vformat(char* buf, size_t cap, const char* fmt, va_list ap) {
  size_t n = 0;
#define WF_PUT(c) do { if (n + 1 < cap) buf[n] = (c); ++n; } while (0)
  for (const char* f = fmt; *f; ++f) {
    if (*f != '%') { WF_PUT(*f); continue; }
    ++f;
    char digits[24];
    int nd = 0, neg = 0;
    unsigned long long v = 0;
    if (*f == 's') {
      const char* s = va_arg(ap, const char*);
      for (s = s ? s : "(null)"; *s; ++s) WF_PUT(*s);
      continue;
    } else if (*f == 'd') {
      int x = va_arg(ap, int);
      neg = x < 0;
      v = neg ? (unsigned long long)(-(long long)x) : (unsigned long long)x;
    } else if (*f == 'u') {
      v = va_arg(ap, unsigned);
    } else if (f[0] == 'l' && f[1] == 'l' && f[2] == 'u') {
      v = va_arg(ap, unsigned long long);
      f += 2;
    } else {
      WF_PUT('%');
      if (*f == '\0') break;
      if (*f != '%') WF_PUT(*f);
      continue;
    }
    do { digits[nd++] = (char)('0' + v % 10); v /= 10; } while (v);
    if (neg) WF_PUT('-');
    while (nd) WF_PUT(digits[--nd]);
  }
#undef WF_PUT
  if (cap) buf[n < cap ? n : cap - 1] = '\0';
  return n;
}

static void wf_set_error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  wf_vformat(wf_error, sizeof(wf_error), fmt, ap);
  va_end(ap);
}

/* Kernels report failures (shape checks, workspace exhaustion) through this call, then
 * return non-zero; the message parts are static strings inside the kernel object. */
void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t num_parts) {
  size_t n = strlen(kind ? kind : "Error");
  if (n > sizeof(wf_error) - 3) n = sizeof(wf_error) - 3;
  memcpy(wf_error, kind ? kind : "Error", n);
  wf_error[n++] = ':';
  wf_error[n++] = ' ';
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

/* ------------------------------------------------------ memory */

/* A spin lock. Built without atomics (the single-threaded variant) the atomic operations
 * become plain loads and stores, which is all one thread needs. */
static void wf_lock(atomic_int* l) {
  while (atomic_exchange_explicit(l, 1, memory_order_acquire)) {
  }
}
static void wf_unlock(atomic_int* l) { atomic_store_explicit(l, 0, memory_order_release); }

/* Kernels ask for workspace (tiles, packed copies) on every call and free it in reverse
 * order, so blocks are kept per power-of-two size class and reused: after the first
 * inference nothing grows. New blocks come from memory.grow at the end of linear memory,
 * never from [__heap_base, ...), so a host program's own malloc (lib<model>.a linked into
 * an application) is not disturbed. */
#define WF_BLOCK_HEADER 64 /* keeps the payload 64-byte aligned */
#define WF_NUM_CLASSES 32
typedef struct wf_block {
  struct wf_block* next;
  uint32_t size_class;
} wf_block;
static wf_block* wf_free_blocks[WF_NUM_CLASSES];
static atomic_int wf_heap_lock;

static void* wf_alloc(uint64_t nbytes) {
  uint32_t c = 6; /* 64 bytes at least */
  while (c < WF_NUM_CLASSES && ((uint64_t)1 << c) < nbytes) ++c;
  if (c >= 31) return NULL; /* 2 GiB or more: cannot exist in a wasm32 memory */
  wf_lock(&wf_heap_lock);
  wf_block* b = wf_free_blocks[c];
  if (b != NULL) {
    wf_free_blocks[c] = b->next;
  } else {
    uint32_t bytes = ((uint32_t)1 << c) + WF_BLOCK_HEADER;
    uint32_t pages = (bytes + 65535u) >> 16;
    size_t old = __builtin_wasm_memory_grow(0, pages);
    if (old != (size_t)-1) {
      b = (wf_block*)(old << 16);
      b->size_class = c;
    }
  }
  wf_unlock(&wf_heap_lock);
  return b ? (uint8_t*)b + WF_BLOCK_HEADER : NULL;
}

static void wf_release(void* p) {
  if (p == NULL) return;
  wf_block* b = (wf_block*)((uint8_t*)p - WF_BLOCK_HEADER);
  wf_lock(&wf_heap_lock);
  b->next = wf_free_blocks[b->size_class];
  wf_free_blocks[b->size_class] = b;
  wf_unlock(&wf_heap_lock);
}

/* ------------------------------------------------------ backend services */

void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                               int dtype_bits_hint) {
  (void)device_type, (void)device_id, (void)dtype_code_hint, (void)dtype_bits_hint;
  void* p = wf_alloc(nbytes);
  if (p == NULL) wf_set_error("out of memory: workspace of %llu bytes", (unsigned long long)nbytes);
  return p;
}

int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr) {
  (void)device_type, (void)device_id;
  wf_release(ptr);
  return 0;
}

/* ------------------------------------------------------ parallel launch */

typedef struct {
  void* sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);

#ifndef __wasm_atomics__

/* The portable (single-threaded) variant: the job runs inline as task 0 of 1. */
int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  (void)num_task;
  TVMParallelGroupEnv env = {NULL, 1};
  return flambda(0, &env, cdata);
}

int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id, (void)penv;
  return 0;
}

#else /* the threads variant */

/* A thread pool over shared linear memory. The host owns the threads: for each worker it
 * instantiates this same module again, importing the same shared memory, and calls the
 * export wasmforge_worker(id, stack_top) on its own OS thread. That call sets the
 * instance's __stack_pointer to a stack of its own (wasm globals are per instance; linear
 * memory is shared) and serves jobs until wasmforge_threads_stop(). Workers never call
 * _initialize: the constructors ran once, in the first instance, and the kernel registry
 * they filled lives in the shared memory. wasm-ld's __wasm_init_memory (the start
 * function) copies the data segments only once, whichever instance starts first.
 *
 * A job is published by bumping `generation`; workers wait on it with
 * memory.atomic.wait32 after a spin of WF_SPIN loads (200,000: some 50 us in wasmtime). A
 * model of many small kernels (DenseNet-121 launches about 1,000 parallel loops per
 * inference) leaves gaps between them longer than a short spin, and a worker woken from
 * wait32 for each one cost more than the loop saved: 20,000 loads made DenseNet-121 1.22x
 * slower on 2 threads, ShuffleNet 1.36x, ResNet-50 1.04x (docs/threads.md). An idle worker
 * still sleeps within a fraction of a millisecond, so it does not hold a core that another
 * model needs. The parallel loop is cut into
 * WF_TASKS_PER_THREAD tasks per thread (default 1), and every thread, the launching one
 * included, takes the next task from an atomic counter until none is left, then counts
 * `pending` down; the launching thread waits for `pending` to reach 0. More tasks per thread
 * (-DWF_TASKS_PER_THREAD=4) would keep both cores busy when one runs slower (a shared host),
 * but each task costs a loop prologue and an atomic: on ResNet-50's threads variant, one
 * task per thread ran 1.5-5% faster in each of five paired runs (docs/perf-journal.md),
 * so that is the default. A kernel object that uses
 * TVMBackendParallelBarrier needs all of a launch's tasks running at once, so the link stage
 * then defines WF_ONE_TASK_PER_THREAD. */
#define WF_MAX_THREADS 64
#define WF_WORKER_STACK (1u << 20)
#ifndef WF_SPIN
#define WF_SPIN 200000
#endif
#ifdef WF_ONE_TASK_PER_THREAD
#define WF_TASKS_PER_THREAD 1
#elif !defined(WF_TASKS_PER_THREAD)
#define WF_TASKS_PER_THREAD 1
#endif

static struct {
  atomic_uint generation;
  atomic_uint pending;
  atomic_int rc;
  atomic_int stop;
  atomic_int busy;
  atomic_uint attached;
  atomic_uint barrier_count;
  atomic_uint barrier_generation;
  atomic_uint worker_tasks; /* parallel tasks the workers ran: proof the threads did work */
  atomic_int dead;          /* a worker trapped: the pool, and this instance, are done */
  atomic_int next_task;
  FTVMParallelLambda fn;
  void* cdata;
  int32_t num_task;
  uint32_t max_workers;
  uint8_t* stacks;
} wf_pool;

static void wf_wait(atomic_uint* addr, uint32_t seen) {
  for (int i = 0; i < WF_SPIN; ++i)
    if (atomic_load_explicit(addr, memory_order_acquire) != seen) return;
  __builtin_wasm_memory_atomic_wait32((int*)addr, (int)seen, -1);
}

static void wf_wake(atomic_uint* addr) { __builtin_wasm_memory_atomic_notify((int*)addr, WF_MAX_THREADS); }

/* Host, first instance, before starting workers: room for `n` workers' stacks. */
int32_t WF_EXPORT(wasmforge_threads_prepare)(uint32_t n) {
  if (n > WF_MAX_THREADS - 1) {
    wf_set_error("at most %d worker threads, asked for %u", WF_MAX_THREADS - 1, n);
    return -1;
  }
  if (n > wf_pool.max_workers) {
    uint8_t* stacks = wf_alloc((uint64_t)n * WF_WORKER_STACK);
    if (stacks == NULL) {
      wf_set_error("out of memory: %u worker stacks", n);
      return -1;
    }
    wf_pool.stacks = stacks; /* a smaller earlier block stays allocated: rare and small */
    wf_pool.max_workers = n;
  }
  atomic_store(&wf_pool.stop, 0);
  return 0;
}

/* The initial stack pointer of worker `id` (1-based); 0 when it has no stack. */
uint32_t WF_EXPORT(wasmforge_worker_stack)(uint32_t id) {
  if (id == 0 || id > wf_pool.max_workers) return 0;
  return (uint32_t)(uintptr_t)(wf_pool.stacks + (size_t)id * WF_WORKER_STACK);
}

uint32_t WF_EXPORT(wasmforge_threads_attached)(void) { return atomic_load(&wf_pool.attached); }

uint32_t WF_EXPORT(wasmforge_threads_tasks)(void) { return atomic_load(&wf_pool.worker_tasks); }

/* Ask every worker to return from wasmforge_worker. */
void WF_EXPORT(wasmforge_threads_stop)(void) {
  atomic_store(&wf_pool.stop, 1);
  atomic_fetch_add(&wf_pool.generation, 1);
  wf_wake(&wf_pool.generation);
}

/* Host, from a worker's thread after its wasmforge_worker call trapped (a kernel bug, a
 * stack overflow): that worker will never count `pending` down, so the launching thread
 * must stop waiting for it. `pending` and the barrier generation change value, so a waiter
 * that has not yet gone to sleep does not sleep either. */
#define WF_DEAD_BIAS (1u << 24)
void WF_EXPORT(wasmforge_threads_worker_died)(void) {
  atomic_store(&wf_pool.dead, 1);
  atomic_fetch_add(&wf_pool.pending, WF_DEAD_BIAS);
  wf_wake(&wf_pool.pending);
  atomic_fetch_add(&wf_pool.barrier_generation, 1);
  wf_wake(&wf_pool.barrier_generation);
}

/* Run tasks of the current job until none is left; returns how many this thread ran. */
static uint32_t wf_run_tasks(void) {
  uint32_t ran = 0;
  TVMParallelGroupEnv env = {&wf_pool, wf_pool.num_task};
  for (;;) {
    int32_t t = atomic_fetch_add(&wf_pool.next_task, 1);
    if (t >= wf_pool.num_task) return ran;
    int rc = wf_pool.fn(t, &env, wf_pool.cdata);
    if (rc != 0) atomic_store(&wf_pool.rc, rc);
    ++ran;
  }
}

__attribute__((used)) void wf_worker_main(uint32_t id) {
  (void)id;
  uint32_t seen = atomic_load(&wf_pool.generation);
  atomic_fetch_add(&wf_pool.attached, 1);
  for (;;) {
    uint32_t g;
    while ((g = atomic_load_explicit(&wf_pool.generation, memory_order_acquire)) == seen) {
      if (atomic_load(&wf_pool.stop)) break;
      wf_wait(&wf_pool.generation, seen);
    }
    if (atomic_load(&wf_pool.stop)) break;
    seen = g;
    atomic_fetch_add_explicit(&wf_pool.worker_tasks, wf_run_tasks(), memory_order_relaxed);
    if (atomic_fetch_sub(&wf_pool.pending, 1) == 1) wf_wake(&wf_pool.pending);
  }
  atomic_fetch_sub(&wf_pool.attached, 1);
}

/* wasmforge_worker(id, stack_top): the entry point for a worker thread. Written in
 * assembly because C code would touch the stack (through __stack_pointer) before it could
 * move it. */
__asm__(
    ".globaltype __stack_pointer, i32\n"
    ".functype wf_worker_main (i32) -> ()\n"
    ".section .text.wasmforge_worker,\"\",@\n"
    ".globl wasmforge_worker\n"
    ".export_name wasmforge_worker, wasmforge_worker\n"
    ".type wasmforge_worker,@function\n"
    "wasmforge_worker:\n"
    "  .functype wasmforge_worker (i32, i32) -> ()\n"
    "  local.get 1\n"
    "  global.set __stack_pointer\n"
    "  local.get 0\n"
    "  call wf_worker_main\n"
    "  end_function\n");

static int wf_pool_dead(void) {
  wf_set_error("a worker thread trapped during a parallel task; this instance of the model cannot run again");
  return -1;
}

int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  if (atomic_load(&wf_pool.dead)) return wf_pool_dead();
  uint32_t workers = atomic_load(&wf_pool.attached);
  /* no workers, or a launch from inside a parallel task: run it here, as one task */
  if (workers == 0 || atomic_exchange(&wf_pool.busy, 1)) {
    TVMParallelGroupEnv env = {NULL, 1};
    return flambda(0, &env, cdata);
  }
  /* TVM's codegen asks for 0 tasks, "as many as you like"; honour an explicit count */
  int32_t threads = (int32_t)workers + 1;
  int32_t n = num_task > 0 ? num_task : threads * WF_TASKS_PER_THREAD;
#ifdef WF_ONE_TASK_PER_THREAD
  if (n > threads) n = threads; /* a barrier needs every task of the launch running */
#endif
  wf_pool.num_task = n;
  wf_pool.fn = flambda;
  wf_pool.cdata = cdata;
  atomic_store(&wf_pool.rc, 0);
  atomic_store(&wf_pool.next_task, 0);
  atomic_store(&wf_pool.pending, workers);
  atomic_fetch_add_explicit(&wf_pool.generation, 1, memory_order_release);
  wf_wake(&wf_pool.generation);
  wf_run_tasks();
  uint32_t left;
  while ((left = atomic_load_explicit(&wf_pool.pending, memory_order_acquire)) != 0) {
    if (atomic_load(&wf_pool.dead)) return wf_pool_dead(); /* busy stays set: no more launches */
    wf_wait(&wf_pool.pending, left);
  }
  atomic_store(&wf_pool.busy, 0);
  return atomic_load(&wf_pool.rc);
}

int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id;
  if (penv->num_task <= 1) return 0;
  uint32_t g = atomic_load(&wf_pool.barrier_generation);
  if (atomic_fetch_add(&wf_pool.barrier_count, 1) == (uint32_t)penv->num_task - 1) {
    atomic_store(&wf_pool.barrier_count, 0);
    atomic_fetch_add(&wf_pool.barrier_generation, 1);
    wf_wake(&wf_pool.barrier_generation);
  } else {
    while (atomic_load(&wf_pool.barrier_generation) == g) wf_wait(&wf_pool.barrier_generation, g);
  }
  return 0;
}

#endif
