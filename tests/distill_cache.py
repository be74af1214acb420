"""Build a real explanation cache from a tiny teacher (all three methods, train and dev) for stage-two tests."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from pipeline.cache import part_path, write_part
from pipeline.cache_schema import SCHEMA_VERSION, CachedExample, CacheMetadata
from pipeline.config import ExplainParams
from pipeline.data import load_dataset
from pipeline.encoding import collate, encode
from pipeline.explain import Method, make_explainer
from pipeline.models import load_classifier, load_tokenizer, tokenizer_hash, weights_hash
from pipeline.tasks import get_task


def build_cache(root: Path, teacher: Path, base: Path, glue_dir: Path, train: int = 24, dev: int = 12) -> Path:
    task = get_task("sst2")
    model = load_classifier(str(teacher), 2).eval()
    tokenizer = load_tokenizer(str(teacher))
    params = ExplainParams(partition_size=1000)
    for method in Method:
        explainer = make_explainer(method, model, params, tokenizer.mask_token_id)
        for split, limit in (("train", train), ("dev", dev)):
            data = load_dataset(glue_dir, task, split, limit)
            encoded = encode(tokenizer, data.examples, 64)
            out = explainer.explain(collate(encoded, tokenizer.pad_token_id))
            rows = []
            for b, (ex, enc) in enumerate(zip(data.examples, encoded)):
                n = len(enc.input_ids)
                views, sel = out.views, out.selection
                rows.append(CachedExample(
                    ex.example_id, split, ex.label, ex.text_a, ex.text_b, enc.input_ids, enc.token_type_ids,
                    enc.special_mask, enc.offsets, out.attribution[b, :n].detach().float().numpy(),
                    out.logits[b].detach().float().numpy(),
                    None if views is None else views.masks[b, :, :n].numpy(),
                    None if views is None else views.logits[b].float().numpy(),
                    None if sel is None else sel.mask[b, :n].numpy(),
                    None if sel is None else sel.logits[b].float().numpy(),
                ))
            meta = CacheMetadata(
                SCHEMA_VERSION, "test", "sst2", split, method.value,
                json.dumps(asdict(getattr(params, method.value))), str(teacher), str(base),
                weights_hash(str(teacher)), tokenizer_hash(tokenizer), data.fingerprint, data.source,
                limit, 64, 2, task.labels, 1000, 1, len(rows),
            )
            write_part(part_path(root, method.value, split, 0), meta, 0, rows, truncated=0)
    return root


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
