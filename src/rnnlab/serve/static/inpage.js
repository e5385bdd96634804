// The in-page model: an rnnlab language model run by the page itself, for a static export
// (`rnnlab export RUN --format web`). It reads model/model.json and model/weights.bin and answers
// the playground's questions with the same JSON shapes as the server's /api endpoints, so
// app.js cannot tell the two apart. No library, no WebAssembly: a forward pass of a few dozen
// lines per cell over the weights, in float64 (PyTorch computes in float32; the two agree on
// every probability to about 1e-6, tests/test_export_browser.py holds them to 1e-4).
//
// The equations are PyTorch's (nn.RNN, nn.GRU, nn.LSTM), with its packed weight layout:
//   rnn:  h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
//   gru:  r, z = sigmoid(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z})
//         n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h' = (1 - z) * n + z * h
//   lstm: i, f, o = sigmoid(...), g = tanh(...) (rows in the order i, f, g, o)
//         c' = f * c + i * g;  h' = o * tanh(c')
// then logits = W_out h_top + b_out, the input x being a one-hot id or an embedding row.

const GATES = { rnn: 1, gru: 3, lstm: 4 };

// -- the model -----------------------------------------------------------------------------------

export class Model {
  constructor(meta, buffer) {
    if (buffer.byteLength !== meta.weights_bytes) {
      throw new Error(`model/weights.bin is ${buffer.byteLength} bytes where model.json says ` +
        `${meta.weights_bytes}: export the model again`);
    }
    this.cell = meta.cell;
    this.L = meta.layers;
    this.H = meta.hidden;
    this.E = meta.embed;  // 0: one-hot inputs
    this.vocab = meta.vocabulary;
    this.V = this.vocab.length;
    this.ids = new Map(this.vocab.map((token, i) => [token, i]));
    this.ids.delete(meta.unknown);  // "<unk>" is a slot, not a character a text can hold
    const floats = littleEndianFloats(buffer);
    const tensor = (name) => {
      const { shape, offset } = meta.tensors[name];
      return floats.subarray(offset, offset + shape.reduce((a, b) => a * b, 1));
    };
    this.layers = [];
    for (let l = 0; l < this.L; l++) {
      this.layers.push({
        Wih: tensor(`rnn.weight_ih_l${l}`), Whh: tensor(`rnn.weight_hh_l${l}`),
        bih: tensor(`rnn.bias_ih_l${l}`), bhh: tensor(`rnn.bias_hh_l${l}`),
        inputs: l === 0 ? (this.E || this.V) : this.H,
      });
    }
    this.embedding = this.E > 0 ? tensor("embedding.weight") : null;
    this.Wout = tensor("output.weight");
    this.bout = tensor("output.bias");
    const G = GATES[this.cell] * this.H;
    this.gi = new Float64Array(G);  // scratch: W_ih x + b_ih
    this.gh = new Float64Array(G);  // scratch: W_hh h + b_hh
  }

  // The zero state: one {h, c} per layer (c only for an LSTM).
  begin() {
    return Array.from({ length: this.L }, () => ({
      h: new Float64Array(this.H), c: this.cell === "lstm" ? new Float64Array(this.H) : null,
    }));
  }

  static copy(state) {
    return state.map(({ h, c }) => ({ h: h.slice(), c: c ? c.slice() : null }));
  }

  // Read one character id: update `state` in place, return the logits (V) for the next one.
  step(id, state) {
    const H = this.H;
    const { gi, gh } = this;
    for (let l = 0; l < this.L; l++) {
      const { Wih, Whh, bih, bhh, inputs } = this.layers[l];
      const rows = gi.length;
      if (l === 0 && !this.embedding) {
        for (let i = 0; i < rows; i++) gi[i] = bih[i] + Wih[i * inputs + id];  // one-hot: a column
      } else {
        const x = l === 0 ? this.embedding.subarray(id * inputs, (id + 1) * inputs) : state[l - 1].h;
        matvec(Wih, x, bih, gi, rows, inputs);
      }
      const { h, c } = state[l];
      matvec(Whh, h, bhh, gh, rows, H);
      if (this.cell === "rnn") {
        for (let j = 0; j < H; j++) h[j] = Math.tanh(gi[j] + gh[j]);
      } else if (this.cell === "gru") {
        for (let j = 0; j < H; j++) {
          const r = sigmoid(gi[j] + gh[j]);
          const z = sigmoid(gi[H + j] + gh[H + j]);
          const n = Math.tanh(gi[2 * H + j] + r * gh[2 * H + j]);
          h[j] = (1 - z) * n + z * h[j];
        }
      } else {
        for (let j = 0; j < H; j++) {
          const i = sigmoid(gi[j] + gh[j]);
          const f = sigmoid(gi[H + j] + gh[H + j]);
          const g = Math.tanh(gi[2 * H + j] + gh[2 * H + j]);
          const o = sigmoid(gi[3 * H + j] + gh[3 * H + j]);
          c[j] = f * c[j] + i * g;
          h[j] = o * Math.tanh(c[j]);
        }
      }
    }
    const logits = new Float64Array(this.V);
    matvec(this.Wout, state[this.L - 1].h, this.bout, logits, this.V, H);
    return logits;
  }

  // Ids of a text (by code point, as Python counts characters), refusing unseen characters.
  encode(text, what) {
    const chars = Array.from(text);
    const unknown = [...new Set(chars.filter((c) => !this.ids.has(c)))];
    if (unknown.length) {
      throw new Error(`${what} has characters not in the model's vocabulary: ` +
        `${unknown.map(pyRepr).join(" ")}; use only characters from the training text`);
    }
    return chars.map((c) => this.ids.get(c));
  }
}

// out = W x + b, W (rows, cols) row-major. Four running sums let the engine overlap the
// multiply-adds: 1.5x faster than one sum in V8, the same result to float64 rounding.
function matvec(W, x, b, out, rows, cols) {
  const end = cols - (cols % 4);
  for (let i = 0; i < rows; i++) {
    const base = i * cols;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let j = 0;
    for (; j < end; j += 4) {
      s0 += W[base + j] * x[j];
      s1 += W[base + j + 1] * x[j + 1];
      s2 += W[base + j + 2] * x[j + 2];
      s3 += W[base + j + 3] * x[j + 3];
    }
    for (; j < cols; j++) s0 += W[base + j] * x[j];
    out[i] = b[i] + ((s0 + s1) + (s2 + s3));
  }
}

function sigmoid(x) {
  return 1 / (1 + Math.exp(-x));
}

function littleEndianFloats(buffer) {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] === 1) return new Float32Array(buffer);
  const view = new DataView(buffer);  // a big-endian machine: read each value the long way
  return Float32Array.from({ length: buffer.byteLength / 4 }, (_, i) => view.getFloat32(4 * i, true));
}

// A string as Python's repr() shows it, for messages that match the server's word for word.
function pyRepr(s) {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  const escaped = Array.from(s).map((c) => {
    if (c === "\\" || c === quote) return `\\${c}`;
    return { "\n": "\\n", "\t": "\\t", "\r": "\\r" }[c] ?? c;
  });
  return quote + escaped.join("") + quote;
}

// -- distributions and decoding (rnnlab.decoding, for one row) ----------------------------------

export function logSoftmax(logits) {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return logits.map((v) => v - lse);
}

function softmax(logits) {
  return logSoftmax(logits).map(Math.exp);
}

// The k largest entries' indices, largest first (the earlier index first on a tie): O(k V).
function topIndices(values, k) {
  const best = [];
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (best.length === k && !(v > values[best[k - 1]])) continue;
    let at = best.length;
    while (at > 0 && values[best[at - 1]] < v) at--;
    best.splice(at, 0, i);
    if (best.length > k) best.pop();
  }
  return best;
}

// Every index, largest value first (the earlier index first on a tie): O(V log V).
function sortedIndices(values) {
  return Array.from(values.keys()).sort((a, b) =>
    (values[b] > values[a]) - (values[b] < values[a]) || a - b);
}

function argmax(values) {
  return topIndices(values, 1)[0];
}

// decoding.filter_logits: -inf outside the top-k, and outside the nucleus of mass top_p.
function filterLogits(logits, topK, topP) {
  let out = logits.slice();
  const V = out.length;
  if (topK > 0 && topK < V) {
    const keep = new Set(sortedIndices(out).slice(0, topK));
    out = out.map((v, i) => (keep.has(i) ? v : -Infinity));
  }
  if (topP < 1) {
    const order = sortedIndices(out);
    const probs = softmax(Float64Array.from(order, (i) => out[i]));
    let before = 0;  // mass of the strictly more likely tokens
    order.forEach((i, rank) => {
      if (rank > 0 && before >= topP) out[i] = -Infinity;
      before += probs[rank];
    });
  }
  return out;
}

// A seeded generator of uniform numbers in [0, 1) (mulberry32): the same seed, the same text.
// It is the page's own stream: a sample here is reproducible, not equal to PyTorch's.
function generator(seed) {
  const big = BigInt(seed);  // up to 2**63 - 1, as the server takes: fold the high half in
  const low = Number(big & 0xffffffffn);
  const high = Number((big >> 32n) & 0xffffffffn);
  let a = (low ^ Math.imul(high, 0x85ebca6b) ^ 0x9e3779b9) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function draw(probs, random) {
  let u = random();
  for (let i = 0; i < probs.length; i++) {
    u -= probs[i];
    if (u < 0 && probs[i] > 0) return i;
  }
  return argmax(probs);  // rounding left a sliver: the likeliest
}

// Greedy or sampled: one id per step, each fed back; log_prob under the model's own (T = 1,
// unfiltered) distribution, as decoding._run records it.
function run(model, state, start, steps, pick) {
  const ids = [];
  let logProb = 0;
  let id = start;
  for (let s = 0; s < steps; s++) {
    const logits = model.step(id, state);
    id = pick(logits);
    ids.push(id);
    logProb += logSoftmax(logits)[id];
  }
  return { ids, logProb };
}

// decoding.beam_search without an end token: the `beam` likeliest prefixes, best returned.
function beamSearch(model, state, start, steps, beam) {
  let hyps = [{ state, ids: [], score: 0, next: start }];
  for (let s = 0; s < steps; s++) {
    const candidates = [];
    for (const [k, hyp] of hyps.entries()) {
      const logp = logSoftmax(model.step(hyp.next, hyp.state));
      for (let v = 0; v < logp.length; v++) candidates.push({ k, v, score: hyp.score + logp[v] });
    }
    candidates.sort((a, b) => b.score - a.score);  // stable: ties keep beam-then-id order
    hyps = candidates.slice(0, beam).map(({ k, v, score }) => ({
      state: Model.copy(hyps[k].state), ids: [...hyps[k].ids, v], score, next: v,
    }));
  }
  return { ids: hyps[0].ids, logProb: hyps[0].score };
}

// -- the backend: /api's answers, computed here --------------------------------------------------

function need(ok, message) {
  if (!ok) throw new Error(message);
}

function length(text) {
  return Array.from(text).length;
}

function finiteOrNull(x) {
  return Number.isFinite(x) ? x : null;
}

// rnnlab.api.pattern_signal: one number per character, the pattern after reading it.
const QUOTE_PAIRS = { "\u201c": "\u201d", "\u300c": "\u300d", "\u300e": "\u300f" };
const CLOSING_QUOTES = new Set(Object.values(QUOTE_PAIRS));
const OPEN_BRACKETS = new Set("([{\uff08\u3010\uff3b\uff5b");
const CLOSE_BRACKETS = new Set(")]}\uff09\u3011\uff3d\uff5d");
const ALNUM = /^[\p{L}\p{N}]$/u;  // Python's str.isalnum
const SPACE = /^[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/u;
const SIGNALS = {
  quotes(chars) {
    let inside = 0;
    return chars.map((c) => {
      if (c === '"') inside = 1 - inside;
      else if (c in QUOTE_PAIRS) inside = 1;
      else if (CLOSING_QUOTES.has(c)) inside = 0;
      return inside;
    });
  },
  brackets(chars) {
    let depth = 0;
    return chars.map((c) => {
      if (OPEN_BRACKETS.has(c)) depth += 1;
      else if (CLOSE_BRACKETS.has(c)) depth = Math.max(0, depth - 1);
      return depth;
    });
  },
  word_position(chars) {
    let n = 0;
    return chars.map((c) => (n = ALNUM.test(c) ? n + 1 : 0));
  },
  line_position(chars) {
    let n = 0;
    return chars.map((c) => (n = c === "\n" ? 0 : n + 1));
  },
  after_space(chars) {
    return chars.map((c) => (SPACE.test(c) ? 1 : 0));
  },
};

// rnnlab.api.rank_units: Pearson's r of every unit with the signal, strongest |r| first.
function rankUnits(states, L, H, signal, top) {
  const T = states.length;
  need(signal.length === T, `the signal has ${signal.length} values for ${T} characters: give one each`);
  need(signal.every(Number.isFinite), "the signal holds a value that is not a finite number");
  const mean = signal.reduce((a, b) => a + b, 0) / T;
  const s = signal.map((v) => v - mean);
  const sNorm = Math.hypot(...s);
  need(sNorm > 0, "the pattern is the same at every character of this text: choose a text " +
    "where it changes, or another pattern");
  const scores = [];
  for (let l = 0; l < L; l++) {
    for (let u = 0; u < H; u++) {
      let m = 0;
      for (let t = 0; t < T; t++) m += states[t][l][u];
      m /= T;
      let dot = 0;
      let norm2 = 0;
      for (let t = 0; t < T; t++) {
        const a = states[t][l][u] - m;
        dot += a * s[t];
        norm2 += a * a;
      }
      const denom = Math.sqrt(norm2) * sNorm;
      const r = denom > 0 ? Math.max(-1, Math.min(1, dot / denom)) : 0;
      scores.push({ layer: l, unit: u, r });
    }
  }
  scores.sort((a, b) => Math.abs(b.r) - Math.abs(a.r));  // stable: layer by layer, unit by unit
  return scores.slice(0, Math.min(top, L * H));
}

export class PageBackend {
  constructor(model, meta) {
    this.model = model;
    this.meta = meta;
    this.name = meta.run.name;
    this.limits = meta.limits;
  }

  check(body) {
    need(body.run === this.name, `unknown run ${pyRepr(String(body.run))}: this page has ` +
      `${pyRepr(this.name)}`);
  }

  // The hidden state of every layer after each character: states[t][layer] (an LSTM's h).
  statesOf(ids) {
    const state = this.model.begin();
    return ids.map((id) => {
      this.model.step(id, state);
      return state.map(({ h }) => h.slice());
    });
  }

  async runs() {
    return { runs: [this.meta.run], limits: this.limits, patterns: this.meta.patterns };
  }

  async metrics(run) {
    this.check({ run });
    return { run, epochs: this.meta.epochs };
  }

  async predict(body) {
    this.check(body);
    const { prefix } = body;
    const steps = body.steps ?? 0;
    const show = body.show ?? 10;
    const lim = this.limits;
    need(length(prefix) >= 1, "the prefix is empty: give at least one character");
    need(length(prefix) <= lim.prefix, `the prefix is longer than ${lim.prefix} characters`);
    need(Number.isInteger(steps) && steps >= 0 && steps <= lim.steps,
      `steps must be between 0 and ${lim.steps}`);
    need(Number.isInteger(show) && show >= 1 && show <= lim.show,
      `show must be between 1 and ${lim.show}`);
    const model = this.model;
    const ids = model.encode(prefix, `prefix ${pyRepr(prefix)}`);
    const state = model.begin();
    for (const id of ids.slice(0, -1)) model.step(id, state);
    const start = ids[ids.length - 1];
    const probs = softmax(model.step(start, Model.copy(state)));
    const next = topIndices(probs, Math.min(show, model.V))
      .map((i) => ({ char: model.vocab[i], prob: probs[i] }));
    // GenerateConfig.decode_config: sampling asked for by its options, temperature 0 is greedy.
    const temperature = body.temperature ?? 1;
    const topK = body.top_k ?? 0;
    const topP = body.top_p ?? 1;
    need(temperature >= 0 && temperature <= 100, "temperature must be between 0 and 100");
    need(Number.isInteger(topK) && topK >= 0, "top_k must be 0 or more");
    need(topP > 0 && topP <= 1, "top_p must be in (0, 1]");
    let strategy = body.strategy ?? (body.temperature || topK > 0 || topP < 1 ? "sample" : "greedy");
    if (strategy === "sample" && temperature === 0) strategy = "greedy";
    let result;
    if (strategy === "greedy") {
      result = run(model, state, start, steps, argmax);
    } else if (strategy === "sample") {
      const seed = body.seed ?? 0;
      need(Number.isInteger(seed) && seed >= 0, "seed must be a whole number, 0 or more");
      const random = generator(seed);
      result = run(model, state, start, steps, (logits) =>
        draw(softmax(filterLogits(logits.map((v) => v / temperature), topK, topP)), random));
    } else if (strategy === "beam") {
      const beam = body.beam ?? 5;
      need(Number.isInteger(beam) && beam >= 1 && beam <= lim.beam,
        `beam must be between 1 and ${lim.beam}`);
      result = beamSearch(model, state, start, steps, beam);
    } else {
      throw new Error(`unknown strategy ${pyRepr(String(strategy))}: use greedy, sample or beam`);
    }
    return {
      prefix,
      next,
      continuation: result.ids.map((i) => model.vocab[i]).join(""),
      log_prob: finiteOrNull(result.logProb),
    };
  }

  async score(body) {
    this.check(body);
    const { text } = body;
    const top = body.top ?? 3;
    const n = length(text);
    need(n >= 2, "text to score needs at least two characters (the first is only context)");
    need(n <= this.limits.text, `the text is longer than ${this.limits.text} characters`);
    need(Number.isInteger(top) && top >= 1 && top <= this.limits.alternatives,
      `top must be between 1 and ${this.limits.alternatives}`);
    const model = this.model;
    const ids = model.encode(text, "text");
    const state = model.begin();
    const chars = [];
    let total = 0;
    for (let t = 0; t + 1 < ids.length; t++) {
      const logp = logSoftmax(model.step(ids[t], state));
      const bits = -logp[ids[t + 1]] / Math.LN2;
      total += bits;
      const probs = logp.map(Math.exp);
      chars.push({
        char: model.vocab[ids[t + 1]],
        bits: finiteOrNull(bits),
        top: topIndices(probs, Math.min(top, model.V))
          .map((i) => ({ char: model.vocab[i], prob: probs[i] })),
      });
    }
    return { text, chars, mean_bits: finiteOrNull(total / chars.length) };
  }

  async states(body) {
    this.check(body);
    const { text } = body;
    const layer = body.layer ?? 0;
    const unit = body.unit ?? 0;
    const { L, H } = this.model;
    need(length(text) >= 1, "the text is empty: give at least one character");
    need(length(text) <= this.limits.text, `the text is longer than ${this.limits.text} characters`);
    need(layer < L, `layer ${layer} does not exist: the model has ${L} (0 to ${L - 1})`);
    need(unit < H, `unit ${unit} does not exist: a layer has ${H} (0 to ${H - 1})`);
    const states = this.statesOf(this.model.encode(text, "text"));
    return { text, layer, unit, layers: L, units: H, values: states.map((s) => s[layer][unit]) };
  }

  async units(body) {
    this.check(body);
    const { text } = body;
    const pattern = body.pattern ?? null;
    const top = body.top ?? 10;
    need(length(text) >= 2, "the text needs at least two characters");
    need(length(text) <= this.limits.text, `the text is longer than ${this.limits.text} characters`);
    need((pattern === null) !== (body.signal == null),
      "give a pattern name or a signal (one number per character)");
    need(pattern === null || pattern in SIGNALS, `unknown pattern ${pyRepr(String(pattern))}`);
    need(Number.isInteger(top) && top >= 1 && top <= this.limits.top_units,
      `top must be between 1 and ${this.limits.top_units}`);
    const states = this.statesOf(this.model.encode(text, "text"));
    const signal = pattern === null ? body.signal : SIGNALS[pattern](Array.from(text));
    return { pattern, signal, units: rankUnits(states, this.model.L, this.model.H, signal, top) };
  }
}

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot read ${url.pathname}: HTTP ${response.status}`);
  return response;
}

// The backend of a static export: the model in `base` (a URL ending in model/), loaded once.
export async function pageBackend(base) {
  const meta = await (await fetchOk(new URL("model.json", base))).json();
  const buffer = await (await fetchOk(new URL(meta.weights, base))).arrayBuffer();
  return new PageBackend(new Model(meta, buffer), meta);
}
