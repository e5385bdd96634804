"""A notebook-style walkthrough of the Python API: train, predict, score, look inside.

Each `# %%` cell is top-level code that runs on its own, in order, in Jupyter, VS Code or Spyder
(the "percent" format), or the whole file runs as a script. It trains a small character model on
a made-up text of who said what, in a few seconds on a laptop CPU, then asks it the questions a
notebook user asks: what comes next, how surprised is it, which hidden unit tracks what.

Run: python examples/walkthrough.py
"""

# %% Set-up: a made-up text of who said what, written to a scratch folder.
from __future__ import annotations

import random
import tempfile
from pathlib import Path

import rnnlab

WORDS = "the cat dog sat ran on a mat log hat and was so very big small red".split()


def said_text(sentences: int = 600, seed: int = 0) -> str:
    """Lines like `the dog ran said "a big hat" and mat.`: words, spaces, quotes, line ends."""
    rng = random.Random(seed)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    lines = [f'{words(2, 6)} said "{words(1, 6)}" and {words(1, 1)}.' for _ in range(sentences)]
    return "\n".join(lines) + "\n"


root = Path(tempfile.mkdtemp(prefix="rnnlab-walkthrough-"))
text = said_text()
corpus = root / "said.txt"
corpus.write_text(text, encoding="utf-8")

# %% Train: the flags of `rnnlab train`, as keywords. Seconds on a CPU, with a progress bar.
run = rnnlab.train(
    corpus=str(corpus), out=root / "said", force=True, hidden=32, layers=1,
    batch_size=16, num_steps=32, epochs=12, lr=0.01, dropout=0.0,
)  # fmt: skip
lm = run.model
print(lm)
print(f"held-out: {run.summary['valid_bpc']:.3f} bits/char")

# %% What comes next? The distribution after a prefix, and a continuation.
print(lm.next("the cat sa", k=3))  # 'i' (said) or 't' (sat)
continuation = lm.generate("the cat ", num_preds=40)
print(repr("the cat " + continuation))
sampled = lm.generate("the cat ", num_preds=40, strategy="sample", temperature=0.8, seed=3)
print(repr("the cat " + sampled))

# %% Where is it surprised? Surprisal in bits, and what it expected instead.
line = 'the dog sat said "a red hat" and log.'
scores = lm.score(line)
worst = max(range(len(scores)), key=lambda i: scores[i][1])
char, bits = scores[worst]
expected = lm.alternatives(line, k=3)[worst]
print(f"most surprising: {char!r} after {line[: worst + 1]!r}: {bits:.1f} bits")
print(f"  it expected {expected}")
metrics = lm.evaluate(line)
print(f"the line: {metrics.bpc:.3f} bits/char, perplexity {metrics.ppl:.2f}")

# %% Look inside: which hidden unit tracks the position in the word?
sample = text[:400]
states = lm.states(sample)  # (T, L, H)
best = lm.units(sample, "word_position", top=3)
for u in best:
    print(f"layer {u.layer} unit {u.unit}: r = {u.r:+.2f} with the position in the word")
unit = states[:, best[0].layer, best[0].unit]  # (T,) its activation after each character
marks = [c if v > unit.mean() else "." for c, v in zip(sample, unit.tolist(), strict=True)]
print("".join(marks[:40]))  # its high activations, over the first words
quotes = lm.units(sample, "quotes", top=1)[0]
print(f"best quote unit so far: r = {quotes.r:+.2f} (train longer to grow Karpathy's)")
print(f"(the run is in {root}; delete it when done)")
