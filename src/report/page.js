"use strict";
// rhlens report: draws the embedded traces; no network, no dependencies.
const diag = { errors: [], note(msg) { this.errors.push(String(msg)); flushDiag(); } };
window.addEventListener("error", (e) => diag.note("error: " + e.message));
window.addEventListener("unhandledrejection", (e) => diag.note("rejection: " + e.reason));
document.addEventListener("securitypolicyviolation", (e) => diag.note("blocked: " + e.blockedURI));
const consoleError = console.error.bind(console);
console.error = (...a) => { diag.note("console: " + a.join(" ")); consoleError(...a); };
function flushDiag() {
  const el = document.getElementById("diag");
  if (!el) return;
  const res = performance.getEntriesByType("resource").map((r) => r.name);
  el.dataset.errors = String(diag.errors.length);
  el.dataset.resources = String(res.length);
  el.textContent = diag.errors.concat(res.map((r) => "resource: " + r)).join("\n");
}

const $ = (id) => document.getElementById(id);
const DATA = JSON.parse($("report-data").textContent);
const ROLE_COLOURS = { visual: "#d0312d", instruction: "#2a6fb0", reasoning: "#7b4fb0", answer: "#2b7a3d", system: "#888" };
const CURVE_ROLES = ["visual", "instruction", "reasoning"];

function bytes64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
const floats64 = (s) => new Float32Array(bytes64(s).buffer);

// ---- traces: decoded once -------------------------------------------------------------------
function prepare(t) {
  const nl = t.layers.length, nr = t.roles.length, vt = t.image.rows * t.image.cols;
  const ra = floats64(t.role_attention);
  const shares = new Float32Array(ra.length); // each (step, layer) row renormalised
  for (let row = 0; row < t.steps * nl; row++) {
    let total = 0;
    for (let r = 0; r < nr; r++) total += ra[row * nr + r];
    for (let r = 0; r < nr; r++) shares[row * nr + r] = total > 0 ? ra[row * nr + r] / total : 0;
  }
  const answer = new Uint8Array(t.tokens.length);
  for (const [a, b] of t.answer) for (let s = a; s < Math.min(b, answer.length); s++) answer[s] = 1;
  return Object.assign(t, {
    nl, nr, vt, shares, answer,
    forcedSet: new Set(t.forced),
    roleIndex: (name) => t.roles.indexOf(name),
    mapBytes: bytes64(t.maps.data), mapScale: floats64(t.maps.scale),
    headBytes: t.heads ? bytes64(t.heads.data) : null, headScale: t.heads ? floats64(t.heads.scale) : null,
    promptAlloc: t.prompt_role_attention ? floats64(t.prompt_role_attention) : null,
  });
}
const TRACES = DATA.traces.map(prepare);
const IMAGES = DATA.images.map((uri) => { const im = new Image(); im.src = uri; return im; });
const LUTS = {};
for (const [name, b64] of Object.entries(DATA.colormaps)) LUTS[name] = bytes64(b64);

// ---- state ----------------------------------------------------------------------------------
const state = { step: 0, pinned: 0, cmap: "viridis", alpha: 0.6, smooth: true, mode: "all", a: 0, b: 0, head: -1, shown: [] };

function layerPositions(t) {
  const ref = TRACES[state.shown[0]].layers;
  if (state.mode === "all") return t.layers.map((_, i) => i);
  const lo = ref[Math.min(state.a, state.b)], hi = ref[Math.max(state.a, state.b)];
  const want = state.mode === "one" ? [ref[state.a]] : ref.filter((l) => l >= lo && l <= hi);
  const pos = want.map((l) => t.layers.indexOf(l)).filter((p) => p >= 0);
  return pos.length ? pos : t.layers.map((_, i) => i);
}

function mapIndex(t, step) {
  if (t.maps.kind === "steps") return Math.min(step, t.maps.count - 1);
  if (t.maps.kind === "windows") return Math.min(Math.floor(step / t.maps.window), t.maps.count - 1);
  return 0;
}

// The shown map of trace t at `step`: mean over the selected layers (one head's all-step map
// when a head is chosen and the trace has per-head maps).
function mapOf(t, step) {
  const out = new Float32Array(t.vt), pos = layerPositions(t);
  const useHead = state.head >= 0 && t.heads && state.head < t.heads.heads;
  for (const p of pos) {
    let row, bytes, scale;
    if (useHead) { row = p * t.heads.heads + state.head; bytes = t.headBytes; scale = t.headScale[row] / 255; }
    else { row = mapIndex(t, step) * t.nl + p; bytes = t.mapBytes; scale = t.mapScale[row] / 255; }
    const off = row * t.vt;
    for (let k = 0; k < t.vt; k++) out[k] += bytes[off + k] * scale;
  }
  for (let k = 0; k < t.vt; k++) out[k] /= pos.length;
  return out;
}

// ---- drawing --------------------------------------------------------------------------------
function colourGrid(t, values, lo, hi, grid) {
  const lut = LUTS[state.cmap], ctx = grid.getContext("2d");
  const img = ctx.createImageData(t.image.cols, t.image.rows), px = img.data, span = hi - lo;
  for (let k = 0; k < t.vt; k++) {
    const u = span > 0 ? Math.min(1, Math.max(0, (values[k] - lo) / span)) : 0;
    const c = Math.round(u * 255) * 3;
    px[4 * k] = lut[c]; px[4 * k + 1] = lut[c + 1]; px[4 * k + 2] = lut[c + 2]; px[4 * k + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function drawView(panel, values, lo, hi) {
  const t = panel.trace, canvas = panel.view, ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  const photo = t.image.index === null ? null : IMAGES[t.image.index];
  ctx.globalAlpha = 1;
  ctx.imageSmoothingEnabled = true;
  if (photo && photo.complete && photo.naturalWidth) ctx.drawImage(photo, 0, 0, W, H);
  else { ctx.fillStyle = "#222"; ctx.fillRect(0, 0, W, H); }
  colourGrid(t, values, lo, hi, panel.grid);
  // the map's rows x cols grid spans the whole image, as in the PNG overlays
  ctx.imageSmoothingEnabled = state.smooth;
  ctx.imageSmoothingQuality = "low";
  ctx.globalAlpha = photo ? state.alpha : 1;
  ctx.drawImage(panel.grid, 0, 0, W, H);
  ctx.globalAlpha = 1;
  const r = canvas.getBoundingClientRect();
  canvas.dataset.box = [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height].map((v) => v.toFixed(2)).join(",");
}

function drawColorbar(panel, lo, hi) {
  const c = panel.colorbar, ctx = c.getContext("2d"), lut = LUTS[state.cmap];
  for (let i = 0; i < 256; i++) {
    ctx.fillStyle = `rgb(${lut[3 * i]},${lut[3 * i + 1]},${lut[3 * i + 2]})`;
    ctx.fillRect(i, 0, 1, c.height);
  }
  panel.lo.textContent = lo.toExponential(2);
  panel.hi.textContent = hi.toExponential(2);
}

function setupCanvas(c) {
  const dpr = window.devicePixelRatio || 1, w = c.clientWidth, h = c.clientHeight;
  if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
  const ctx = c.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return [ctx, w, h];
}

function axes(ctx, w, h, title, ymax) {
  const box = { x: 34, y: 16, w: w - 44, h: h - 34 };
  ctx.strokeStyle = "#d8dee4"; ctx.fillStyle = "#6a737d"; ctx.font = "11px system-ui, sans-serif";
  ctx.strokeRect(box.x, box.y, box.w, box.h);
  ctx.fillText(title, box.x, 11);
  ctx.fillText(ymax.toFixed(2), 2, box.y + 8);
  ctx.fillText("0", 22, box.y + box.h);
  return box;
}

// Share of each curve role per step, mean over the layer positions `pos` (kept until they change).
function stepCurves(t, pos) {
  const key = pos.join(",");
  if (t.curveKey === key) return t.curves;
  t.curves = [];
  for (const role of CURVE_ROLES) {
    const r = t.roleIndex(role);
    if (r < 0) continue;
    const values = new Float32Array(t.steps);
    for (let s = 0; s < t.steps; s++) {
      let v = 0;
      for (const p of pos) v += t.shares[(s * t.nl + p) * t.nr + r];
      values[s] = v / pos.length;
    }
    t.curves.push([role, values]);
  }
  t.curveKey = key;
  return t.curves;
}

function drawStepCurves(panel) {
  const t = panel.trace, [ctx, w, h] = setupCanvas(panel.curveSteps), pos = layerPositions(t);
  const box = axes(ctx, w, h, `share of attention per step (${layerLabel()})`, 1);
  const n = Math.max(1, t.steps - 1), x = (s) => box.x + (box.w * s) / n, y = (v) => box.y + box.h * (1 - v);
  for (const e of t.events) {
    if (e.kind === "answer_start" || e.kind === "think_start") continue;
    ctx.strokeStyle = e.kind === "wait" ? "#c47f12" : "#999";
    ctx.setLineDash([3, 3]); ctx.beginPath(); ctx.moveTo(x(e.step), box.y); ctx.lineTo(x(e.step), box.y + box.h); ctx.stroke();
  }
  ctx.setLineDash([]);
  for (const [role, values] of stepCurves(t, pos)) {
    ctx.strokeStyle = ROLE_COLOURS[role]; ctx.lineWidth = 1.5; ctx.beginPath();
    values.forEach((v, s) => (s ? ctx.lineTo(x(s), y(v)) : ctx.moveTo(x(s), y(v))));
    ctx.stroke();
  }
  ctx.lineWidth = 1;
  if (state.step < t.steps) {
    ctx.strokeStyle = "#d0312d"; ctx.beginPath(); ctx.moveTo(x(state.step), box.y); ctx.lineTo(x(state.step), box.y + box.h); ctx.stroke();
  }
  ctx.fillStyle = "#6a737d";
  ctx.fillText("step 0", box.x, h - 4);
  ctx.textAlign = "right"; ctx.fillText(String(t.steps - 1), box.x + box.w, h - 4); ctx.textAlign = "left";
}

function drawLayerBars(panel) {
  const t = panel.trace, [ctx, w, h] = setupCanvas(panel.curveLayers), v = t.roleIndex("visual");
  const step = Math.min(state.step, t.steps - 1), sel = new Set(layerPositions(t));
  let ymax = 0.05;
  const at = t.layers.map((_, p) => (step >= 0 ? t.shares[(step * t.nl + p) * t.nr + v] : 0));
  const pa = t.promptAlloc, prompt = pa ? t.layers.map((_, p) => {
    let total = 0; for (let r = 0; r < t.nr; r++) total += pa[p * t.nr + r];
    return total > 0 ? pa[p * t.nr + v] / total : 0;
  }) : null;
  for (const a of at.concat(prompt || [])) ymax = Math.max(ymax, a);
  ymax = Math.min(1, Math.ceil(ymax * 10) / 10);
  const box = axes(ctx, w, h, `visual share per layer at step ${step}` + (prompt ? " (line: prompt only)" : ""), ymax);
  const bw = box.w / t.nl, y = (u) => box.y + box.h * (1 - u / ymax);
  at.forEach((a, p) => {
    ctx.fillStyle = sel.has(p) ? "#d0312d" : "#e9a3a1";
    ctx.fillRect(box.x + p * bw + 1, y(a), Math.max(1, bw - 2), box.y + box.h - y(a));
  });
  if (prompt) {
    ctx.strokeStyle = "#1f2328"; ctx.beginPath();
    prompt.forEach((a, p) => (p ? ctx.lineTo : ctx.moveTo).call(ctx, box.x + (p + 0.5) * bw, y(a)));
    ctx.stroke();
  }
  ctx.fillStyle = "#6a737d";
  ctx.fillText(`layer ${t.layers[0]}`, box.x, h - 4);
  ctx.textAlign = "right"; ctx.fillText(`${t.layers[t.nl - 1]}`, box.x + box.w, h - 4); ctx.textAlign = "left";
}

function layerLabel() {
  const ref = TRACES[state.shown[0]].layers;
  if (state.mode === "all") return "mean of all layers";
  if (state.mode === "one") return `layer ${ref[state.a]}`;
  return `layers ${ref[Math.min(state.a, state.b)]}–${ref[Math.max(state.a, state.b)]}`;
}

// Redraws what depends on the step: the maps (one colour scale over the panels), chips, marks.
function redraw() {
  const t0 = performance.now();
  const maps = PANELS.map((p) => mapOf(p.trace, Math.min(state.step, Math.max(0, p.trace.steps - 1))));
  let lo = Infinity, hi = -Infinity;
  for (const m of maps) for (const v of m) { if (v < lo) lo = v; if (v > hi) hi = v; }
  PANELS.forEach((p, i) => {
    drawView(p, maps[i], lo, hi);
    drawColorbar(p, lo, hi);
    markChip(p);
    drawStepCurves(p);
    drawLayerBars(p);
  });
  const ms = performance.now() - t0;
  const app = $("app");
  app.dataset.drawMs = ms.toFixed(3);
  app.dataset.step = String(state.step);
  app.dataset.layers = layerLabel();
  return ms;
}

// ---- panels, chips --------------------------------------------------------------------------
const PANELS = [];

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function chipText(s) {
  if (s === "") return "∅";
  return s.replace(/\n/g, "↵");
}

function buildChips(panel) {
  const t = panel.trace, box = panel.chips;
  box.textContent = "";
  panel.chipEls = [];
  const eventsAt = new Map();
  for (const e of t.events) {
    if (e.kind === "think_start" || e.kind === "answer_start") continue;
    if (!eventsAt.has(e.step)) eventsAt.set(e.step, []);
    eventsAt.get(e.step).push(e);
  }
  const frag = document.createDocumentFragment();
  t.tokens.forEach((tok, s) => {
    for (const e of eventsAt.get(s) || []) {
      const label = { think_end: "thinking ends", forced_think_end: "thinking cut (budget)", wait: "Wait inserted" }[e.kind] || e.kind;
      frag.appendChild(el("span", "event " + e.kind, label));
    }
    const c = el("span", "chip", chipText(tok));
    if (t.answer[s]) c.classList.add("answer");
    if (t.forcedSet.has(s)) c.classList.add("forced");
    if (s >= t.steps) c.classList.add("nomap");
    c.dataset.step = String(s);
    c.title = `step ${s}` + (t.forcedSet.has(s) ? " (inserted by length control)" : "");
    panel.chipEls.push(c);
    frag.appendChild(c);
  });
  for (const e of eventsAt.get(t.tokens.length) || []) frag.appendChild(el("span", "event " + e.kind, e.kind));
  box.appendChild(frag);
}

function markChip(panel) {
  const t = panel.trace;
  if (panel.selEl) panel.selEl.classList.remove("sel", "pinned");
  const c = panel.chipEls[state.step];
  panel.selEl = c || null;
  if (c) {
    c.classList.add("sel");
    if (state.step === state.pinned) c.classList.add("pinned");
  }
  const tok = t.tokens[state.step];
  panel.info.textContent = "";
  if (tok === undefined) { panel.info.textContent = `step ${state.step}: no token`; return; }
  const role = t.answer[state.step] ? "answer" : "reasoning";
  const kind = { steps: "this step's map", windows: `mean map of steps ${Math.floor(state.step / t.maps.window) * t.maps.window}–${Math.min(t.steps, (Math.floor(state.step / t.maps.window) + 1) * t.maps.window) - 1} (no per-step maps in this trace)`, mean: "mean map of all steps (no per-step maps in this trace)" }[t.maps.kind];
  const head = state.head >= 0 && t.heads ? `head ${state.head}, mean of all steps` : kind;
  panel.info.append(`step ${state.step} `, el("b", "token", chipText(tok)), ` ${role}${t.forcedSet.has(state.step) ? ", inserted" : ""} · ${head} · ${layerLabel()}`);
  panel.info.dataset.token = tok;
}

function provenance(t) {
  const m = t.model, rows = [
    ["model", `${m.name || m.path} (${m.model_type})`], ["dtype / device", `${m.dtype} / ${m.device}`],
    ["layers captured", `${t.layers.length} of ${m.num_layers} (${m.num_heads} heads)`],
    ["steps", `${t.steps} captured; ${t.think_tokens} thinking + ${t.answer_tokens} answer tokens; stopped by ${t.stop_reason}`],
    ["image", `${t.image.width}×${t.image.height} → ${t.image.resized[0]}×${t.image.resized[1]}, ${t.image.rows}×${t.image.cols} tokens`],
    ["maps", { steps: "per step", windows: `per window of ${t.maps.window} steps`, mean: "mean of all steps" }[t.maps.kind]],
    ["trace", t.complete ? "complete" : "PARTIAL (the run was interrupted)"],
  ];
  const d = el("details"), table = el("table", "prov");
  d.appendChild(el("summary", null, "provenance and settings"));
  for (const [k, v] of rows) { const tr = el("tr"); tr.append(el("td", null, k), el("td", null, v)); table.appendChild(tr); }
  d.append(table, el("pre", null, JSON.stringify(t.settings, null, 1)));
  return d;
}

function buildPanel(index, slot) {
  const p = { slot, root: el("section", "panel") };
  const h2 = el("h2");
  p.title = el("span");
  h2.appendChild(p.title);
  if (TRACES.length > PANEL_COUNT) {
    p.select = el("select");
    TRACES.forEach((t, i) => p.select.appendChild(new Option(t.label, String(i))));
    p.select.addEventListener("change", () => { showTrace(p, Number(p.select.value)); refreshAll(); });
    h2.appendChild(p.select);
  }
  p.view = el("canvas", "view");
  p.grid = el("canvas");
  const cb = el("div", "colorbar");
  p.lo = el("span"); p.hi = el("span"); p.colorbar = el("canvas");
  p.colorbar.width = 256; p.colorbar.height = 1;
  cb.append(p.lo, p.colorbar, p.hi, el("span", null, "attention on each image token (one scale for all panels)"));
  p.info = el("div", "stepinfo");
  p.chips = el("div", "chips");
  const legend = el("div", "legend");
  legend.innerHTML = '<span><i style="background:var(--reason)"></i>reasoning</span><span><i style="background:var(--answer)"></i>answer</span><span><i style="border-bottom:2px solid var(--forced)"></i>inserted by length control</span>';
  const curves = el("div", "curves");
  p.curveSteps = el("canvas"); p.curveLayers = el("canvas");
  const roleLegend = el("div", "legend");
  for (const r of CURVE_ROLES) roleLegend.innerHTML += `<span><i style="background:${ROLE_COLOURS[r]}"></i>${r}</span>`;
  curves.append(p.curveSteps, roleLegend, p.curveLayers);
  p.prov = el("div");
  const stage = el("div", "stage"), left = el("div", "col"), right = el("div", "col");
  stage.appendChild(p.view);
  left.append(stage, cb, p.prov);
  right.append(p.info, p.chips, legend, curves);
  if (PANEL_COUNT === 1) p.root.classList.add("wide");
  p.root.append(h2, left, right);
  p.chips.addEventListener("mouseover", (e) => { const s = e.target.dataset && e.target.dataset.step; if (s !== undefined) hover(Number(s)); });
  p.chips.addEventListener("mouseleave", () => hover(state.pinned));
  p.chips.addEventListener("click", (e) => { const s = e.target.dataset && e.target.dataset.step; if (s !== undefined) pin(Number(s)); });
  $("panels").appendChild(p.root);
  showTrace(p, index);
  return p;
}

function showTrace(p, index) {
  const t = TRACES[index];
  p.trace = t; state.shown[p.slot] = index;
  if (p.select) p.select.value = String(index);
  p.title.textContent = t.label;
  p.grid.width = t.image.cols; p.grid.height = t.image.rows;
  const room = $("panels").clientWidth;
  const width = Math.floor(PANEL_COUNT === 1 ? Math.min(720, room * 0.55) : Math.min(720, (room - 18) / 2));
  p.view.style.width = width + "px";
  p.view.width = width; p.view.height = Math.round((width * t.image.height) / t.image.width);
  p.view.style.height = p.view.height + "px";
  buildChips(p);
  p.prov.textContent = "";
  p.prov.appendChild(provenance(t));
}

// ---- interaction ----------------------------------------------------------------------------
function hover(step) { state.step = step; redraw(); }
function pin(step) {
  const max = Math.max(...PANELS.map((p) => p.trace.tokens.length)) - 1;
  state.pinned = state.step = Math.max(0, Math.min(max, step));
  redraw();
  writeFragment();
}

function writeFragment() {
  const ref = TRACES[state.shown[0]].layers;
  const f = [`step=${state.pinned}`];
  if (state.mode === "one") f.push(`layer=${ref[state.a]}`);
  else if (state.mode === "range") f.push(`layers=${ref[Math.min(state.a, state.b)]}-${ref[Math.max(state.a, state.b)]}`);
  if (state.head >= 0) f.push(`head=${state.head}`);
  try { history.replaceState(null, "", "#" + f.join("&")); } catch (e) { /* some file:// hosts refuse */ }
}

function readFragment() {
  const q = new URLSearchParams(location.hash.slice(1));
  const ref = TRACES[state.shown[0]].layers, at = (l) => Math.max(0, ref.indexOf(Number(l)));
  if (q.has("step")) state.pinned = state.step = Math.max(0, Number(q.get("step")) || 0);
  if (q.has("layer") && q.get("layer") !== "all") { state.mode = "one"; state.a = state.b = at(q.get("layer")); }
  if (q.has("layers")) { const [a, b] = q.get("layers").split("-"); state.mode = "range"; state.a = at(a); state.b = at(b); }
  if (q.has("head")) state.head = Number(q.get("head"));
  if (q.has("cmap") && LUTS[q.get("cmap")]) state.cmap = q.get("cmap");
  if (q.has("alpha")) state.alpha = Math.max(0, Math.min(1, Number(q.get("alpha"))));
  if (q.has("smooth")) state.smooth = q.get("smooth") !== "0";
  return q;
}

function syncControls() {
  const ref = TRACES[state.shown[0]].layers;
  $("cmap").value = state.cmap; $("alpha").value = String(state.alpha); $("smooth").checked = state.smooth;
  $("layerMode").value = state.mode;
  for (const id of ["layerA", "layerB"]) $(id).max = String(ref.length - 1);
  $("layerA").value = String(state.a); $("layerB").value = String(state.b);
  $("layerAOut").textContent = ref[state.a]; $("layerBOut").textContent = ref[state.b];
  $("layerAWrap").hidden = state.mode === "all";
  $("layerBWrap").hidden = state.mode !== "range";
  $("head").value = String(state.head);
}

function refreshAll() { syncControls(); redraw(); }

function bindControls() {
  for (const name of Object.keys(LUTS)) $("cmap").appendChild(new Option(name, name));
  const heads = Math.max(0, ...TRACES.map((t) => (t.heads ? t.heads.heads : 0)));
  if (heads) {
    $("headWrap").hidden = false;
    $("head").appendChild(new Option("mean of heads (per step)", "-1"));
    for (let h = 0; h < heads; h++) $("head").appendChild(new Option(`head ${h} (all-step mean)`, String(h)));
  }
  const on = (id, ev, f) => $(id).addEventListener(ev, () => { f($(id)); refreshAll(); writeFragment(); });
  on("cmap", "change", (e) => (state.cmap = e.value));
  on("alpha", "input", (e) => (state.alpha = Number(e.value)));
  on("smooth", "change", (e) => (state.smooth = e.checked));
  on("layerMode", "change", (e) => (state.mode = e.value));
  on("layerA", "input", (e) => { state.a = Number(e.value); if (state.mode === "one") state.b = state.a; });
  on("layerB", "input", (e) => (state.b = Number(e.value)));
  on("head", "change", (e) => (state.head = Number(e.value)));
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    if (e.key === "ArrowRight") { pin(state.pinned + 1); e.preventDefault(); }
    if (e.key === "ArrowLeft") { pin(state.pinned - 1); e.preventDefault(); }
  });
  window.addEventListener("hashchange", () => { readFragment(); refreshAll(); });
}

// `#bench=N`: redraw N steps in turn and record the times (what a hover costs).
function bench(n) {
  const times = [];
  const last = Math.max(1, Math.max(...PANELS.map((p) => p.trace.steps)));
  for (let i = 0; i < n; i++) { state.step = i % last; times.push(redraw()); }
  times.sort((a, b) => a - b);
  const app = $("app"), mean = times.reduce((a, b) => a + b, 0) / times.length;
  app.dataset.benchN = String(n);
  app.dataset.benchMeanMs = mean.toFixed(3);
  app.dataset.benchP95Ms = times[Math.floor(0.95 * (times.length - 1))].toFixed(3);
  app.dataset.benchMaxMs = times[times.length - 1].toFixed(3);
  console.log(`rhlens report: ${n} redraws, mean ${mean.toFixed(2)} ms, max ${times[times.length - 1].toFixed(2)} ms`);
  state.step = state.pinned;
  redraw();
}

const PANEL_COUNT = DATA.layout === "sweep" ? 1 : Math.min(2, TRACES.length);

function start() {
  $("panels").style.setProperty("--panels", String(PANEL_COUNT));
  const first = TRACES[0];
  $("prompt").textContent = first.prompt;
  const random = TRACES.filter((t) => t.model.random_weights).map((t) => t.label);
  if (random.length) { $("warning").hidden = false; $("warning").textContent = `Random weights (${random.join(", ")}): these maps show the machinery, not what a trained model looks at.`; }
  const partial = TRACES.filter((t) => !t.complete).map((t) => t.label);
  if (partial.length) { $("warning").hidden = false; $("warning").textContent += ` Partial trace (${partial.join(", ")}).`; }
  state.shown = [0];
  const q = readFragment();
  for (let i = 0; i < PANEL_COUNT; i++) {
    const pick = q.has(i ? "trace2" : "trace") ? Number(q.get(i ? "trace2" : "trace")) : i;
    PANELS.push(buildPanel(Math.max(0, Math.min(TRACES.length - 1, pick || 0)), i));
  }
  readFragment();
  bindControls();
  refreshAll();
  for (const p of PANELS) if (p.selEl) p.chips.scrollTop = Math.max(0, p.selEl.offsetTop - 60);
  $("footer").textContent = `rhlens ${DATA.version} · ${TRACES.length} trace(s) · everything on this page is in this one file`;
  if (q.has("bench")) bench(Math.max(1, Number(q.get("bench")) || 100));
  $("app").dataset.ready = "1";
  flushDiag();
}

function whenImagesLoaded(f) {
  let left = IMAGES.length;
  if (!left) return f();
  const done = () => { if (--left === 0) f(); };
  for (const im of IMAGES) {
    if (im.complete) done();
    else { im.onload = done; im.onerror = () => { diag.note("image failed to decode"); done(); }; }
  }
}

try { whenImagesLoaded(start); } catch (e) { diag.note("error: " + (e && e.stack || e)); }
window.addEventListener("load", flushDiag);
