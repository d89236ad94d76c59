// Our portable module in Node's own WASI (V8's engine), kept alive for alternating turns:
// the same .wasm the wasmtime rows time, in the engine onnxruntime-web runs in.
// usage: node ours_node_server.mjs <model.wasm> <inputs.json>
// inputs.json: [{"name", "dtype", "shape", "file"}] in the module's input order (raw bytes).
// Prints {"ready": true, "instantiate_ms"} once, then for each line "N" on stdin runs N
// inferences and prints {"times_ms": [...]}; a failed run prints {"error": "..."} and exits 1.
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import {WASI} from 'node:wasi';

function fail(msg) {
  console.log(JSON.stringify({error: msg}));
  process.exit(1);
}

const [modulePath, inputsJson] = process.argv.slice(2);
const t0 = performance.now();
const wasi = new WASI({version: 'preview1', args: [modulePath], env: {}, returnOnExit: true});
let instance;
try {
  const module = await WebAssembly.compile(fs.readFileSync(modulePath));
  instance = await WebAssembly.instantiate(module, wasi.getImportObject());
  wasi.initialize(instance);   // _initialize: the constructors that register the kernels
} catch (e) {
  fail(`${modulePath}: ${e.message}`);
}
const instantiateMs = performance.now() - t0;
const ex = instance.exports;

const inputs = JSON.parse(fs.readFileSync(inputsJson, 'utf8'));
if (inputs.length !== ex.wasmforge_num_inputs()) fail(`${modulePath}: takes ${ex.wasmforge_num_inputs()} inputs, not ${inputs.length}`);
inputs.forEach((inp, i) => {
  const bytes = fs.readFileSync(inp.file);
  if (bytes.length !== ex.wasmforge_input_size(i)) fail(`${inp.file}: ${bytes.length} bytes, input ${i} takes ${ex.wasmforge_input_size(i)}`);
  // memory.buffer is read after each call that may grow the memory
  new Uint8Array(ex.memory.buffer, ex.wasmforge_input_ptr(i), bytes.length).set(bytes);
});
console.log(JSON.stringify({ready: true, instantiate_ms: instantiateMs}));
for await (const line of readline.createInterface({input: process.stdin})) {
  const times = [];
  for (let i = 0; i < Number(line); i++) {
    const t = performance.now();
    const rc = ex.wasmforge_run();
    times.push(performance.now() - t);
    if (rc !== 0) {
      const mem = new Uint8Array(ex.memory.buffer, ex.wasmforge_last_error());
      fail(`wasmforge_run returned ${rc}: ${new TextDecoder().decode(mem.subarray(0, mem.indexOf(0)))}`);
    }
  }
  console.log(JSON.stringify({times_ms: times}));
}
process.exit(0);
