// The wasm module (flowrt_web.wasm, web/src/lib.rs) in a Web Worker, so the page stays
// responsive while it samples. Messages: {id, op, ...} -> {id, result} or {id, error}.
//   init   {bytes}           compile and instantiate the module
//   load   {bytes}           load a .frt; result: the model's info JSON (parsed)
//   sample {req, trajectory} one run; result: {samples, trajectory, states, evaluations, ms}
//   bench  {req, runs}       `runs` more runs without the trajectory; result: times in ms
"use strict";

let wasm = null;
const enc = new TextEncoder();
const dec = new TextDecoder();

function message() {
  const p = wasm.flowrt_text_ptr();
  const n = wasm.flowrt_text_len();
  return dec.decode(new Uint8Array(wasm.memory.buffer, p, n));
}

// Copies bytes into the module's input buffer (flowrt_alloc) and returns their length.
function put(bytes) {
  const p = wasm.flowrt_alloc(bytes.length);
  if (p === 0 && bytes.length > 0) throw new Error(`cannot allocate ${bytes.length} bytes in the module`);
  new Uint8Array(wasm.memory.buffer, p, bytes.length).set(bytes);
  return bytes.length;
}

function check(rc, what) {
  if (rc !== 0) throw new Error(`${what}: ${message()}`);
}

// A copy: the module's memory may grow (and detach views) on the next call.
function f32s(ptr, len) {
  return new Float32Array(wasm.memory.buffer, ptr, len).slice();
}

// One flowrt_sample call, timed; returns the milliseconds.
function sampleOnce(req, trajectory) {
  const n = put(enc.encode(req.method));
  const lo = Number(req.seed & 0xffffffffn);
  const hi = Number(req.seed >> 32n);
  const t0 = performance.now();
  const rc = wasm.flowrt_sample(n, req.steps, lo, hi, req.num, req.labelMode, req.label,
    req.guidance, req.nullLabel, trajectory ? 1 : 0);
  const ms = performance.now() - t0;
  check(rc, "sample");
  return ms;
}

const ops = {
  async init({ bytes }) {
    const { instance } = await WebAssembly.instantiate(bytes, {});
    wasm = instance.exports;
    return null;
  },
  load({ bytes, file }) {
    check(wasm.flowrt_load(put(new Uint8Array(bytes))), file);
    check(wasm.flowrt_info(), "info");
    return JSON.parse(message());
  },
  sample({ req, trajectory }) {
    const ms = sampleOnce(req, trajectory);
    return {
      ms,
      samples: f32s(wasm.flowrt_samples_ptr(), wasm.flowrt_samples_len()),
      trajectory: f32s(wasm.flowrt_trajectory_ptr(), wasm.flowrt_trajectory_len()),
      states: wasm.flowrt_states(),
      evaluations: wasm.flowrt_evaluations(),
    };
  },
  bench({ req, runs }) {
    const times = [];
    for (let i = 0; i < runs; i++) times.push(sampleOnce(req, false));
    return times;
  },
};

onmessage = async (e) => {
  const { id, op } = e.data;
  try {
    const result = await ops[op](e.data);
    const transfer = result && result.samples ? [result.samples.buffer, result.trajectory.buffer] : [];
    postMessage({ id, result }, transfer);
  } catch (err) {
    postMessage({ id, error: err.message || String(err) });
  }
};
