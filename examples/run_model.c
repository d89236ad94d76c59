/* run_model.c: a command-mode WASI program that runs any single-input wasmforge model
 * linked in from lib<model>.a (see wasmforge/release/staticlib.py for the link line).
 *
 *   wasmtime run --dir=HOSTDIR::/data app.wasm /data/input.bin /data/output.bin
 *
 * argv[1]: the input as raw C-order bytes (exactly wasmforge_input_size(0) of them);
 * argv[2]: where output 0's raw bytes are written.
 * No manual initialisation: in a command module wasi-libc's _start runs the constructors
 * (__wasm_call_ctors, which registers the kernels) before main.
 */
#include <stdio.h>
#include <stdlib.h>

#include "wasmforge.h"

static int fail(const char* what, const char* path) {
  fprintf(stderr, "run_model: %s%s%s\n", what, path ? ": " : "", path ? path : "");
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s INPUT.bin OUTPUT.bin\n", argc ? argv[0] : "run_model");
    return 2;
  }
  if (wasmforge_num_inputs() != 1) return fail("this program runs single-input models only", NULL);

  uint32_t in_size = wasmforge_input_size(0);
  FILE* f = fopen(argv[1], "rb");
  if (!f) return fail("cannot open input", argv[1]);
  size_t got = fread(wasmforge_input_ptr(0), 1, in_size, f);
  int extra = fgetc(f) != EOF;   /* the file must be exactly the input's size */
  fclose(f);
  if (got != in_size || extra) {
    fprintf(stderr, "run_model: %s: expected exactly %u bytes\n", argv[1], (unsigned)in_size);
    return 1;
  }

  int32_t rc = wasmforge_run();
  if (rc != 0) {
    fprintf(stderr, "run_model: wasmforge_run returned %d: %s\n", (int)rc, wasmforge_last_error());
    return 1;
  }

  uint32_t out_size = wasmforge_output_size(0);
  f = fopen(argv[2], "wb");
  if (!f) return fail("cannot create output", argv[2]);
  size_t put = fwrite(wasmforge_output_ptr(0), 1, out_size, f);
  if (fclose(f) != 0 || put != out_size) return fail("cannot write output", argv[2]);
  return 0;
}
