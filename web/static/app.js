// flowrt in the browser: loads flowrt_web.wasm (web/src/lib.rs, a plain extern "C"
// interface) into a Web Worker (worker.js), hands it a fetched .frt, samples it and draws
// the samples and their trajectory from noise to data.
//
// URL parameters (all optional) preset the controls; auto=1 samples on load:
//   model=moons_reflow.frt method=rk4 steps=8 num=256 seed=7
//   label=cycle:10 | label=3   guidance=2   null_label=10   (class-conditional models)
//   auto=1      sample once the page is ready
//   anim=0      draw the final samples at once (no animation; for screenshots)
//   dump=1      also write the sample and trajectory bytes (base64, little-endian f32) into
//               #samples-b64 / #trajectory-b64, for the browser test (web/browser_test.py)
//   bench=R     after the first run, time R more runs (no trajectory) and report the median
//               (data-median, data-min on #elapsed)
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

let info = null; // flowrt_info() of the loaded model
let loadedFile = null;
let last = null; // { samples, trajectory, states, num, dim }
let animation = 0;

function setStatus(state, text) {
  const s = $("status");
  s.dataset.state = state;
  s.textContent = text;
}

// The module runs in a Web Worker (worker.js); `call` sends it one request.
const worker = new Worker("worker.js");
let nextId = 0;
const pending = new Map();
worker.onmessage = (e) => {
  const { id, result, error } = e.data;
  const p = pending.get(id);
  pending.delete(id);
  if (error !== undefined) p.reject(new Error(error));
  else p.resolve(result);
};
worker.onerror = (e) => {
  for (const p of pending.values()) p.reject(new Error(`worker: ${e.message}`));
  pending.clear();
};
function call(op, payload, transfer = []) {
  const id = ++nextId;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, op, ...payload }, transfer);
  });
}

function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

async function sha256(bytes) {
  if (!(window.crypto && crypto.subtle)) return "(crypto.subtle needs a secure context)";
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function loadModule() {
  const resp = await fetch("flowrt_web.wasm");
  if (!resp.ok) throw new Error(`flowrt_web.wasm: HTTP ${resp.status}`);
  const bytes = await resp.arrayBuffer();
  const size = bytes.byteLength;
  await call("init", { bytes }, [bytes]);
  $("wasm-bytes").textContent = `${size.toLocaleString("en")} bytes (flowrt_web.wasm)`;
}

async function loadModel(file) {
  if (loadedFile === file) return;
  setStatus("loading", `loading ${file}…`);
  const resp = await fetch(file);
  if (!resp.ok) throw new Error(`${file}: HTTP ${resp.status}`);
  const bytes = new Uint8Array(await resp.arrayBuffer());
  loadedFile = null;
  const size = bytes.length;
  info = await call("load", { bytes: bytes.buffer, file }, [bytes.buffer]);
  loadedFile = file;
  $("model-bytes").textContent = `${size.toLocaleString("en")} bytes (${file})`;
  $("params").textContent = info.params.toLocaleString("en");
  const cond = $("conditioning");
  cond.hidden = !info.label;
  if (info.label) {
    const sel = $("label");
    sel.innerHTML = "";
    const classes = info.classes ?? 10;
    const shown = info.null_label !== null || classes === 11 ? classes - 1 : classes;
    const opt = (value, text) => {
      const o = document.createElement("option");
      o.value = value;
      o.textContent = text;
      sel.appendChild(o);
    };
    opt(`cycle:${shown}`, `0..${shown - 1} repeated`);
    for (let k = 0; k < shown; k++) opt(String(k), String(k));
    if (info.null_label !== null) $("null-label").value = info.null_label;
  }
}

// The request from the controls.
function request() {
  const seed = BigInt($("seed").value.trim() || "0");
  if (seed < 0n || seed >= 1n << 64n) throw new Error("seed must be in 0..2^64-1");
  const req = {
    file: $("model").value,
    method: $("method").value,
    steps: parseInt($("steps").value, 10),
    num: parseInt($("num").value, 10),
    seed,
    labelMode: 0,
    label: 0,
    guidance: NaN,
    nullLabel: -1,
  };
  if (!(req.steps >= 1)) throw new Error("steps must be at least 1");
  if (!(req.num >= 1)) throw new Error("samples must be at least 1");
  if (info && info.label) {
    const l = $("label").value;
    if (l.startsWith("cycle:")) {
      req.labelMode = 2;
      req.label = parseInt(l.slice(6), 10);
    } else {
      req.labelMode = 1;
      req.label = parseInt(l, 10);
    }
    const g = $("guidance").value.trim();
    if (g !== "") req.guidance = parseFloat(g);
    const nl = $("null-label").value.trim();
    if (nl !== "") req.nullLabel = parseInt(nl, 10);
  }
  return req;
}

// The `flowrt sample` command that draws the same bytes.
function nativeCommand(req) {
  let c = `flowrt sample ${req.file} --backend cpu --seed ${req.seed} --num ${req.num} --method ${req.method} --steps ${req.steps}`;
  if (req.labelMode === 1) c += ` --label-value ${req.label}`;
  if (req.labelMode === 2) c += ` --label-cycle ${req.label}`;
  if (!Number.isNaN(req.guidance)) c += ` --guidance ${req.guidance}`;
  if (req.nullLabel >= 0 && !Number.isNaN(req.guidance)) c += ` --null-label ${req.nullLabel}`;
  return c + " -o x.npy";
}

// Milliseconds per sample of a run of `num` samples, in µs or ms.
function perSample(ms, num) {
  const us = (ms / num) * 1000;
  return us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(2)} µs`;
}

async function run() {
  cancelAnimationFrame(animation);
  $("run").disabled = true;
  try {
    const req0 = request();
    await loadModel(req0.file);
    const req = request(); // the label controls may have been rebuilt for the new model
    setStatus("running", `sampling ${req.num} × ${req.method} × ${req.steps} steps…`);
    const r = await call("sample", { req, trajectory: true });
    const ms = r.ms;
    const dim = info.state_dim;
    last = {
      samples: r.samples,
      trajectory: r.trajectory,
      states: r.states,
      num: req.num,
      dim,
      req,
    };
    const evals = r.evaluations;
    $("run-desc").textContent = `${req.num} samples × ${dim} values, ${req.method}, ${req.steps} steps`;
    $("elapsed").textContent = `${ms.toFixed(2)} ms (with the trajectory)`;
    $("per-sample").textContent = perSample(ms, req.num);
    $("evaluations").textContent = String(evals);
    $("native").textContent = nativeCommand(req);
    const bytes = new Uint8Array(last.samples.buffer);
    $("digest").textContent = await sha256(bytes);
    if (params.get("dump") === "1") {
      $("samples-b64").textContent = base64(bytes);
      $("trajectory-b64").textContent = base64(new Uint8Array(last.trajectory.buffer));
    }
    const bench = parseInt(params.get("bench") || "0", 10);
    if (bench > 0) {
      setStatus("running", `timing ${bench} more runs…`);
      const times = await call("bench", { req, runs: bench });
      times.sort((a, b) => a - b);
      const med = times[Math.floor(times.length / 2)];
      $("elapsed").textContent += `; median of ${bench} more runs without it: ${med.toFixed(3)} ms`;
      $("per-sample").textContent = `${perSample(med, req.num)} (median run)`;
      $("elapsed").dataset.median = String(med);
      $("elapsed").dataset.min = String(times[0]);
    }
    $("elapsed").dataset.ms = String(ms);
    $("replay").disabled = false;
    if (params.get("anim") === "0") draw(last.states - 1, 0);
    else animate();
    setStatus("done", `done: ${req.num} samples in ${ms.toFixed(2)} ms`);
  } catch (e) {
    setStatus("error", `error: ${e.message}`);
  } finally {
    $("run").disabled = false;
  }
}

// ---- drawing --------------------------------------------------------------------------

// The state between recorded states `k` and `k + 1` at fraction `f`.
function stateAt(k, f) {
  const len = last.num * last.dim;
  const a = last.trajectory.subarray(k * len, (k + 1) * len);
  if (f === 0 || k + 1 >= last.states) return a;
  const b = last.trajectory.subarray((k + 1) * len, (k + 2) * len);
  const out = new Float32Array(len);
  for (let i = 0; i < len; i++) out[i] = a[i] + (b[i] - a[i]) * f;
  return out;
}

function isImage() {
  const s = info.row_shape;
  return s.length === 3 && s[1] > 1 && s[2] > 1;
}

function draw(k, f) {
  last.frame = k + f + 1; // recorded states reached so far (for the paths)
  const x = stateAt(k, f);
  const ctx = $("canvas").getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, 640, 640);
  if (isImage()) drawImages(ctx, x);
  else drawScatter(ctx, x);
  const t = last.states > 1 ? (k + f) / (last.states - 1) : 1;
  $("caption").textContent = k + f >= last.states - 1
    ? `samples (step ${last.states - 1} of ${last.states - 1})`
    : `from noise to data: step ${(k + f).toFixed(1)} of ${last.states - 1} (${Math.round(t * 100)}%)`;
}

function drawScatter(ctx, x) {
  const { num, dim } = last;
  // Axes fixed for the whole animation: the final samples and the bulk of the noise
  // ([-2.5, 2.5]^2, where 98.8% of standard normal pairs fall).
  if (!last.box) {
    const lo = [-2.5, -2.5], hi = [2.5, 2.5];
    for (let i = 0; i + 1 < last.samples.length; i += dim) {
      for (let c = 0; c < 2; c++) {
        const v = Math.max(-8, Math.min(8, last.samples[i + c]));
        lo[c] = Math.min(lo[c], v);
        hi[c] = Math.max(hi[c], v);
      }
    }
    const span = Math.max(hi[0] - lo[0], hi[1] - lo[1]) * 1.05;
    last.box = { cx: (lo[0] + hi[0]) / 2, cy: (lo[1] + hi[1]) / 2, span };
  }
  const { cx, cy, span } = last.box;
  const px = (v) => 320 + ((v - cx) / span) * 620;
  const py = (v) => 320 - ((v - cy) / span) * 620;
  ctx.strokeStyle = "#e4e8f0";
  ctx.beginPath();
  ctx.moveTo(px(0), 0); ctx.lineTo(px(0), 640);
  ctx.moveTo(0, py(0)); ctx.lineTo(640, py(0));
  ctx.stroke();
  const noise = last.trajectory;
  // Faint paths of up to 64 samples through the recorded states, up to the current one.
  const len = num * dim;
  const shownStates = Math.min(last.states, Math.floor(last.frame ?? last.states));
  ctx.strokeStyle = "rgba(60, 70, 90, 0.25)";
  for (let i = 0; i < Math.min(num, 64); i++) {
    ctx.beginPath();
    for (let k = 0; k < shownStates; k++) {
      const o = k * len + i * dim;
      if (k === 0) ctx.moveTo(px(noise[o]), py(noise[o + 1]));
      else ctx.lineTo(px(noise[o]), py(noise[o + 1]));
    }
    ctx.lineTo(px(x[i * dim]), py(x[i * dim + 1]));
    ctx.stroke();
  }
  for (let i = 0; i < num; i++) {
    // Colour by the angle of the sample's starting noise: shows where each point went.
    const hue = (Math.atan2(noise[i * dim + 1], noise[i * dim]) / Math.PI) * 180 + 180;
    ctx.fillStyle = `hsl(${hue.toFixed(0)}, 70%, 45%)`;
    ctx.fillRect(px(x[i * dim]) - 2, py(x[i * dim + 1]) - 2, 4, 4);
  }
}

// One sample of `x` as an ImageData of `scale`-sized pixels (values in [-1, 1]).
function sampleImage(ctx, x, i, scale) {
  const [c, h, w] = info.row_shape;
  const dim = last.dim;
  const img = ctx.createImageData(w * scale, h * scale);
  for (let yy = 0; yy < h * scale; yy++) {
    for (let xx = 0; xx < w * scale; xx++) {
      const p = Math.floor(yy / scale) * w + Math.floor(xx / scale);
      const o = (yy * w * scale + xx) * 4;
      for (let ch = 0; ch < 3; ch++) {
        const v = x[i * dim + (c === 3 ? ch * h * w : 0) + p];
        img.data[o + ch] = Math.max(0, Math.min(255, Math.round((v + 1) * 127.5)));
      }
      img.data[o + 3] = 255;
    }
  }
  return img;
}

function drawImages(ctx, x) {
  const [, h, w] = info.row_shape;
  const { num } = last;
  const req = last.req;
  const cols = req.labelMode === 2 ? Math.min(req.label, num) : Math.ceil(Math.sqrt(num));
  const rows = Math.ceil(num / cols);
  // The grid takes the top (all of the canvas when it is large), the trajectory of the
  // first row of samples the rest: one row of images per recorded state.
  const cell = Math.floor(Math.min(640 / cols, 640 / rows, 64));
  const scale = Math.max(1, Math.floor((cell - 2) / Math.max(h, w)));
  for (let i = 0; i < num; i++) {
    ctx.putImageData(sampleImage(ctx, x, i, scale), (i % cols) * cell + 1, Math.floor(i / cols) * cell + 1);
  }
  const top = rows * cell + 28;
  const strip = Math.min(cell, Math.floor((640 - top) / Math.max(1, last.states)));
  if (strip < 10 || last.states < 2) return;
  ctx.fillStyle = "#4a5266";
  ctx.font = "14px system-ui, sans-serif";
  ctx.fillText("trajectory of the first row: noise (top) to samples (bottom)", 4, top - 8);
  const len = num * last.dim;
  const s2 = Math.max(1, Math.floor((strip - 2) / Math.max(h, w)));
  for (let k = 0; k < last.states; k++) {
    const state = last.trajectory.subarray(k * len, (k + 1) * len);
    for (let i = 0; i < Math.min(cols, num); i++) {
      ctx.putImageData(sampleImage(ctx, state, i, s2), i * cell + 1, top + k * strip);
    }
  }
}

function animate() {
  const steps = Math.max(1, last.states - 1);
  const total = Math.min(3000, 600 + 250 * steps); // ms for noise -> data
  const start = performance.now();
  const frame = (now) => {
    const pos = Math.min(1, (now - start) / total) * steps;
    const k = Math.min(Math.floor(pos), steps);
    draw(k, k >= steps ? 0 : pos - k);
    if (pos < steps) animation = requestAnimationFrame(frame);
  };
  animation = requestAnimationFrame(frame);
}

// ---- start-up -------------------------------------------------------------------------

async function main() {
  try {
    await loadModule();
    const list = await (await fetch("models.json")).json();
    const sel = $("model");
    for (const m of list) {
      const o = document.createElement("option");
      o.value = m.file;
      o.textContent = m.title;
      sel.appendChild(o);
    }
    for (const [key, id] of [["model", "model"], ["method", "method"], ["steps", "steps"],
      ["num", "num"], ["seed", "seed"]]) {
      if (params.has(key)) $(id).value = params.get(key);
    }
    if (params.has("model") && $("model").value !== params.get("model")) {
      throw new Error(`model ${params.get("model")} is not in models.json`);
    }
    await loadModel($("model").value);
    // An image model costs far more per sample than a 2-D one: start with fewer.
    if (!params.has("num")) $("num").value = info.label ? 20 : 512;
    if (params.has("label")) {
      const l = params.get("label");
      if (![...$("label").options].some((o) => o.value === l)) {
        const o = document.createElement("option");
        o.value = o.textContent = l;
        $("label").appendChild(o);
      }
      $("label").value = l;
    }
    if (params.has("guidance")) $("guidance").value = params.get("guidance");
    if (params.has("null_label")) $("null-label").value = params.get("null_label");
    sel.addEventListener("change", async () => {
      try {
        await loadModel(sel.value);
        // An image model costs far more per sample than a 2-D one: start with fewer.
        $("num").value = info.label ? 20 : 512;
        setStatus("ready", `${sel.value} loaded`);
      }
      catch (e) { setStatus("error", `error: ${e.message}`); }
    });
    $("controls").addEventListener("submit", (e) => { e.preventDefault(); run(); });
    $("replay").addEventListener("click", () => { if (last) { cancelAnimationFrame(animation); animate(); } });
    $("run").disabled = false;
    setStatus("ready", "ready: choose a model and press sample");
    if (params.get("auto") === "1") await run();
  } catch (e) {
    setStatus("error", `error: ${e.message}`);
  }
}

main();
