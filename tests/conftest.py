"""Shared fixtures: real SST-2 rows and tiny seeded random BERT models (nothing is downloaded)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

# Tiny models gain nothing from several threads, and on a busy 2-core machine spinning OpenMP threads make
# them many times slower. Set before torch loads, so subprocesses started by tests inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

GLUE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    "the",
    "a",
    "an",
    "film",
    "movie",
    "is",
    "was",
    "good",
    "bad",
    "great",
    "awful",
    "not",
    "very",
    "and",
    "but",
    "it",
    "this",
    "of",
    "to",
    "with",
    "story",
    "fun",
    "boring",
    ",",
    ".",
    "!",
    "'s",
    "funny",
    "dull",
    "best",
    "worst",
    "love",
    "hate",
    "acting",
    "plot",
    "##s",
    "##ly",
    "one",
    "no",
]


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    assert (GLUE_DIR / "SST-2" / "dev.tsv").is_file(), f"real SST-2 data expected at {GLUE_DIR}"
    return GLUE_DIR


def make_tiny_model_dir(
    path: Path, num_labels: int = 2, seed: int = 0, layers: int = 2, vocab: list[str] = VOCAB, head: bool = True
) -> Path:
    """Write a tiny seeded random BERT classifier and its WordPiece tokenizer to ``path``; without ``head``, only
    its encoder (a checkpoint with no classification head, like a sentence-embedding model)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=128,
        num_labels=num_labels,
    )
    model = BertForSequenceClassification(config).eval()
    (model if head else model.bert).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def pytest_collection_modifyitems(config, items) -> None:
    """Fast tests first, the end-to-end ones (marked slow) last: a broken unit fails the run in seconds."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)


def small_distill(**changes):
    """Stage-two settings for the tiny models, explicit rather than the packaged defaults (the default profile's):
    a 2-layer student of the base model, the explanation term at beta 1 from the first step, no view term, a
    checkpoint every 2 steps, 2 epochs of batch 8 at lr 1e-3 and no step minimum. ``changes``: distill fields."""
    from pipeline.config import DistillParams, TrainParams

    train = TrainParams(epochs=2, batch_size=8, lr=1e-3, min_steps=0)
    base = DistillParams(
        student=None,
        layers=2,
        beta=1.0,
        explain_start=0.0,
        explain_start_max_steps=None,
        views=0,
        checkpoint_every=2,
        train=train,
    )
    return dataclasses.replace(base, **changes)
