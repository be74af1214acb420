"""Build a real explanation cache from a tiny teacher (all methods, train and dev) for stage-two tests."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import make_tiny_model_dir

from pipeline.cache.extras import to_host
from pipeline.cache.format import explained_table
from pipeline.cache.schema import SCHEMA_VERSION, CacheMetadata
from pipeline.cache.store import part_path, write_table
from pipeline.config import ExplainParams
from pipeline.data import load_dataset
from pipeline.encoding import collate, encode
from pipeline.explain import explainer_class, make_explainer
from pipeline.explain.record import method_params_json
from pipeline.methods import Method
from pipeline.models import load_classifier, load_tokenizer, tokenizer_hash, weights_hash
from pipeline.tasks import get_task


def build_cache(
    root: Path, teacher: Path, base: Path, glue_dir: Path, train: int = 24, dev: int = 12, task_name: str = "sst2"
) -> Path:
    task = get_task(task_name)
    model = load_classifier(str(teacher), task.num_labels).eval()
    tokenizer = load_tokenizer(str(teacher))
    params = ExplainParams(partition_size=1000)
    for method in Method:
        explainer = make_explainer(method, model, params, tokenizer.mask_token_id)
        for split, limit in (("train", train), ("dev", dev)):
            data = load_dataset(glue_dir, task, split, limit)
            encoded = encode(tokenizer, data.examples, 64)
            explanation = explainer.explain(collate(encoded, tokenizer.pad_token_id))
            extras = tuple(kind.kind for kind in explainer_class(method).cached_extras())
            table = explained_table(
                data.examples,
                encoded,
                explanation.attribution.detach().float().numpy(),
                explanation.logits.detach().float().numpy(),
                to_host(explanation.extras),
                extras,
            )
            meta = CacheMetadata(
                schema_version=SCHEMA_VERSION,
                egkd_version="test",
                task=task.name,
                split=split,
                method=method.value,
                method_params=method_params_json(method, params),
                precision="fp32",
                extras=extras,
                teacher=str(teacher),
                teacher_base=str(base),
                teacher_weights_hash=weights_hash(str(teacher)),
                tokenizer_hash=tokenizer_hash(tokenizer),
                dataset_fingerprint=data.fingerprint,
                dataset_source=data.source,
                limit=limit,
                max_length=64,
                num_labels=task.num_labels,
                label_names=task.labels,
                partition_size=1000,
                num_parts=1,
                num_examples=table.num_rows,
            )
            write_table(part_path(root, method.value, split, 0), meta, 0, table, truncated=0)
    return root


def tiny_cache(root: Path, glue_dir: Path) -> Path:
    """``root/cache``: every method's partitions (train 24, dev 12) from a tiny seeded teacher in ``root/teacher``."""
    teacher = make_tiny_model_dir(root / "teacher", seed=0)
    make_tiny_model_dir(root / "base", seed=1)
    return build_cache(root / "cache", teacher, root / "base", glue_dir)


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
