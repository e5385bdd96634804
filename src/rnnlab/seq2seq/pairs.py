"""Pairs for sequence-to-sequence learning: TSV files, built-in sets, a held-out split, padding.

Built-ins:
    course    the course's six pairs (man -> women [sic], king -> queen, ...); no held-out set,
              so a model trained on it can only show memorisation
    antonyms  the six plus real English gender pairs and opposites written out below
    reverse   generated: a random lower-case word -> the word reversed
    dates     generated: a date in one of several formats ("22 nov 2026", "22/11/2026", ...)
              -> ISO 8601 ("2026-11-22")

The held-out split is real: pairs are grouped so that pairs sharing a source or a target land on
the same side, so no held-out source or target string is ever seen in training (for `dates`,
a held-out date is unseen in every input format).

Symbols: <pad> = 0 (so padding is recognisable at a glance), <bos> begins the decoder's input,
<eos> ends every target, <unk> stands for characters not seen in training.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rnnlab.errors import UsageError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)

Pair = tuple[str, str]

# The course's six pairs, exactly as the course writes them ("man" -> "women" included).
COURSE_PAIRS: list[Pair] = [
    ("man", "women"),
    ("king", "queen"),
    ("black", "white"),
    ("girl", "boy"),
    ("up", "down"),
    ("high", "low"),
]

_GENDER = """
woman man  boy girl  queen king  prince princess  princess prince  father mother
mother father  son daughter  daughter son  brother sister  sister brother  uncle aunt
aunt uncle  nephew niece  niece nephew  husband wife  wife husband  actor actress
actress actor  waiter waitress  host hostess  lion lioness  god goddess  duke duchess
emperor empress  hero heroine  bride groom  groom bride  lord lady  lady lord  monk nun
nun monk  sir madam  mr mrs  he she  she he  him her  his hers  grandfather grandmother
grandmother grandfather  grandson granddaughter  stepfather stepmother  gentlemen ladies
men women  women men  boys girls  kings queens  bull cow  rooster hen  stallion mare
ram ewe  gander goose  fox vixen  buck doe  wizard witch  count countess  baron baroness
steward stewardess  heir heiress  tiger tigress  abbot abbess  priest priestess  poet poetess
male female  masculine feminine  boyfriend girlfriend  widower widow  landlord landlady
policeman policewoman  chairman chairwoman  businessman businesswoman  spokesman spokeswoman
salesman saleswoman  headmaster headmistress  schoolboy schoolgirl  dad mom  papa mama
grandpa grandma  czar czarina  fiance fiancee  nephews nieces  sons daughters
"""

_OPPOSITES = """
white black  down up  low high  hot cold  cold hot  big small  small big  long short
short long  fast slow  slow fast  light dark  dark light  good bad  bad good  happy sad
sad happy  old young  young old  new old  open closed  closed open  in out  out in
left right  right left  day night  night day  early late  late early  hard soft  soft hard
rich poor  poor rich  strong weak  weak strong  wet dry  dry wet  full empty  empty full
thick thin  thin thick  heavy light  loud quiet  quiet loud  first last  last first
win lose  lose win  push pull  pull push  start finish  begin end  buy sell  sell buy
give take  take give  come go  go come  yes no  no yes  true false  false true
above below  below above  inside outside  outside inside  before after  after before
north south  south north  east west  west east  love hate  hate love  friend enemy
enemy friend  war peace  peace war  clean dirty  dirty clean  cheap expensive
expensive cheap  easy difficult  difficult easy  safe dangerous  wide narrow  narrow wide
deep shallow  shallow deep  sweet sour  alive dead  dead alive  question answer
answer question  maximum minimum  minimum maximum  positive negative  negative positive
success failure  failure success  entrance exit  exit entrance  arrive depart
accept reject  increase decrease  decrease increase  import export  export import
major minor  minor major  inner outer  outer inner  upper lower  lower upper  over under
under over  asleep awake  awake asleep  sunrise sunset  sunset sunrise  tall short
fat thin  near far  far near  always never  never always  everything nothing
nothing everything  everybody nobody  smart stupid  brave cowardly  kind cruel  polite rude
wise foolish  sharp blunt  rough smooth  smooth rough  noisy silent  forward backward
backward forward  top bottom  bottom top  front back  back front  plus minus  minus plus
"""


def _word_pairs(text: str) -> list[Pair]:
    words = text.split()
    return list(zip(words[0::2], words[1::2], strict=True))


ANTONYM_PAIRS: list[Pair] = COURSE_PAIRS + _word_pairs(_GENDER) + _word_pairs(_OPPOSITES)

BUILTINS = ("course", "antonyms", "reverse", "dates")
GENERATED = ("reverse", "dates")
MAX_GENERATED = 200_000  # dates has ~219,000 distinct inputs; more would loop for ever
REVERSE_LENGTHS = (3, 10)  # word lengths of the `reverse` task, inclusive
DATE_RANGE = (dt.date(1950, 1, 1), dt.date(2049, 12, 31))
MONTHS = (
    "january february march april may june july august september october november december"
).split()
DATE_FORMATS = (
    "{d} {mon} {y}",  # 22 nov 2026
    "{d} {month} {y}",  # 22 november 2026
    "{month} {d}, {y}",  # november 22, 2026
    "{mon} {d}, {y}",  # nov 22, 2026
    "{dd}/{mm}/{y}",  # 22/11/2026 (day first: never month first, which would be ambiguous)
    "{dd}.{mm}.{y}",  # 22.11.2026
)


@dataclass
class PairsConfig:
    """Which pairs to learn from and how many to hold out."""

    pairs: str = field(
        default="course",
        metadata={
            "help": f"built-in pair set ({', '.join(BUILTINS)}) or a path to a UTF-8 TSV "
            "file of source<TAB>target lines"
        },
    )
    num_pairs: int = field(
        default=20_000, metadata={"help": f"pairs to generate for {' and '.join(GENERATED)}"}
    )
    valid_fraction: float | None = field(
        default=None,
        metadata={
            "help": "fraction of the pairs held out for evaluation (sources and targets "
            "disjoint from training); default 0 for course (memorisation), else 0.1"
        },
    )
    data_seed: int = field(
        default=0, metadata={"help": "seed for generating pairs and choosing the held-out ones"}
    )

    def __post_init__(self) -> None:
        if not 1 <= self.num_pairs <= MAX_GENERATED:
            raise UsageError(
                f"--num-pairs must be between 1 and {MAX_GENERATED:,}, got {self.num_pairs}"
            )
        if self.valid_fraction is not None and not 0.0 <= self.valid_fraction < 1.0:
            raise UsageError(
                "--valid-fraction must be in [0, 1) (0: no held-out set), "
                f"got {self.valid_fraction}"
            )

    @property
    def resolved_valid_fraction(self) -> float:
        if self.valid_fraction is not None:
            return self.valid_fraction
        return 0.0 if self.pairs == "course" else 0.1


# -- reading and generating -----------------------------------------------------------------------


def read_pairs_tsv(path: str | Path) -> list[Pair]:
    """Read `source<TAB>target` lines (UTF-8); blank lines are skipped, anything else is checked."""
    p = Path(path)
    if not p.exists():
        raise UsageError(
            f"pairs {str(path)!r} is neither a built-in ({', '.join(BUILTINS)}) "
            "nor an existing file"
        )
    if p.is_dir():
        raise UsageError(f"pairs {str(path)!r} is a directory: give a TSV file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read pairs file {str(path)!r}: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(
            f"pairs file {str(path)!r} is not valid UTF-8: bad byte at offset {e.start}"
        ) from None
    pairs: list[Pair] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            problem = "has no tab" if len(fields) == 1 else f"has {len(fields) - 1} tabs"
            raise UsageError(
                f"{str(path)!r} line {n} {problem}: write each pair as source<TAB>target"
            )
        source, target = fields[0].strip(), fields[1].strip()
        if not source or not target:
            side = "source" if not source else "target"
            raise UsageError(f"{str(path)!r} line {n} has an empty {side}")
        pairs.append((source, target))
    if not pairs:
        raise UsageError(f"pairs file {str(path)!r} is empty: give source<TAB>target lines")
    return pairs


def reverse_pairs(n: int, seed: int) -> list[Pair]:
    """`n` distinct random lower-case words (lengths in REVERSE_LENGTHS) and their reversals."""
    rng = random.Random(seed)
    lo, hi = REVERSE_LENGTHS
    seen: dict[str, None] = {}
    while len(seen) < n:
        word = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(lo, hi)))
        seen[word] = None
    return [(w, w[::-1]) for w in seen]


def format_date(date: dt.date, fmt: str) -> str:
    month = MONTHS[date.month - 1]
    return fmt.format(
        d=date.day,
        dd=f"{date.day:02d}",
        mm=f"{date.month:02d}",
        y=date.year,
        mon=month[:3],
        month=month,
    )


def date_pairs(n: int, seed: int) -> list[Pair]:
    """`n` distinct dates written in one of DATE_FORMATS -> the same date as YYYY-MM-DD."""
    rng = random.Random(seed)
    first, last = DATE_RANGE
    days = (last - first).days
    seen: dict[str, str] = {}
    while len(seen) < n:
        date = first + dt.timedelta(days=rng.randint(0, days))
        seen[format_date(date, rng.choice(DATE_FORMATS))] = date.isoformat()
    return list(seen.items())


def load_pairs(config: PairsConfig) -> list[Pair]:
    """Every pair of the configured set, in a fixed order."""
    if config.pairs == "course":
        return list(COURSE_PAIRS)
    if config.pairs == "antonyms":
        return list(ANTONYM_PAIRS)
    if config.pairs == "reverse":
        return reverse_pairs(config.num_pairs, config.data_seed)
    if config.pairs == "dates":
        return date_pairs(config.num_pairs, config.data_seed)
    return read_pairs_tsv(config.pairs)


def split_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Hold out about `fraction` of the pairs, keeping pairs linked by a shared string together.

    Pairs that share a source or a target form one group (union-find); whole groups are held
    out in a seeded random order until the held-out side has its share. Order within each side
    is the input order.
    """
    if fraction == 0:
        return list(pairs), []
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[tuple[int, str], int] = {}
    for i, (source, target) in enumerate(pairs):
        for key in ((0, source), (1, target)):
            j = first_seen.setdefault(key, i)
            parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(pairs)):
        groups.setdefault(find(i), []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    want = max(1, round(fraction * len(pairs)))
    held: set[int] = set()
    for group in order:
        if len(held) >= want:
            break
        held.update(group)
    train = [p for i, p in enumerate(pairs) if i not in held]
    heldout = [p for i, p in enumerate(pairs) if i in held]
    if not train:
        raise UsageError(
            f"holding out {fraction} of {len(pairs)} pairs leaves none to train on: "
            "lower --valid-fraction or give more pairs"
        )
    return train, heldout


# -- vocabulary -----------------------------------------------------------------------------------


class PairVocab:
    """<pad>, <bos>, <eos>, <unk>, then the characters of both sides by code point.

    One vocabulary serves source and target (the encoder and decoder still have their own
    embeddings); <pad> is 0 so a padded batch reads as ids followed by zeros.
    """

    pad, bos, eos, unk = 0, 1, 2, 3

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[:4]) != SPECIALS:
            raise ValueError(f"a PairVocab starts with {', '.join(SPECIALS)}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("duplicate tokens in PairVocab")
        if any(len(t) != 1 for t in tokens[4:]):
            raise ValueError("PairVocab characters must be single characters")
        self.idx_to_token: list[str] = list(tokens)
        self.token_to_idx: dict[str, int] = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, pairs: Sequence[Pair]) -> PairVocab:
        chars = sorted({c for source, target in pairs for c in source + target})
        return cls([*SPECIALS, *chars])

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def encode(self, text: str) -> list[int]:
        """Character ids; characters not in the vocabulary become <unk>."""
        return [self.token_to_idx.get(c, self.unk) for c in text]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Characters of `ids`, stopping at <eos> and skipping the other special symbols."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if i == self.eos:
                break
            if i >= len(SPECIALS):
                out.append(self.idx_to_token[i])
        return "".join(out)

    def unknown_chars(self, text: str) -> list[str]:
        """Distinct characters of `text` the vocabulary does not hold, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.token_to_idx))

    def to_json(self) -> list[str]:
        return list(self.idx_to_token)

    @classmethod
    def from_json(cls, tokens: list[str]) -> PairVocab:
        return cls(tokens)


# -- data for a run -------------------------------------------------------------------------------


@dataclass
class PairData:
    train: list[Pair]
    heldout: list[Pair]  # empty when valid_fraction is 0
    vocab: PairVocab  # built from the training pairs only


def prepare_pairs(config: PairsConfig) -> PairData:
    """Load or generate, split, and build the vocabulary from the training side."""
    pairs = load_pairs(config)
    train, heldout = split_pairs(pairs, config.resolved_valid_fraction, config.data_seed)
    return PairData(train, heldout, PairVocab.build(train))


def pairs_tsv(pairs: Sequence[Pair]) -> str:
    """Pairs as TSV text, the format `read_pairs_tsv` reads back."""
    return "".join(f"{s}\t{t}\n" for s, t in pairs)


# -- padded batches -------------------------------------------------------------------------------


@dataclass
class Batch:
    """Padded tensors of B pairs. Lengths, not pad ids, say what counts (see `mask`).

    Shapes:
        src: (B, S) source ids, right-padded        src_len: (B,) true source lengths (CPU)
        tgt_in: (B, T) <bos> y_1 .. y_n, padded      tgt_out: (B, T) y_1 .. y_n <eos>, padded
        tgt_len: (B,) n + 1, the positions of tgt_out that count
    """

    src: torch.Tensor
    src_len: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    tgt_len: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, T) True where tgt_out holds a real target symbol (the <eos> included)."""
        T = self.tgt_out.shape[1]
        return torch.arange(T, device=self.tgt_len.device)[None, :] < self.tgt_len[:, None]

    def __len__(self) -> int:
        return self.src.shape[0]

    def to(self, device: torch.device) -> Batch:
        """The batch on `device`, in one copy per tensor; `src_len` stays on the CPU, where
        `pack_padded_sequence` reads its lengths (moving it would cost a copy back per batch)."""
        return Batch(
            src=self.src.to(device),
            src_len=self.src_len,
            tgt_in=self.tgt_in.to(device),
            tgt_out=self.tgt_out.to(device),
            tgt_len=self.tgt_len.to(device),
        )


def pad(seqs: Sequence[Sequence[int]], value: int = PairVocab.pad) -> torch.Tensor:
    """Right-pad id lists to one (B, max_len) int64 tensor."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def make_batch(vocab: PairVocab, pairs: Sequence[Pair]) -> Batch:
    """Encode and pad a list of pairs (characters unseen in training become <unk>)."""
    if any(not s for s, _ in pairs):
        raise UsageError("a source is empty: every pair needs at least one source character")
    sources = [vocab.encode(s) for s, _ in pairs]
    targets = [vocab.encode(t) for _, t in pairs]
    return Batch(
        src=pad(sources),
        src_len=torch.tensor([len(s) for s in sources]),
        tgt_in=pad([[vocab.bos, *t] for t in targets]),
        tgt_out=pad([[*t, vocab.eos] for t in targets]),
        tgt_len=torch.tensor([len(t) + 1 for t in targets]),
    )
