"""A model's logits over many examples, in length-bucketed batches, returned in the examples' own order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pipeline.encoding import EncodedExample, bucketed_batches, collate
from pipeline.models import Classifier


def predict_logits(
    model: Classifier, items: Sequence[EncodedExample], pad_token_id: int, batch_size: int
) -> np.ndarray:
    """``(N, C)`` float32 logits of ``items`` in their order (batches of similar length, longest first)."""
    model.eval()
    device = next(model.parameters()).device
    classes = int(model.config.num_labels)
    out = np.zeros((len(items), classes), dtype=np.float32)
    with torch.inference_mode():
        for indices in bucketed_batches(items, batch_size):
            batch = collate([items[i] for i in indices], pad_token_id).to(device)
            out[indices] = model(**batch.model_inputs()).logits.float().cpu().numpy()
    return out
