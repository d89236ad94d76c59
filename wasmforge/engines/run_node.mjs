// Run a published wasmforge module in Node's own WASI (V8), with no JavaScript glue from
// the build: the proof that the module needs nothing but a WASI preview1 host.
//
// usage: node run_node.mjs MODULE.wasm INPUT.bin OUTPUT.bin
//   INPUT.bin: input 0's raw C-order bytes (exactly wasmforge_input_size(0));
//   OUTPUT.bin: written with output 0's raw bytes.
// Exit 0 on success; 1 with the module's wasmforge_last_error() (or the problem) on stderr.
import * as fs from 'node:fs';
import {WASI} from 'node:wasi';

function fail(msg) {
  process.stderr.write(`run_node: ${msg}\n`);
  process.exit(1);
}

const [modulePath, inputPath, outputPath] = process.argv.slice(2);
if (!outputPath) fail('usage: node run_node.mjs MODULE.wasm INPUT.bin OUTPUT.bin');

// No preopens, args or env: the module only writes to stdout/stderr, if at all.
const wasi = new WASI({version: 'preview1', args: [modulePath], env: {}, returnOnExit: true});
let instance;
try {
  const module = await WebAssembly.compile(fs.readFileSync(modulePath));
  instance = await WebAssembly.instantiate(module, wasi.getImportObject());
  // A reactor: initialize() calls _initialize (the constructors that register the kernels)
  // and refuses a module that exports _start.
  wasi.initialize(instance);
} catch (e) {
  fail(`${modulePath}: ${e.message}`);
}

const ex = instance.exports;
const cString = (ptr) => {
  const bytes = new Uint8Array(ex.memory.buffer, ptr);
  return new TextDecoder().decode(bytes.subarray(0, bytes.indexOf(0)));
};

if (ex.wasmforge_num_inputs() !== 1) fail(`${modulePath}: only single-input models are supported`);
const input = fs.readFileSync(inputPath);
const inSize = ex.wasmforge_input_size(0);
if (input.length !== inSize) fail(`${inputPath}: ${input.length} bytes, the module's input 0 takes ${inSize}`);
new Uint8Array(ex.memory.buffer, ex.wasmforge_input_ptr(0), inSize).set(input);

const rc = ex.wasmforge_run();
if (rc !== 0) fail(`wasmforge_run returned ${rc}: ${cString(ex.wasmforge_last_error())}`);

// memory.buffer is re-read after the run: a memory.grow detaches the old ArrayBuffer
const out = new Uint8Array(ex.memory.buffer, ex.wasmforge_output_ptr(0), ex.wasmforge_output_size(0));
fs.writeFileSync(outputPath, out);
