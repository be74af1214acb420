"""New sentences spliced from two cached ones, the spans chosen by the teacher's maps: ``egkd mix``.

Views of a sentence replace one or two of its tokens by ``[MASK]``: the student sees the same sentence again,
nearly unchanged. New sentences teach a student far more (docs/pipeline.md: 2,000 unlabelled sentences gave
twice what the best views gave), and a user with 2,000 labels may have no more text. A mix makes new sentences
out of the labelled ones: sentence ``A`` (the recipient) with a window of its words replaced by a window of
another sentence ``B`` (the donor), as in span-level mixup for text (SSMix, Yoon et al., 2021). The teacher
labels the result in stage one (``egkd explain --text``), so no label is assumed.

The explanation chooses the windows (:attr:`MixKind.SALIENT`):

* in the recipient, the window of ``L`` words the teacher found least important (the smallest sum of the
  map's magnitudes over its tokens): ``A`` keeps its evidence;
* from the donor, the window of ``L`` words that supports the donor's own explained class most (the largest
  signed sum): the new sentence carries ``B``'s evidence too, agreeing or conflicting with ``A``'s.

``L = max(1, round(span * n))`` for a recipient of ``n`` words (at most the donor's). :attr:`MixKind.RANDOM`
places both windows uniformly at random, with the same pairs and the same ``L``: the baseline that makes the
comparison fair. Words are runs of a segment's tokens whose character spans touch (a word's word pieces and
its glued punctuation), so a window never cuts a word. In a pair task the second text is mixed and the first
kept. Draws come from a generator seeded by ``(seed, i)`` for the ``i``-th new sentence: the donors, and so
the pairs, are the same for both kinds, and a longer file starts with a shorter one's sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_write_text
from pipeline.cache import CachedExample, list_partitions, read_cache
from pipeline.config import MixKind
from pipeline.errors import EgkdError


@dataclass(frozen=True)
class Words:
    """One segment of a cached row in words: character spans and the map summed over each word's tokens."""

    text: str
    spans: np.ndarray  # (W, 2) int, character span of each word within ``text``
    signed: np.ndarray  # (W,) float64, the map's sum over the word's tokens (support for the explained class)
    magnitude: np.ndarray  # (W,) float64, the sum of the map's magnitudes over the word's tokens

    def __len__(self) -> int:
        return len(self.spans)


@dataclass(frozen=True)
class Mix:
    """One new example: the recipient's texts with ``replaced`` words swapped for the donor's ``inserted`` ones."""

    recipient: str  # example ids
    donor: str
    replaced: tuple[int, int]  # word window [start, stop) in the recipient's mixed segment
    inserted: tuple[int, int]  # word window [start, stop) in the donor's
    text_a: str
    text_b: str | None

    def line(self) -> str:
        """The example as a line of a text file for ``egkd explain --text`` (pair tasks: two texts and a tab)."""
        return self.text_a if self.text_b is None else f"{self.text_a}\t{self.text_b}"


def words(row: CachedExample, segment: int) -> Words:
    """``row``'s text ``segment`` (0: ``text_a``, 1: ``text_b``) in words, with the map summed per word."""
    text = row.text_a if segment == 0 else row.text_b
    if text is None:
        raise EgkdError(f"example {row.example_id} has no second text to mix")
    own = np.flatnonzero((row.segments == segment) & ~row.special_mask)
    spans: list[list[int]] = []
    signed: list[float] = []
    magnitude: list[float] = []
    for t in own:
        start, end = (int(x) for x in row.offsets[t])
        score = float(row.attribution[t])
        if spans and start <= spans[-1][1]:  # touches the previous token: the same word
            spans[-1][1] = max(spans[-1][1], end)
            signed[-1] += score
            magnitude[-1] += abs(score)
        else:
            spans.append([start, end])
            signed.append(score)
            magnitude.append(abs(score))
    return Words(
        text,
        np.asarray(spans, dtype=np.int64).reshape(-1, 2),
        np.asarray(signed, dtype=np.float64),
        np.asarray(magnitude, dtype=np.float64),
    )


def window_sums(values: np.ndarray, length: int) -> np.ndarray:
    """``(W - length + 1,)`` sums of every window of ``length`` consecutive entries of ``(W,)`` ``values``."""
    total = np.concatenate([[0.0], np.cumsum(values)])
    return total[length:] - total[:-length]


def choose_windows(
    recipient: Words, donor: Words, span: float, kind: MixKind, rng: np.random.Generator
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The recipient's window to replace and the donor's to insert, each ``[start, stop)`` in words.

    Salient: the recipient's window of smallest summed magnitude and the donor's of largest signed sum, the
    earliest on ties. Random: both starts uniform.
    """
    length = min(max(1, round(span * len(recipient))), len(recipient), len(donor))
    if kind is MixKind.SALIENT:
        start_r = int(np.argmin(window_sums(recipient.magnitude, length)))
        start_d = int(np.argmax(window_sums(donor.signed, length)))
    else:
        start_r = int(rng.integers(len(recipient) - length + 1))
        start_d = int(rng.integers(len(donor) - length + 1))
    return (start_r, start_r + length), (start_d, start_d + length)


def splice(recipient: Words, donor: Words, replaced: tuple[int, int], inserted: tuple[int, int]) -> str:
    """The recipient's text with its ``replaced`` words' characters swapped for the donor's ``inserted`` words'."""
    cut_start, cut_end = recipient.spans[replaced[0], 0], recipient.spans[replaced[1] - 1, 1]
    piece = donor.text[donor.spans[inserted[0], 0] : donor.spans[inserted[1] - 1, 1]]
    text = recipient.text[:cut_start] + piece + recipient.text[cut_end:]
    return " ".join(text.split())  # one line, single spaces: no tab or newline from either text


def mix_rows(rows: Sequence[CachedExample], count: int, span: float, kind: MixKind, seed: int) -> list[Mix]:
    """``count`` new examples; the ``i``-th has recipient ``rows[i % len(rows)]`` and a donor drawn among the others.

    Rows whose mixed segment has no word are neither recipients nor donors.
    """
    if not 0.0 < span <= 1.0:
        raise EgkdError(f"explain.mix.span must be in (0, 1], got {span}")
    if count < 1:
        raise EgkdError(f"explain.mix.count must be at least 1, got {count}")
    segment = 1 if rows and rows[0].text_b is not None else 0
    usable = [(row, w) for row in rows if len(w := words(row, segment)) > 0]
    if len(usable) < 2:
        raise EgkdError(f"mixing needs at least two cached examples with words, found {len(usable)}")
    mixes = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        recipient, r_words = usable[i % len(usable)]
        donor_index = int(rng.integers(len(usable) - 1))
        donor_index += donor_index >= i % len(usable)  # any row but the recipient
        donor, d_words = usable[donor_index]
        replaced, inserted = choose_windows(r_words, d_words, span, kind, rng)
        text = splice(r_words, d_words, replaced, inserted)
        text_a, text_b = (text, None) if segment == 0 else (" ".join(recipient.text_a.split()), text)
        mixes.append(Mix(recipient.example_id, donor.example_id, replaced, inserted, text_a, text_b))
    return mixes


@dataclass(frozen=True)
class MixRequest:
    cache: Path
    out: Path
    method: str | None  # the cache partition whose maps choose the windows; None: the only one with a train split
    kind: MixKind
    count: int | None  # None: one per cached training example
    span: float
    seed: int


@dataclass(frozen=True)
class MixReport:
    out: Path
    method: str
    kind: MixKind
    count: int
    sources: int
    mean_words_replaced: float
    changed: int  # new examples whose text differs from their recipient's

    def lines(self) -> list[str]:
        return [
            f"wrote {self.count:,} mixed examples to {self.out} ({self.kind.value} windows from the {self.method} maps "
            f"of {self.sources:,} cached training examples; {self.mean_words_replaced:.2f} words replaced on average, "
            f"{self.count - self.changed:,} equal to their recipient)",
            f"next: egkd explain --method <family> --text {self.out} --out <cache>, then egkd distill --transfer",
        ]


def _train_method(cache: Path, method: str | None) -> str:
    present = sorted(m for m, split in list_partitions(cache) if split == "train")
    if method is not None:
        if method not in present:
            raise EgkdError(f"cache {cache} has no train split for method {method} (present: {present or 'none'})")
        return method
    if len(present) != 1:
        found = ", ".join(present) if present else "none"
        raise EgkdError(f"cache {cache}: name the method whose maps choose the windows (train splits: {found})")
    return present[0]


def run_mix(request: MixRequest) -> MixReport:
    """Read the cache's training rows, mix them and write one example per line to ``request.out``."""
    if not request.cache.is_dir():
        raise EgkdError(f"cache not found: {request.cache}")
    method = _train_method(request.cache, request.method)
    _, rows = read_cache(request.cache, method, "train")
    mixes = mix_rows(rows, request.count or len(rows), request.span, request.kind, request.seed)
    segment_text = {r.example_id: (r.text_a if r.text_b is None else r.text_b) for r in rows}
    changed = sum((m.text_b or m.text_a) != " ".join(segment_text[m.recipient].split()) for m in mixes)
    atomic_write_text(request.out, "".join(m.line() + "\n" for m in mixes))
    return MixReport(
        out=request.out,
        method=method,
        kind=request.kind,
        count=len(mixes),
        sources=len(rows),
        mean_words_replaced=float(np.mean([m.replaced[1] - m.replaced[0] for m in mixes])),
        changed=changed,
    )
