"""How far the teacher's output on a mixed sentence moves from its recipient's: what ``egkd mix`` gives a student.

    python -m research.mix_shift CACHE [CACHE ...] [--method perturbation] [--temperature 2]

Each CACHE holds a train split and, in its transfer split, the sentences ``egkd mix`` wrote from that train split
in their order (``egkd explain --text``), so the ``i``-th transfer row's recipient is train row ``i`` modulo the
train split's length. For the train split and for each cache's mixed sentences:

* **flips**: the share of mixed sentences on which the teacher predicts another class than on their recipient;
* **KL**: the mean ``KL(p || q)`` of the teacher's softened distributions on the recipient (``p``) and on the
  mixed sentence (``q``), at the KD temperature;
* **top probability** and **entropy** of the softened distribution: how sure the soft labels a student learns are;
* **tokens**: the mean number of real tokens.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.cache import read_cache
from pipeline.data import TRANSFER
from research.view_shift import log_softmax


@dataclass(frozen=True)
class Outputs:
    name: str
    sentences: int
    flips: float | None  # None for the train split itself
    kl: float | None
    top_probability: float
    entropy: float  # nats
    tokens: float


def outputs(name: str, logits: np.ndarray, tokens: np.ndarray, recipient: np.ndarray | None, t: float) -> Outputs:
    log_q = log_softmax(logits, t)
    q = np.exp(log_q)
    flips = kl = None
    if recipient is not None:
        log_p = log_softmax(recipient, t)
        flips = float((logits.argmax(1) != recipient.argmax(1)).mean())
        kl = float((np.exp(log_p) * (log_p - log_q)).sum(1).mean())
    entropy = float(-(q * log_q).sum(1).mean())
    return Outputs(name, len(logits), flips, kl, float(q.max(1).mean()), entropy, float(tokens.mean()))


def measure(caches: Sequence[Path], method: str, temperature: float) -> list[Outputs]:
    _, train = read_cache(caches[0], method, "train")
    base = np.stack([r.teacher_logits for r in train])
    rows = [outputs("train", base, np.array([(~r.special_mask).sum() for r in train]), None, temperature)]
    for cache in caches:
        _, mixed = read_cache(cache, method, TRANSFER)
        logits = np.stack([r.teacher_logits for r in mixed])
        recipient = base[np.arange(len(mixed)) % len(base)]
        tokens = np.array([(~r.special_mask).sum() for r in mixed])
        rows.append(outputs(str(cache), logits, tokens, recipient, temperature))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("caches", nargs="+", type=Path)
    parser.add_argument("--method", default="perturbation")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    args = parser.parse_args(argv)
    rows = measure(args.caches, args.method, args.temperature)
    print(f"{'sentences':<60} {'n':>6} {'flips':>6} {'KL':>7} {'top p':>6} {'entropy':>7} {'tokens':>6}")
    for r in rows:
        flips = "-" if r.flips is None else f"{r.flips:.3f}"
        kl = "-" if r.kl is None else f"{r.kl:.4f}"
        sure = f"{r.top_probability:>6.3f} {r.entropy:>7.3f}"
        print(f"{r.name:<60} {r.sentences:>6} {flips:>6} {kl:>7} {sure} {r.tokens:>6.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"temperature": args.temperature, "rows": [asdict(r) for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
