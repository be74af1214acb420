"""Views that bring new words: an augmented copy of a GLUE single-sentence task, for a probe of stage two.

    python -m research.word_views --data ../shared/data/glue --teacher T --limit 2000 --views 4 \
        --mode neighbours --out AUG

Stage one's views replace tokens by ``[MASK]`` (docs/method.md), so they hold no word their sentences lack;
``research.coverage`` shows that more training sentences help most where their new words are. This writes a
GLUE folder (``AUG/SST-2/train.tsv`` and the source's ``dev.tsv``) holding the first ``--limit`` training
sentences, then ``--views`` views of each, as rows of their own with the sentence's label. In each view
``max(1, ceil(fraction * n))`` of the sentence's ``n`` words are replaced, drawn among its replaceable ones
(words that are one whole-word token of the teacher's vocabulary, letters only):

* ``--mode neighbours``: each by one of its ``--neighbours`` nearest whole words by the cosine of the teacher's
  input embeddings (TinyBERT replaces words by GloVe neighbours where its masked language model cannot);
* ``--mode mask``: each by ``[MASK]``, at the same positions: the control.

The views are drawn at random (seeded by ``--seed``, the sentence and the view), not by an explanation: the
probe asks whether new words help more than masks before stage one builds them from a map. Stage one then
labels every row with the teacher (``egkd explain --data AUG --limit N * (1 + views)``) and stage two trains
on the rows as sentences (docs/pipeline.md, "How far accuracy can go").
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import EgkdError

MODES = ("neighbours", "mask")
_WHOLE_WORD = re.compile(r"^[a-z]{2,}$")


@dataclass(frozen=True)
class Sentence:
    text: str
    label: str


def candidates(vocab: dict[str, int]) -> dict[str, int]:
    """The vocabulary's whole words of letters only (no ``##`` pieces, no special tokens, two letters or more)."""
    return {token: i for token, i in vocab.items() if _WHOLE_WORD.match(token)}


def neighbour_table(
    words: Sequence[str], pool: dict[str, int], embeddings: torch.Tensor, count: int, chunk: int = 1024
) -> dict[str, tuple[str, ...]]:
    """For each of ``words`` in ``pool``, its ``count`` nearest other words of ``pool`` by embedding cosine.

    ``embeddings`` ``(V, H)``: the teacher's input word embeddings, indexed by the ids of ``pool``. Ties go to
    the lower id. Words not in ``pool`` get no entry.
    """
    names = sorted(pool, key=pool.__getitem__)
    ids = torch.tensor([pool[n] for n in names])
    unit = torch.nn.functional.normalize(embeddings[ids].double(), dim=1)
    index = {name: i for i, name in enumerate(names)}
    asked = [w for w in dict.fromkeys(words) if w in index]
    table: dict[str, tuple[str, ...]] = {}
    for start in range(0, len(asked), chunk):
        rows = torch.tensor([index[w] for w in asked[start : start + chunk]])
        similarity = unit[rows] @ unit.T
        similarity[torch.arange(len(rows)), rows] = -math.inf  # not itself
        # stable descending order: equal cosines keep the lower id first
        order = torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :count]
        for word, nearest in zip(asked[start : start + chunk], order.tolist(), strict=True):
            table[word] = tuple(names[j] for j in nearest)
    return table


def views_of(
    sentence: str,
    table: dict[str, tuple[str, ...]],
    views: int,
    fraction: float,
    mode: str,
    seed: int,
    index: int,
    mask_token: str = "[MASK]",
) -> list[str]:
    """``views`` texts of ``sentence`` (the ``index``-th), each with ``max(1, ceil(fraction * n))`` of its ``n``
    words replaced among those in ``table``; none when it has no replaceable word.

    The positions depend on ``(seed, index, view)`` only, so both modes replace the same words.
    """
    words = sentence.split()
    replaceable = [i for i, w in enumerate(words) if w in table]
    if not replaceable:
        return []
    k = min(max(1, math.ceil(fraction * len(words))), len(replaceable))
    out = []
    for view in range(views):
        rng = np.random.default_rng([seed, index, view])
        positions = rng.choice(replaceable, size=k, replace=False)
        picks = rng.integers(0, [len(table[words[p]]) for p in positions])
        new = list(words)
        for position, pick in zip(positions.tolist(), picks.tolist(), strict=True):
            new[position] = table[words[position]][pick] if mode == "neighbours" else mask_token
        out.append(" ".join(new))
    return out


def augment(
    sentences: Sequence[Sentence],
    table: dict[str, tuple[str, ...]],
    views: int,
    fraction: float,
    mode: str,
    seed: int,
) -> list[Sentence]:
    """The sentences, then each one's views with its label."""
    out = list(sentences)
    for index, sentence in enumerate(sentences):
        texts = views_of(sentence.text, table, views, fraction, mode, seed, index)
        out += [Sentence(text, sentence.label) for text in texts]
    return out


def main(argv: list[str] | None = None) -> None:
    from pipeline.data import load_dataset
    from pipeline.models import load_classifier, load_tokenizer
    from pipeline.tasks import get_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the GLUE folder holding SST-2/")
    parser.add_argument("--teacher", required=True, help="the teacher: its vocabulary and embeddings")
    parser.add_argument("--limit", type=int, required=True, help="the first N training sentences")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--neighbours", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.limit <= 0 or args.views <= 0 or args.neighbours <= 0 or not 0 < args.fraction <= 1:
            raise EgkdError("--limit, --views and --neighbours must be positive and --fraction in (0, 1]")
        train = load_dataset(args.data, get_task("sst2"), "train", args.limit)
        sentences = [Sentence(e.text_a, str(e.label)) for e in train.examples]
        tokenizer = load_tokenizer(args.teacher)
        teacher = load_classifier(args.teacher, num_labels=2, num_layers=1)  # only its word embeddings are read
        embeddings = teacher.get_input_embeddings().weight.detach()
    except (EgkdError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    pool = candidates(tokenizer.get_vocab())
    table = neighbour_table([w for s in sentences for w in s.text.split()], pool, embeddings, args.neighbours)
    rows = augment(sentences, table, args.views, args.fraction, args.mode, args.seed)
    folder = args.out / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{row.text}\t{row.label}\n" for row in rows)
    (folder / "train.tsv").write_text(f"sentence\tlabel\n{body}", encoding="utf-8")
    shutil.copyfile(args.data / "SST-2" / "dev.tsv", folder / "dev.tsv")
    print(
        f"{folder / 'train.tsv'}: {len(sentences)} sentences and {len(rows) - len(sentences)} {args.mode} views "
        f"({len(table)} of their words replaceable); explain it with --limit {len(rows)}"
    )


if __name__ == "__main__":
    main()
