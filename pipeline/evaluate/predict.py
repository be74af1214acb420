"""A model's logits over many examples, in length-bucketed batches, returned in the examples' own order.

Batches hold sentences of similar length, longest first, cut by two budgets: at most ``batch_size``
sentences and at most ``batch_tokens`` padded tokens (sentences x the longest), so a GPU gets large
batches of short sentences and a batch of long ones still fits its memory. A sentence longer than the
token budget forms a batch of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from pipeline.device import Compute, module_device
from pipeline.encoding import EncodedExample, collate
from pipeline.models import Classifier


def token_batches(lengths: Sequence[int], batch_size: int, batch_tokens: int | None = None) -> Iterator[list[int]]:
    """Indices by decreasing length (stable), in batches of at most ``batch_size`` rows and ``batch_tokens`` tokens.

    Without a token budget these are the batches of :func:`pipeline.encoding.bucketed_batches`.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    budget = batch_tokens if batch_tokens is not None else float("inf")
    batch: list[int] = []
    for index in order:
        if batch and (len(batch) == batch_size or (len(batch) + 1) * lengths[batch[0]] > budget):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def predict_logits(
    model: Classifier,
    items: Sequence[EncodedExample],
    pad_token_id: int,
    batch_size: int,
    batch_tokens: int | None = None,
    compute: Compute | None = None,
) -> np.ndarray:
    """``(N, C)`` float32 logits of ``items`` in their order, on the model's device.

    ``compute`` adds its autocast (bf16 where asked); the logits reach the host in one copy at the end.
    """
    model.eval()
    device = module_device(model)
    classes = int(model.config.num_labels)
    out = np.zeros((len(items), classes), dtype=np.float32)
    if not items:
        return out
    batches = list(token_batches([len(item.input_ids) for item in items], batch_size, batch_tokens))
    autocast = compute.autocast() if compute is not None else torch.autocast(device.type, enabled=False)
    with torch.inference_mode(), autocast:
        logits = [
            model(**collate([items[i] for i in indices], pad_token_id).to(device).model_inputs(model)).logits.float()
            for indices in batches
        ]
    out[np.concatenate([np.asarray(b, dtype=np.int64) for b in batches])] = torch.cat(logits).cpu().numpy()
    return out
