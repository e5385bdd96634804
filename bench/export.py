"""Speed of an exported model: PyTorch vs onnxruntime vs the browser page, side by side.

    python bench/export.py RUN                 # a trained run (e.g. the README's main job)
    python bench/export.py                     # trains a default timemachine run (1 epoch)
    python bench/export.py --quick             # a tiny alphabet model, short texts: a smoke run

Exports RUN both ways (`rnnlab export --format onnx` and `--format web`, into a temporary
folder), then measures, for each runtime, on the same text:

- generation at batch 1: a greedy continuation of `--gen` characters from a held-out prefix,
  one character per model call with the state carried (chars/s). PyTorch: `lm.generate`
  (rnnlab's decoding loop); onnxruntime: the loop of docs/deploy.md (`session.run` per
  character, numpy argmax); the page: `pageBackend(...).predict` in chromium (timed inside
  the page with performance.now, so Playwright's round trips do not count);
- held-out scoring: the loss of the first `--score` held-out characters read as one stream,
  the state carried, in chunks of 512 (PyTorch, onnxruntime) or one character at a time (the
  page's forward pass has no other mode), with the loss itself printed so the three can be
  seen to agree.

Best of `--repeats` runs; one thread for PyTorch and onnxruntime unless `--threads`. Prints a
Markdown table and the two exports' sizes. Not a timed test: run it alone on the machine.
"""

from __future__ import annotations

import argparse
import functools
import math
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CHUNK = 512

# Runs inside the exported page: load its model as the page does, then time it there.
PAGE_BENCH = """async ([prefix, gen, ids, repeats]) => {
  const { pageBackend, logSoftmax } = await import("./static/inpage.js");
  const backend = await pageBackend(new URL("model/", document.baseURI));
  const model = backend.model;
  let genBest = Infinity, scoreBest = Infinity, continuation = "", loss = 0;
  for (let r = 0; r < repeats; r++) {
    let t = performance.now();
    continuation = (await backend.predict({ run: backend.name, prefix, steps: gen, show: 1 }))
      .continuation;
    genBest = Math.min(genBest, performance.now() - t);
    t = performance.now();
    const state = model.begin();
    let nll = 0;
    for (let i = 0; i + 1 < ids.length; i++) {
      nll -= logSoftmax(model.step(ids[i], state))[ids[i + 1]];
    }
    scoreBest = Math.min(scoreBest, performance.now() - t);
    loss = nll / (ids.length - 1);
  }
  return { genSeconds: genBest / 1000, scoreSeconds: scoreBest / 1000, continuation, loss };
}"""


def train(root: Path, quick: bool) -> Path:
    """The default model (a 2x256 GRU on timemachine), one epoch: speed depends on its size,
    not on how well it is trained; --quick: a tiny alphabet model."""
    out = root / ("alphabet" if quick else "timemachine")
    flags = (
        ["--corpus", "alphabet", "--hidden", "16", "--layers", "1", "--max-time", "2"]
        if quick
        else ["--corpus", "timemachine"]
    )
    cmd = [sys.executable, "-m", "rnnlab", "train", *flags, "--out", str(out), "--epochs", "1",
           "--quiet"]  # fmt: skip
    print("training a run:", " ".join(cmd[2:]), file=sys.stderr)
    subprocess.run(cmd, check=True)
    return out


def best_of(repeats: int, fn) -> tuple[float, object]:
    best, result = math.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def bench_torch(lm, prefix: str, gen: int, ids: torch.Tensor, repeats: int) -> dict:
    model = lm.model

    @torch.no_grad()
    def score() -> float:
        X = ids.unsqueeze(0)  # (1, N)
        state, nll = model.begin_state(1), 0.0
        for i in range(0, X.shape[1] - 1, CHUNK):
            x, y = X[:, i : i + CHUNK], X[:, i + 1 : i + 1 + CHUNK]
            logits, state = model(x[:, : y.shape[1]], state)  # (1, t, V)
            nll += F.cross_entropy(logits[0], y[0], reduction="sum").item()
        return nll / (X.shape[1] - 1)

    gen_s, text = best_of(repeats, lambda: lm.generate(prefix, steps=gen))
    score_s, loss = best_of(repeats, score)
    return {"gen_s": gen_s, "score_s": score_s, "text": text, "loss": loss}


def bench_onnx(path: Path, vocab: list[str], prefix: str, gen: int, ids, repeats, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[1].shape  # [S, L, "batch", H]
    zeros = np.zeros((shape[0], shape[1], 1, shape[3]), dtype=np.float32)
    index = {c: i for i, c in enumerate(vocab)}

    def generate() -> str:  # docs/deploy.md's loop
        x = np.array([[index[c] for c in prefix]], dtype=np.int64)
        logits, state = session.run(None, {"ids": x, "state": zeros})
        out = []
        for _ in range(gen):
            best = int(logits[0, -1].argmax())
            out.append(vocab[best])
            logits, state = session.run(
                None, {"ids": np.array([[best]], dtype=np.int64), "state": state}
            )
        return "".join(out)

    def score() -> float:
        X = ids.numpy()[None, :]
        state, nll = zeros, 0.0
        for i in range(0, X.shape[1] - 1, CHUNK):
            y = X[:, i + 1 : i + 1 + CHUNK]
            logits, state = session.run(None, {"ids": X[:, i : i + y.shape[1]], "state": state})
            nll += F.cross_entropy(torch.from_numpy(logits[0]), torch.from_numpy(y[0]),
                                   reduction="sum").item()  # fmt: skip
        return nll / (X.shape[1] - 1)

    gen_s, text = best_of(repeats, generate)
    score_s, loss = best_of(repeats, score)
    return {
        "gen_s": gen_s,
        "score_s": score_s,
        "text": text,
        "loss": loss,
        "version": ort.__version__,
    }


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def bench_page(site: Path, prefix: str, gen: int, ids: torch.Tensor, repeats: int) -> dict | str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return "chromium is not installed"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "playwright is not installed"
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=site))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--no-first-run"],
            )  # fmt: skip
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            page.wait_for_selector('[data-testid="run"] option', state="attached")
            found = page.evaluate(PAGE_BENCH, [prefix, gen, ids.tolist(), repeats])
            version = browser.version
            browser.close()
    finally:
        server.shutdown()
    return {"gen_s": found["genSeconds"], "score_s": found["scoreSeconds"],
            "text": found["continuation"], "loss": found["loss"], "version": version}  # fmt: skip


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="a trained run (default: train one)")
    parser.add_argument("--gen", type=int, default=2000, help="characters generated (greedy)")
    parser.add_argument("--score", type=int, default=20_000, help="held-out characters scored")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="PyTorch and onnxruntime threads")
    parser.add_argument("--quick", action="store_true", help="a tiny model and short texts")
    args = parser.parse_args()
    if args.quick:
        args.gen, args.score, args.repeats = min(args.gen, 100), min(args.score, 1000), 1
    torch.set_num_threads(args.threads)

    import rnnlab
    from rnnlab.cli import main as cli
    from rnnlab.data import prepare_data
    from rnnlab.export.onnx import size_label

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = args.run or train(root, args.quick)
        lm = rnnlab.load(run, device="cpu")
        held_out = prepare_data(lm.run.data, vocab=lm.vocab).valid_ids.long()
        known = held_out[held_out != lm.vocab.unk]  # the page refuses <unk> in a prefix
        prefix = lm.vocab.decode(known[:20])
        ids = held_out[: args.score + 1]
        onnx_path, site = root / "model.onnx", root / "site"
        for fmt, out in (("onnx", onnx_path), ("web", site)):
            if cli(["export", str(run), "--format", fmt, "--out", str(out), "--json"]) != 0:
                raise SystemExit(f"rnnlab export --format {fmt} failed")
        results = {
            f"PyTorch {torch.__version__.split('+')[0]}": bench_torch(
                lm, prefix, args.gen, ids, args.repeats
            ),
        }
        found = bench_onnx(onnx_path, lm.vocab.idx_to_token, prefix, args.gen, ids, args.repeats,
                           args.threads)  # fmt: skip
        results[f"onnxruntime {found.pop('version')}"] = found
        found = bench_page(site, prefix, args.gen, ids, args.repeats)
        if isinstance(found, str):
            results["browser page"] = found
        else:
            results[f"browser page (chromium {found.pop('version')}, inpage.js)"] = found
        onnx_size, site_size = onnx_path.stat().st_size, folder_bytes(site)

    c = lm.run.model_config
    print(
        f"\n{lm.name}: {c.cell} {c.layers}x{c.hidden}, vocabulary {len(lm.vocab)}; "
        f"{args.threads} thread(s); best of {args.repeats}\n"
    )
    print(
        f"| runtime | generation, batch 1 ({args.gen:,} chars, greedy) | held-out scoring "
        f"({len(ids) - 1:,} chars) | held-out loss (nats/char) | same greedy text as PyTorch |"
    )
    print("| --- | ---: | ---: | ---: | --- |")
    reference = next(iter(results.values()))["text"]  # type: ignore[index]
    for name, r in results.items():
        if isinstance(r, str):
            print(f"| {name} | n/a ({r}) | | | |")
            continue
        print(
            f"| {name} | {args.gen / r['gen_s']:,.0f} chars/s | "
            f"{(len(ids) - 1) / r['score_s']:,.0f} chars/s | {r['loss']:.6f} | "
            f"{'yes' if r['text'] == reference else 'NO'} |"
        )
    print(
        f"\nsizes: model.onnx {size_label(onnx_size)}; the web folder {size_label(site_size)} "
        f"({site_size:,} bytes)"
    )


if __name__ == "__main__":
    main()
