// onnxruntime-web's wasm backend in Node, kept alive for alternating turns.
// usage: node ortweb_server.mjs <model.onnx> <threads> <inputs.json>
// inputs.json: [{"name", "dtype", "shape", "file"}] (raw little-endian C-order bytes).
// Prints {"ready": true, "create_ms", "version"} once, then for each line "N" on stdin runs
// N inferences and prints {"times_ms": [...]}.
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import * as ort from 'onnxruntime-web';

const [model, threads, inputsJson] = process.argv.slice(2);
ort.env.wasm.numThreads = Number(threads);
const t0 = performance.now();
const session = await ort.InferenceSession.create(fs.readFileSync(model), {executionProviders: ['wasm']});
const createMs = performance.now() - t0;
const ARRAYS = {float32: Float32Array, int64: BigInt64Array, int32: Int32Array, uint8: Uint8Array,
                int8: Int8Array, float64: Float64Array, bool: Uint8Array};
const feeds = {};
for (const inp of JSON.parse(fs.readFileSync(inputsJson, 'utf8'))) {
  const bytes = fs.readFileSync(inp.file);
  const Arr = ARRAYS[inp.dtype];
  const data = new Arr(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  feeds[inp.name] = new ort.Tensor(inp.dtype, data, inp.shape);
}
console.log(JSON.stringify({ready: true, create_ms: createMs, version: ort.env.versions?.common ?? null}));
for await (const line of readline.createInterface({input: process.stdin})) {
  const times = [];
  for (let i = 0; i < Number(line); i++) {
    const t = performance.now();
    await session.run(feeds);
    times.push(performance.now() - t);
  }
  console.log(JSON.stringify({times_ms: times}));
}
process.exit(0);
