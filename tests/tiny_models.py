"""Tiny seeded random classifiers of every encoder architecture egkd supports, each with a tokenizer of its own
kind trained offline here (nothing is downloaded): WordPiece for BERT, DistilBERT and ELECTRA, byte-level BPE for
RoBERTa and ModernBERT, sentencepiece-style Unigram for DeBERTa-v2 and XLM-RoBERTa.

Each tokenizer is trained with the ``tokenizers`` library on a few hundred real TREC questions and QNLI pairs and
wrapped in the tokenizer class transformers uses for the architecture, with that architecture's special tokens
(``<s>``/``</s>``/``<mask>`` for RoBERTa and XLM-R, ``[CLS]``/``[SEP]``/``[MASK]`` elsewhere). Models have
hidden size 32, 2 layers and 4 heads.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TREC = DATA / "text-classification" / "trec"
QNLI = DATA / "glue-qnli"

ARCHITECTURES = ("bert", "roberta", "distilbert", "electra", "deberta-v2", "modernbert", "xlm-roberta")
HIDDEN, LAYERS, HEADS, FFN, POSITIONS = 32, 2, 4, 37, 128
VOCAB_SIZE = 600


@functools.cache
def corpus() -> tuple[str, ...]:
    """The texts the tokenizers learn from: TREC questions and QNLI questions and sentences."""
    with (TREC / "train.csv").open(encoding="utf-8", newline="") as handle:
        texts = [row["text"] for _, row in zip(range(600), csv.DictReader(handle), strict=False)]
    with (QNLI / "QNLI" / "train.tsv").open(encoding="utf-8") as handle:
        for _, line in zip(range(300), handle, strict=False):
            fields = line.rstrip("\n").split("\t")
            texts += fields[1:3]
    return tuple(texts)


def _wordpiece(special: list[str]):
    from tokenizers.implementations import BertWordPieceTokenizer

    trained = BertWordPieceTokenizer(lowercase=True)
    trained.train_from_iterator(corpus(), vocab_size=VOCAB_SIZE, special_tokens=special, show_progress=False)
    return trained.get_vocab()


def _byte_level_bpe(special: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary (specials first) and its merges."""
    import json

    from tokenizers.implementations import ByteLevelBPETokenizer

    trained = ByteLevelBPETokenizer(add_prefix_space=False)
    trained.train_from_iterator(
        corpus(), vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=special, show_progress=False
    )
    model = json.loads(trained._tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def _unigram(special: list[str], unk: str) -> list[tuple[str, float]]:
    """A sentencepiece-style Unigram vocabulary: (piece, log probability), specials first."""
    import json

    from tokenizers.implementations import SentencePieceUnigramTokenizer

    trained = SentencePieceUnigramTokenizer()
    trained.train_from_iterator(
        corpus(), vocab_size=VOCAB_SIZE, special_tokens=special, unk_token=unk, show_progress=False
    )
    return [(piece, float(score)) for piece, score in json.loads(trained._tokenizer.to_str())["model"]["vocab"]]


def _bert_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab=_wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]), do_lower_case=True)


def _distilbert_tokenizer():
    """DistilBERT's tokenizer is BERT's without token type ids in its outputs (as on the hub)."""
    from transformers import BertTokenizer

    vocab = _wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_input_names=["input_ids", "attention_mask"])


def _roberta_tokenizer():
    from transformers import RobertaTokenizer

    vocab, merges = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return RobertaTokenizer(vocab=vocab, merges=merges, add_prefix_space=False)


def _modernbert_tokenizer():
    """ModernBERT's own: byte-level BPE with BERT's special tokens ([CLS] a [SEP] b [SEP]), no token type ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    vocab, merges = _byte_level_bpe(special)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    # Its template alone, as in ModernBERT's tokenizer.json: no byte-level post-processor trims the offsets
    # ("Ġis" spans " is").
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
    )


def _deberta_tokenizer():
    from transformers import DebertaV2Tokenizer

    vocab = _unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "[UNK]")
    return DebertaV2Tokenizer(vocab=vocab, unk_id=3)


def _xlm_roberta_tokenizer():
    from transformers import XLMRobertaTokenizer

    return XLMRobertaTokenizer(vocab=_unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<unk>"))


TOKENIZERS: dict[str, Callable] = {
    "bert": _bert_tokenizer,
    "roberta": _roberta_tokenizer,
    "distilbert": _distilbert_tokenizer,
    "electra": _bert_tokenizer,
    "deberta-v2": _deberta_tokenizer,
    "modernbert": _modernbert_tokenizer,
    "xlm-roberta": _xlm_roberta_tokenizer,
}


def make_tokenizer(architecture: str):
    return TOKENIZERS[architecture]()


def make_config(architecture: str, tokenizer, num_labels: int = 2, layers: int = LAYERS):
    """A tiny config of ``architecture`` for ``tokenizer``'s vocabulary and special tokens."""
    from transformers import (
        BertConfig,
        DebertaV2Config,
        DistilBertConfig,
        ElectraConfig,
        ModernBertConfig,
        RobertaConfig,
        XLMRobertaConfig,
    )

    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "num_labels": num_labels,
    }
    common = {
        **ids,
        "hidden_size": HIDDEN,
        "num_hidden_layers": layers,
        "num_attention_heads": HEADS,
        "intermediate_size": FFN,
        "max_position_embeddings": POSITIONS,
    }
    if architecture == "bert":
        return BertConfig(**common)
    if architecture == "electra":
        return ElectraConfig(**common, embedding_size=HIDDEN // 2)  # projected up to the hidden size, as ELECTRA-small
    if architecture in ("roberta", "xlm-roberta"):
        kind = RobertaConfig if architecture == "roberta" else XLMRobertaConfig
        positions = POSITIONS + tokenizer.pad_token_id + 1  # positions count from past the padding index
        return kind(
            **{**common, "max_position_embeddings": positions},
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            type_vocab_size=1,
        )
    if architecture == "distilbert":
        return DistilBertConfig(
            **ids, dim=HIDDEN, n_layers=layers, n_heads=HEADS, hidden_dim=FFN, max_position_embeddings=POSITIONS
        )
    if architecture == "deberta-v2":
        return DebertaV2Config(
            **common,
            type_vocab_size=0,
            relative_attention=True,
            position_buckets=32,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            max_relative_positions=-1,
        )
    if architecture == "modernbert":
        return ModernBertConfig(
            **common,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            global_attn_every_n_layers=1,
            local_attention=16,
        )
    raise ValueError(f"unknown architecture {architecture!r}")


def make_tiny_architecture(
    architecture: str, path: Path, num_labels: int = 2, seed: int = 0, layers: int = LAYERS
) -> Path:
    """Write a tiny seeded random ``architecture`` classifier and its tokenizer to ``path``."""
    from transformers import AutoModelForSequenceClassification

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(architecture)
    config = make_config(architecture, tokenizer, num_labels, layers)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
