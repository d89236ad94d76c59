// onnxruntime-web's wasm backend in Node: median latency of session.run.
// usage: node ortweb.mjs <model.onnx> <threads> <repeats> <input-name> <d0,d1,...>
import * as fs from 'node:fs';
import * as ort from 'onnxruntime-web';

const [model, threads, repeats, inputName, dims] = process.argv.slice(2);
ort.env.wasm.numThreads = Number(threads);
const t0 = performance.now();
const session = await ort.InferenceSession.create(fs.readFileSync(model), {executionProviders: ['wasm']});
const createMs = performance.now() - t0;
const shape = dims.split(',').map(Number);
const n = shape.reduce((a, b) => a * b, 1);
const data = new Float32Array(n);
let s = 12345;
for (let i = 0; i < n; i++) { s = (s * 1103515245 + 12345) % 2147483648; data[i] = s / 2147483648 - 0.5; }
const feeds = {[inputName]: new ort.Tensor('float32', data, shape)};
const t1 = performance.now();
await session.run(feeds);
const firstMs = performance.now() - t1;
const times = [];
for (let i = 0; i < Number(repeats); i++) {
  const t = performance.now();
  await session.run(feeds);
  times.push(performance.now() - t);
}
times.sort((a, b) => a - b);
console.log(JSON.stringify({median_ms: times[Math.floor(times.length / 2)], times_ms: times,
                            create_ms: createMs, first_ms: firstMs, version: ort.env.versions?.common ?? null}));
process.exit(0);
