// The rnnlab playground: every number on this page comes from a backend. Served by `rnnlab serve`,
// that is the server's /api endpoints, which call the same rnnlab.api methods as a notebook and
// the CLI; exported as static files (`rnnlab export --format web`), it is the model running in
// this page (inpage.js), which answers with the same shapes. No framework, no build step: plain
// DOM, no inline script (the page's Content-Security-Policy forbids it).
"use strict";

// -- the page's state, mirrored in the URL (#run=...&prefix=...) so a view can be shared --------

const DEFAULTS = {
  run: "", compare: "", prefix: "", show: "10",
  steps: "100", strategy: "greedy", temperature: "1", top_k: "0", top_p: "1", beam: "5",
  seed: "0", gen: "",
  text: "", layer: "0", unit: "0", pattern: "", regex: "",
  metric: "loss", large: "",
};
const state = { ...DEFAULTS };
let RUNS = [];      // /api/runs: name, corpus, vocab_size, layers, units, configs
let PATTERNS = {};  // name -> description
let LIMITS = {};

const $ = (id) => document.getElementById(id);

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const key of Object.keys(DEFAULTS)) {
    state[key] = params.has(key) ? params.get(key) : DEFAULTS[key];
  }
}

function writeHash() {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) {
    if (value !== DEFAULTS[key]) params.set(key, value);
  }
  const hash = params.toString();
  history.replaceState(null, "", hash ? `#${hash}` : location.pathname);
}

function set(changes) {
  Object.assign(state, changes);
  writeHash();
}

// -- talking to the server -----------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// GET when body is undefined, else POST JSON. A 503 (busy) is retried after its Retry-After; any
// other refusal becomes an Error carrying the server's one-line message.
async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(path, options);
    if (response.status === 503 && attempt < 4) {
      await sleep(1000 * Number(response.headers.get("Retry-After") || 1));
      continue;
    }
    const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    return data;
  }
}

// What the page asks, and of whom: index.html's <meta name="rnnlab-backend"> says "server" (the
// page `rnnlab serve` sends) or "page" (a static export, whose model runs here).
const serverBackend = {
  runs: () => api("/api/runs"),
  metrics: (run) => api(`/api/metrics?run=${encodeURIComponent(run)}`),
  predict: (body) => api("/api/predict", body),
  score: (body) => api("/api/score", body),
  states: (body) => api("/api/states", body),
  units: (body) => api("/api/units", body),
};
let backend = serverBackend;

async function chooseBackend() {
  const meta = document.querySelector('meta[name="rnnlab-backend"]');
  if (!meta || meta.content !== "page") return serverBackend;
  $("next-status").textContent = "loading the model\u2026";  // the weights may take a moment
  const { pageBackend } = await import("./inpage.js");
  return pageBackend(new URL("model/", document.baseURI));
}

// At most one request per channel in flight; while one runs, only the newest waiting job is kept.
// Typing fast therefore never piles requests up on the server, and the last keystroke always wins.
const channels = new Map();
function latest(channel, job) {
  let ch = channels.get(channel);
  if (!ch) {
    ch = { busy: false, next: null };
    channels.set(channel, ch);
  }
  ch.next = job;
  if (!ch.busy) pump(ch);
}
async function pump(ch) {
  ch.busy = true;
  while (ch.next) {
    const job = ch.next;
    ch.next = null;
    try {
      await job();
    } catch (error) {
      console.error(error);  // a bug in a job must not stop the channel for good
    }
  }
  ch.busy = false;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// -- small DOM helpers ---------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// A character as it can be seen: a space, newline or tab would be invisible in a label.
function visible(c) {
  return { " ": "\u2423", "\n": "\u23ce", "\t": "\u21e5" }[c] ?? c;
}

// Bits as shown: null is what the server sends for an infinite surprisal (probability 0).
function bits(b) {
  return b === null ? "\u221e" : b.toFixed(3);
}

function status(id, message) {
  $(id).textContent = message ? `error: ${message}` : "";
}

function runsShown() {
  return [state.run, state.compare].filter((name, i, all) => name && all.indexOf(name) === i);
}

function runInfo(name) {
  return RUNS.find((r) => r.name === name);
}

function column(container, name) {
  const box = el("div", { class: "column", "data-run": name });
  if (runsShown().length > 1) {
    const info = runInfo(name);
    box.append(el("h3", { text: `${name}`, title: `${info.corpus}, ${info.model.cell}` }));
  }
  container.append(box);
  return box;
}

// One column per run: its answer, or (beside the other run's answer) its own refusal.
function renderColumns(container, names, results, render, statusId) {
  container.replaceChildren();
  const errors = [];
  results.forEach((result, i) => {
    const box = column(container, names[i]);
    if (result.status === "fulfilled") {
      render(box, result.value, names[i]);
      return;
    }
    const message = result.reason.message;
    if (names.length > 1) box.append(el("p", { class: "status", text: `error: ${message}` }));
    errors.push(names.length > 1 ? `${names[i]}: ${message}` : message);
  });
  status(statusId, errors.join("; "));
}

const settled = (names, request) => Promise.allSettled(names.map(request));

// Colours: white to red for surprisal; blue - white - red for an activation.
function heat(t) {
  const x = Math.max(0, Math.min(1, t));
  return `rgb(255, ${Math.round(255 - 190 * x)}, ${Math.round(255 - 200 * x)})`;
}
function diverging(v) {
  const x = Math.max(-1, Math.min(1, v));
  const a = Math.round(255 - 200 * Math.abs(x));
  return x >= 0 ? `rgb(255, ${a}, ${a})` : `rgb(${a}, ${a}, 255)`;
}

// -- next character ------------------------------------------------------------------------------

function predictBody(name, steps) {
  const body = { run: name, prefix: state.prefix, show: Number(state.show), steps };
  if (steps > 0) {
    body.strategy = state.strategy;
    if (state.strategy === "sample") {
      body.temperature = Number(state.temperature);
      body.top_k = Number(state.top_k);
      body.top_p = Number(state.top_p);
      body.seed = Number(state.seed);
    }
    if (state.strategy === "beam") body.beam = Number(state.beam);
  }
  return body;
}

function updateNext() {
  $("show-label").textContent = state.show;
  const container = $("next-columns");
  if (!state.prefix) {
    container.replaceChildren();
    status("next-status", "");
    return;
  }
  const names = runsShown();
  const prefix = state.prefix;
  latest("next", async () => {
    const results = await settled(names, (n) => backend.predict(predictBody(n, 0)));
    if (!state.prefix) return;  // cleared while the answer was on its way
    renderColumns(container, names, results, renderNext, "next-status");
    container.dataset.prefix = prefix;
  });
}

function renderNext(box, answer) {
  const list = el("ol", { class: "bars", "data-testid": "next-dist", "data-prefix": answer.prefix });
  for (const { char, prob } of answer.next) {
    const fill = el("span", { class: "fill" });
    fill.style.width = `${(100 * prob).toFixed(2)}%`;
    const item = el(
      "li",
      {
        class: "bar-row", "data-testid": "next-char", "data-char": char, "data-prob": String(prob),
        title: `${JSON.stringify(char)}: ${prob.toFixed(4)}`,
      },
      el("span", { class: "char mono", text: visible(char) }),
      el("span", { class: "bar" }, fill),
      el("span", { class: "prob", text: prob.toFixed(3) }),
    );
    item.addEventListener("click", () => {
      if (char === "<unk>") return;
      $("prefix").value = state.prefix + char;
      set({ prefix: $("prefix").value });
      updateNext();
      $("prefix").focus();
    });
    list.append(item);
  }
  box.append(list);
}

// -- continuation --------------------------------------------------------------------------------

function generate() {
  const container = $("gen-columns");
  if (!state.prefix) {
    status("gen-status", "type a prefix first");
    return;
  }
  set({ gen: "1" });
  const names = runsShown();
  const steps = Number(state.steps);
  latest("generate", async () => {
    $("generate").disabled = true;
    try {
      const results = await settled(names, (n) => backend.predict(predictBody(n, steps)));
      renderColumns(container, names, results, renderContinuation, "gen-status");
    } finally {
      $("generate").disabled = false;
    }
  });
}

function renderContinuation(box, answer, name) {
  box.append(
    el(
      "p",
      {
        class: "continuation mono", "data-testid": "continuation", "data-run": name,
        "data-continuation": answer.continuation,
      },
      el("span", { class: "given", text: answer.prefix }),
      el("span", { class: "generated", text: answer.continuation }),
    ),
  );
  const n = Array.from(answer.continuation).length;
  const lp = answer.log_prob;
  const figure = lp === null || n === 0 ? "" :
    `log-likelihood ${lp.toFixed(2)} nats (${(-lp / Math.LN2 / n).toFixed(3)} bits/char)`;
  box.append(el("p", { class: "figure", text: figure }));
}

// -- surprisal heat map --------------------------------------------------------------------------

function score() {
  const container = $("heat-columns");
  const text = state.text;
  if (Array.from(text).length < 2) {
    container.replaceChildren();
    $("mean-bits").textContent = "";
    status("text-status", text ? "give at least two characters" : "");
    return;
  }
  const names = runsShown();
  latest("score", async () => {
    const results = await settled(names, (n) => backend.score({ run: n, text, top: 5 }));
    renderColumns(container, names, results, (box, answer, name) =>
      renderHeat(box, answer, runInfo(name)), "text-status");
    $("mean-bits").textContent = results
      .map((r, i) => r.status !== "fulfilled" ? "" :
        `${names.length > 1 ? names[i] + ": " : ""}mean ${bits(r.value.mean_bits)} bits/char`)
      .filter(Boolean).join(", ");
    container.dataset.text = text;
  });
}

function renderHeat(box, answer, info) {
  const blind = Math.log2(info.vocab_size);  // the surprisal of a uniform guess
  const chars = Array.from(answer.text);
  const heatmap = el("div", { class: "heat mono", "data-testid": "heat" });
  heatmap.append(charSpan(chars[0], { class: "context", title: "context only" }));
  answer.chars.forEach((entry, i) => {
    const span = charSpan(entry.char, {
      "data-testid": "heat-char", "data-index": String(i + 1), "data-bits": String(entry.bits),
    });
    span.style.backgroundColor = heat(entry.bits === null ? 1 : entry.bits / blind);
    span.addEventListener("mouseenter", (event) => showTip(event, entry));
    span.addEventListener("mouseleave", hideTip);
    heatmap.append(span);
  });
  box.append(heatmap);
}

// One character of a heat map; a newline also breaks the line, so the text keeps its shape.
function charSpan(c, attrs) {
  const span = el("span", { class: `ch ${attrs.class || ""}`.trim(), text: c === "\n" ? visible(c) : c });
  for (const [key, value] of Object.entries(attrs)) if (key !== "class") span.setAttribute(key, value);
  if (c === "\n") span.classList.add("newline");
  return span;
}

function showTip(event, entry) {
  const tip = $("tip");
  tip.replaceChildren(
    el("strong", { text: `${JSON.stringify(entry.char)}  ${bits(entry.bits)} bits` }),
    el("div", { text: "the model expected:" }),
    ...entry.top.map((t) => el("div", { class: "mono", text: `${visible(t.char)}  ${t.prob.toFixed(3)}` })),
  );
  tip.hidden = false;
  const box = event.target.getBoundingClientRect();
  tip.style.left = `${Math.min(window.scrollX + box.left, window.scrollX + window.innerWidth - tip.offsetWidth - 8)}px`;
  tip.style.top = `${window.scrollY + box.bottom + 6}px`;
}
function hideTip() {
  $("tip").hidden = true;
}

// -- hidden units --------------------------------------------------------------------------------

// The regex pattern runs here, in the page, never on the server (a slow regex can only stall
// this tab): 1 on every character inside a match, by code point as the server counts them.
function regexSignal(text, source) {
  const re = new RegExp(source, "gu");
  const chars = Array.from(text);
  const index = [];  // UTF-16 offset -> code point index
  chars.forEach((c, i) => { for (let k = 0; k < c.length; k++) index.push(i); });
  index.push(chars.length);
  const signal = new Array(chars.length).fill(0);
  for (const m of text.matchAll(re)) {
    for (let i = index[m.index]; i < index[m.index + m[0].length]; i++) signal[i] = 1;
  }
  return signal;
}

let lastSignal = null;  // the pattern's values on the text, to underline where it holds

// Rank the units for the chosen pattern; `pickFirst` shows the best one, else the unit chosen.
function rankUnits(pickFirst = true) {
  const text = state.text;
  if (Array.from(text).length < 2) {
    status("units-status", "paste a text of at least two characters above");
    return;
  }
  if (!state.pattern) {
    status("units-status", "choose a pattern");
    return;
  }
  if (state.pattern === "regex" && !state.regex) {
    status("units-status", "type a regular expression");
    return;
  }
  const body = { run: state.run, text, top: 12 };
  try {
    if (state.pattern === "regex") body.signal = regexSignal(text, state.regex);
    else body.pattern = state.pattern;
  } catch (error) {
    status("units-status", `bad regular expression: ${error.message}`);
    return;
  }
  latest("units", async () => {
    try {
      const answer = await backend.units(body);
      lastSignal = { text, signal: answer.signal };
      const list = $("units");
      list.replaceChildren();
      for (const u of answer.units) {
        const item = el("li", {
          class: "unit", tabindex: "0", "data-testid": "unit", "data-layer": String(u.layer),
          "data-unit": String(u.unit), "data-r": String(u.r),
          text: `layer ${u.layer} unit ${u.unit}   r = ${u.r >= 0 ? "+" : ""}${u.r.toFixed(3)}`,
        });
        const pick = () => chooseUnit(u.layer, u.unit);
        item.addEventListener("click", pick);
        item.addEventListener("keydown", (e) => { if (e.key === "Enter") pick(); });
        list.append(item);
      }
      status("units-status", "");
      if (pickFirst && answer.units.length) chooseUnit(answer.units[0].layer, answer.units[0].unit);
      else showActivations();
    } catch (error) {
      status("units-status", error.message);
    }
  });
}

function chooseUnit(layer, unit) {
  $("layer").value = String(layer);
  $("unit").value = String(unit);
  set({ layer: String(layer), unit: String(unit) });
  showActivations();
}

function showActivations() {
  const text = state.text;
  const acts = $("acts");
  if (!text) {
    acts.replaceChildren();
    return;
  }
  const body = { run: state.run, text, layer: Number(state.layer), unit: Number(state.unit) };
  latest("states", async () => {
    try {
      const answer = await backend.states(body);
      const scale = Math.max(1, ...answer.values.map(Math.abs));  // tanh units stay in [-1, 1]
      // Underline where a yes/no pattern holds (a count, like a position, would mark everything).
      const signal = lastSignal && lastSignal.text === text &&
        lastSignal.signal.every((v) => v === 0 || v === 1) ? lastSignal.signal : null;
      acts.replaceChildren();
      acts.dataset.layer = String(answer.layer);
      acts.dataset.unit = String(answer.unit);
      Array.from(answer.text).forEach((c, i) => {
        const v = answer.values[i];
        const span = charSpan(c, { "data-testid": "act-char", "data-value": String(v), title: v.toFixed(3) });
        span.style.backgroundColor = diverging(v / scale);
        if (signal && signal[i] > 0) span.classList.add("on");
        acts.append(span);
      });
      status("units-status", "");
    } catch (error) {
      acts.replaceChildren();
      status("units-status", error.message);
    }
  });
}

function fillLayers() {
  const info = runInfo(state.run);
  const layer = $("layer");
  layer.replaceChildren(...Array.from({ length: info.layers }, (_, i) =>
    el("option", { value: String(i), text: String(i) })));
  if (Number(state.layer) >= info.layers) state.layer = "0";
  if (Number(state.unit) >= info.units) state.unit = "0";
  layer.value = state.layer;
  $("unit").max = String(info.units - 1);
  $("unit").value = state.unit;
}

// -- training curves and config ------------------------------------------------------------------

const COLOURS = ["#2563eb", "#dc2626"];
let curves = [];  // [{name, epochs}] for the runs shown

function loadCurves() {
  const names = runsShown();
  latest("metrics", async () => {
    try {
      curves = await Promise.all(names.map(async (name) => ({
        name, epochs: (await backend.metrics(name)).epochs,
      })));
      drawCurves();
      renderConfig(names);
      status("train-status", curves.every((c) => !c.epochs.length) ? "no metrics.csv in these runs" : "");
    } catch (error) {
      status("train-status", error.message);
    }
  });
}

function drawCurves() {
  const canvas = $("curves");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 400;
  const height = canvas.clientHeight || 240;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const style = getComputedStyle(document.documentElement);
  const ink = style.getPropertyValue("--ink").trim() || "#111";
  const font = parseFloat(style.fontSize) * 0.75;
  g.font = `${font}px system-ui, sans-serif`;
  const metric = state.metric;
  const series = [];
  curves.forEach((c, i) => {
    for (const [part, dash] of [["train", []], ["valid", [6, 4]]]) {
      const points = c.epochs
        .map((row) => [row.epoch, row[`${part}_${metric}`]])
        .filter(([x, y]) => x !== null && y !== null && Number.isFinite(y));
      if (points.length) series.push({ name: c.name, part, dash, colour: COLOURS[i % 2], points });
    }
  });
  const legend = $("legend");
  legend.replaceChildren(...series.map((s) => {
    const swatch = el("span", { class: `swatch ${s.part}` });
    swatch.style.borderColor = s.colour;
    return el("li", {}, swatch, `${s.name} ${s.part === "train" ? "training text" : "held-out text"}`);
  }));
  if (!series.length) return;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = { left: font * 4, right: font, top: font, bottom: font * 2.5 };
  const X = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const Y = (y) => height - pad.bottom - ((y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  g.strokeStyle = ink;
  g.fillStyle = ink;
  g.lineWidth = 1;
  g.beginPath();
  g.moveTo(pad.left, pad.top);
  g.lineTo(pad.left, height - pad.bottom);
  g.lineTo(width - pad.right, height - pad.bottom);
  g.stroke();
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (let k = 0; k <= 4; k++) {
    const y = y0 + ((y1 - y0) * k) / 4;
    g.fillText(y.toPrecision(3), pad.left - 4, Y(y));
  }
  g.textAlign = "center";
  g.textBaseline = "top";
  const step = Math.max(1, Math.ceil((x1 - x0) / 8));
  for (let x = Math.ceil(x0); x <= x1; x += step) g.fillText(String(x), X(x), height - pad.bottom + 4);
  g.fillText("epoch", (pad.left + width) / 2, height - font * 1.2);
  for (const s of series) {
    g.strokeStyle = s.colour;
    g.lineWidth = 2;
    g.setLineDash(s.dash);
    g.beginPath();
    s.points.forEach(([x, y], k) => (k ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
    g.stroke();
  }
  g.setLineDash([]);
}

function renderConfig(names) {
  const table = $("config");
  const infos = names.map(runInfo);
  const rows = [["corpus", (r) => r.corpus], ["vocabulary", (r) => r.vocab_size],
    ["parameters", (r) => r.parameters.toLocaleString("en")], ["checkpoint", (r) => r.checkpoint]];
  for (const group of ["model", "train", "data"]) {
    for (const key of Object.keys(infos[0][group])) {
      if (group === "data" && key === "corpus") continue;
      rows.push([`${group}.${key}`, (r) => r[group][key]]);
    }
  }
  table.replaceChildren(
    el("tr", {}, el("th", { text: "" }), ...infos.map((r) => el("th", { text: r.name }))),
    ...rows.map(([label, get]) => el("tr", {}, el("th", { text: label }),
      ...infos.map((r) => el("td", { class: "mono", text: String(get(r) ?? "\u2014") })))),
  );
}

// -- wiring --------------------------------------------------------------------------------------

function applyState() {
  $("run").value = state.run;
  $("compare").value = state.compare;
  for (const key of ["prefix", "show", "steps", "strategy", "temperature", "top_k", "top_p",
    "beam", "seed", "text", "pattern", "regex", "metric"]) {
    $(key).value = state[key];
  }
  document.documentElement.classList.toggle("large", state.large === "1");
  $("large").setAttribute("aria-pressed", state.large === "1" ? "true" : "false");
  $("regex-label").hidden = state.pattern !== "regex";
  fillLayers();
  syncStrategy();
}

function syncStrategy() {
  const s = state.strategy;
  for (const key of ["temperature", "top_k", "top_p", "seed"]) $(key).disabled = s !== "sample";
  $("beam").disabled = s !== "beam";
}

function refreshAll() {
  updateNext();
  score();
  if (state.gen && state.prefix) generate();
  if (state.text) {
    if (state.pattern) rankUnits(false);  // keeps the unit the link names
    else showActivations();
  }
  loadCurves();
}

async function init() {
  let answer;
  try {
    backend = await chooseBackend();
    answer = await backend.runs();
  } catch (error) {
    status("next-status", error.message);
    return;
  }
  RUNS = answer.runs;
  PATTERNS = answer.patterns;
  LIMITS = answer.limits;
  $("prefix").maxLength = LIMITS.prefix;
  $("text").maxLength = LIMITS.text;
  $("steps").max = String(LIMITS.steps);
  $("beam").max = String(LIMITS.beam);
  $("show").max = String(LIMITS.show);
  for (const r of RUNS) {
    const label = `${r.name} (${r.corpus}, ${r.model.cell} ${r.layers}x${r.model.hidden})`;
    $("run").append(el("option", { value: r.name, text: label }));
    $("compare").append(el("option", { value: r.name, text: label }));
  }
  $("pattern").append(el("option", { value: "", text: "(choose)" }),
    ...Object.entries(PATTERNS).map(([name, help]) =>
      el("option", { value: name, title: help, text: name.replace("_", " ") })));

  readHash();
  // Text typed while the runs were on their way is kept: the link's empty default must not
  // wipe it, and its answer is asked for below like any other.
  for (const key of ["prefix", "text"]) {
    if ($(key).value && state[key] === DEFAULTS[key]) state[key] = $(key).value;
  }
  if (!runInfo(state.run)) state.run = RUNS[0].name;
  if (state.compare && !runInfo(state.compare)) state.compare = "";
  applyState();
  writeHash();
  refreshAll();

  const typed = debounce(updateNext, 60);
  $("prefix").addEventListener("input", () => { set({ prefix: $("prefix").value }); typed(); });
  $("show").addEventListener("change", () => { set({ show: $("show").value }); updateNext(); });
  $("run").addEventListener("change", () => {
    set({ run: $("run").value });
    fillLayers();
    refreshAll();
  });
  $("compare").addEventListener("change", () => { set({ compare: $("compare").value }); refreshAll(); });
  for (const key of ["steps", "temperature", "top_k", "top_p", "beam", "seed"]) {
    $(key).addEventListener("change", () => set({ [key]: $(key).value }));
  }
  $("strategy").addEventListener("change", () => { set({ strategy: $("strategy").value }); syncStrategy(); });
  $("generate").addEventListener("click", generate);
  const edited = debounce(() => {
    score();
    if (state.pattern) rankUnits(false);
    else showActivations();
  }, 400);
  $("text").addEventListener("input", () => { set({ text: $("text").value }); edited(); });
  $("score").addEventListener("click", score);
  $("layer").addEventListener("change", () => { set({ layer: $("layer").value }); showActivations(); });
  $("unit").addEventListener("change", () => { set({ unit: $("unit").value }); showActivations(); });
  $("pattern").addEventListener("change", () => {
    set({ pattern: $("pattern").value });
    $("regex-label").hidden = state.pattern !== "regex";
    if (state.pattern && state.pattern !== "regex") rankUnits();
    else $("units").replaceChildren();
  });
  $("regex").addEventListener("change", () => { set({ regex: $("regex").value }); rankUnits(); });
  $("rank").addEventListener("click", () => rankUnits());
  $("metric").addEventListener("change", () => { set({ metric: $("metric").value }); drawCurves(); });
  $("large").addEventListener("click", () => {
    set({ large: state.large === "1" ? "" : "1" });
    applyState();
    drawCurves();
  });
  $("share").addEventListener("click", async () => {
    writeHash();
    try {
      await navigator.clipboard.writeText(location.href);
      $("share-status").textContent = "link copied";
    } catch {
      $("share-status").textContent = location.href;
    }
  });
  window.addEventListener("hashchange", () => { readHash(); applyState(); refreshAll(); });
  new ResizeObserver(debounce(drawCurves, 100)).observe($("curves"));
  document.body.dataset.ready = "true";  // every control answers from here on
}

document.addEventListener("DOMContentLoaded", init);
