"""How far each kind of cached view moves the teacher: what a student trained on the views can learn from them.

    python -m research.view_shift CACHE [--method gradient] [--split train] [--temperature 2]

For every kind of view in a stage-one cache (label-preserving, contrastive, random), over all its views:

* **KL**: the mean ``KL(p || q)`` of the teacher's softened distribution on the original sentence (``p``) and
  on the view (``q``), at the KD temperature: how much the view's soft label differs from the original's;
* **flips**: the share of views on which the teacher predicts another class;
* **top masked**: the share of the sentence's top ``ceil(0.2 n)`` real tokens by ``|score|`` (the cached map)
  that the view replaces, averaged over views: how much the view hits what the map calls important;
* **distinct**: the mean number of different views a sentence has among its cached ones. A view draws its
  tokens independently of the sentence's other views, so a short sentence, or a kind whose candidates are few,
  repeats views: ``explain.views.count`` bounds the variety a student sees, this says by how much.

A kind whose views move the teacher no more than random ones gives the student no more to learn than random
ones (docs/pipeline.md, the medium profile's sweep).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.cache.extras import VIEW_KINDS
from pipeline.cache.schema import CachedExample


@dataclass(frozen=True)
class ViewShift:
    kind: str
    views: int  # views counted (rows x views per row)
    kl: float  # mean KL(teacher on the original || teacher on the view), softened by the temperature
    flips: float  # share of views on which the teacher's class changes
    top_masked: float  # mean share of the top-|score| tokens that a view replaces
    distinct: float  # mean number of different views per sentence


def log_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``(..., C)`` log-probabilities of logits divided by ``temperature`` (the KD softening), in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def view_shift(rows: Sequence[CachedExample], temperature: float = 2.0, top_fraction: float = 0.2) -> list[ViewShift]:
    """One :class:`ViewShift` per kind of view the rows carry, in :data:`VIEW_KINDS` order."""
    out = []
    for kind in VIEW_KINDS:
        kl: list[float] = []
        flips: list[bool] = []
        top: list[float] = []
        distinct: list[int] = []
        for row in rows:
            views = row.extras.get(kind)
            if views is None:
                continue
            p = log_softmax(row.teacher_logits, temperature)
            q = log_softmax(views.logits, temperature)  # (V, C)
            kl += (np.exp(p) * (p - q)).sum(-1).tolist()
            flips += (np.argmax(views.logits, -1) != np.argmax(row.teacher_logits)).tolist()
            distinct.append(len(np.unique(np.asarray(views.masks, dtype=bool), axis=0)))
            real = np.flatnonzero(~np.asarray(row.special_mask, dtype=bool))
            if len(real) == 0:
                continue
            count = max(1, math.ceil(top_fraction * len(real)))
            order = np.argsort(-np.abs(row.attribution[real]), kind="stable")[:count]
            top += np.asarray(views.masks)[:, real[order]].mean(-1).tolist()
        if flips:
            means = (float(np.mean(values)) for values in (kl, flips, top, distinct))
            out.append(ViewShift(kind.kind, len(flips), *means))
    return out


def table(shifts: Sequence[ViewShift]) -> str:
    lines = [
        "| views | count | teacher KL | teacher flips | top tokens masked | distinct per sentence |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s.kind} | {s.views} | {s.kl:.4f} | {s.flips:.3f} | {s.top_masked:.3f} | {s.distinct:.2f} |" for s in shifts
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from pipeline.cache.store import read_cache

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", type=Path)
    parser.add_argument("--method", default="gradient")
    parser.add_argument("--split", default="train")
    parser.add_argument("--temperature", type=float, default=2.0)
    args = parser.parse_args(argv)
    meta, rows = read_cache(args.cache, args.method, args.split)
    print(f"{args.cache}: {meta.method}/{meta.split}, {len(rows)} rows, temperature {args.temperature}")
    print(table(view_shift(rows, args.temperature)))


if __name__ == "__main__":
    main()
