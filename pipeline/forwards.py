"""Forwards and chunking shared by the explainers, evaluation and faithfulness.

Everything here runs the same code on a CPU and on a GPU; the differences are the
:class:`Runtime`'s values (token budget, precision), never code paths. On a GPU
nothing here waits for the device: shapes and chunk sizes are planned on the host
from the batch's host copy (:meth:`TokenBatch.on_host`), and results stay on the
device until the caller copies them out once per batch.

* :func:`logits_of` runs the classifier (bf16 autocast where the runtime asks, a
  ready 4-D attention mask for SDPA models so transformers never inspects the mask
  on the host);
* :func:`full_logits` and :func:`masked_logits` run a batch and masked copies of its
  rows, the copies in chunks of about ``runtime.tokens`` padded tokens under
  ``torch.inference_mode`` (:func:`plan_chunks` cuts them);
* :func:`target_score` is the explained score (the predicted class's probability);
* :func:`frozen_parameters` turns weight gradients off while input gradients are taken.

Random draws are in :mod:`pipeline.draws`, top-k selections in :mod:`pipeline.topk`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.config import Compile, ExplainParams, TokenBudget
from pipeline.encoding import TokenBatch
from pipeline.models import Classifier, token_type_inputs
from pipeline.precision import resolve_precision

LENGTH_MULTIPLE = {"cuda": 8}  # chunks padded to a multiple of this many tokens (tensor-core tiles); 1 elsewhere


@dataclass(frozen=True)
class Runtime:
    """How forwards run on one device: its precision and how many padded tokens one forward holds."""

    device: torch.device
    precision: str  # "fp32" or "bf16" (resolved, never "auto")
    tokens: int  # padded tokens per forward
    compile: Compile = "eager"

    @classmethod
    def of(cls, params: ExplainParams, device: torch.device | str) -> Runtime:
        device = torch.device(device)
        return cls(
            device,
            resolve_precision(params.precision, device.type),
            params.tokens_per_forward.on(device.type),
            params.compile,
        )

    @classmethod
    def default(cls, device: torch.device | str) -> Runtime:
        """fp32 and the device's default token budget (evaluation and faithfulness)."""
        device = torch.device(device)
        return cls(device, "fp32", TokenBudget().on(device.type))

    @property
    def length_multiple(self) -> int:
        return LENGTH_MULTIPLE.get(self.device.type, 1)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")


# --- the model call -------------------------------------------------------------------------------

_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def network(model: Classifier, mode: Compile) -> Any:
    """What runs ``model``: itself (``eager``), or its compiled form (one per model and mode).

    ``inductor`` compiles with dynamic shapes (one graph for every batch shape); ``cudagraphs`` adds CUDA
    graphs (``mode="reduce-overhead"``), which replays one recorded graph per distinct shape.
    """
    if mode == "eager":
        return model
    compiled = _COMPILED.setdefault(model, {})
    if mode not in compiled:
        compiled[mode] = torch.compile(model, dynamic=True, mode="reduce-overhead" if mode == "cudagraphs" else None)
    return compiled[mode]


def logits_of(
    model: Classifier,
    runtime: Runtime,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    padded: bool = True,
) -> torch.Tensor:
    """``(R, C)`` float32 logits of one forward, under the runtime's precision.

    For transformers models using SDPA the padding mask goes in as a ready ``(R, 1, 1, T)`` boolean
    mask, or as none when the host knows that no row is padded (``padded`` False: SDPA may then use its
    fused kernels): given a 2-D mask, transformers would ask the device whether any token is padded.
    """
    mask: torch.Tensor | None = attention_mask
    if getattr(getattr(model, "config", None), "_attn_implementation", None) == "sdpa":
        mask = attention_mask[:, None, None, :].bool() if padded else None
    call = network(model, runtime.compile)
    inputs = {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    if runtime.compile == "cudagraphs":
        torch.compiler.cudagraph_mark_step_begin()  # each forward is a new step: earlier outputs are ours to keep
    with runtime.autocast():
        out = call(**inputs, attention_mask=mask, **token_type_inputs(model, token_type_ids))
    logits = out.logits.float()
    return logits.clone() if runtime.compile == "cudagraphs" and logits is out.logits else logits


@dataclass(frozen=True)
class Chunk:
    start: int  # rows [start, stop) of the copies
    stop: int
    length: int  # padded length of the chunk: its longest row, rounded up to the runtime's multiple
    padded: bool = True  # some row is shorter than ``length``


def plan_chunks(lengths: np.ndarray, owner: np.ndarray, runtime: Runtime, width: int) -> list[Chunk]:
    """Cut copies (row ``r`` is a copy of batch row ``owner[r]``) into forwards of at most ``runtime.tokens``.

    Rows go in order; a chunk grows while ``rows * longest`` fits the budget (at least one row); its length
    is rounded up to the runtime's multiple, at most the batch ``width``. Planned on the host from the
    batch's host-side lengths, so nothing waits for the device.
    """
    row_lengths = lengths[owner] if len(owner) else np.zeros(0, dtype=np.int64)
    multiple = runtime.length_multiple

    def padded(length: int) -> int:
        return min(width, -(-length // multiple) * multiple)

    bounds, start, longest = [], 0, 0
    for row, length in enumerate(row_lengths.tolist()):
        grown = max(longest, padded(length))
        if row > start and (row - start + 1) * grown > runtime.tokens:
            bounds.append((start, row, longest))
            start, grown = row, padded(length)
        longest = grown
    if len(row_lengths):
        bounds.append((start, len(row_lengths), longest))
    return [Chunk(a, b, n, bool((row_lengths[a:b] < n).any())) for a, b, n in bounds]


def host_lengths(batch: TokenBatch) -> np.ndarray:
    """``(B,)`` tokens per row (padding excluded), from the batch's host copy."""
    return batch.on_host().attention_mask.sum(1).numpy()


def host_real(batch: TokenBatch) -> np.ndarray:
    """``(B, T)`` bool, True at the tokens that are explained (not special, not padding), on the host."""
    return ~batch.on_host().special_mask.numpy()


def to_device(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host array on ``device``, copied without waiting for the device's queue.

    To a GPU the array is pinned first: from pageable memory the driver may wait for the stream.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


# --- scores -------------------------------------------------------------------------------------


def target_score(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(R, C)`` logits, ``(R,)`` classes -> ``(R,)`` class probability (raw output if ``C == 1``)."""
    if logits.shape[-1] == 1:
        return logits[:, 0]
    return logits.softmax(-1).gather(1, target[:, None])[:, 0]


# --- forwards -------------------------------------------------------------------------------------


def full_logits(model: Classifier, batch: TokenBatch, runtime: Runtime | None = None) -> torch.Tensor:
    """``(B, C)`` float32 logits on the unperturbed batch (a normal tensor, not an inference one)."""
    runtime = runtime or Runtime.default(batch.input_ids.device)
    padded = bool((host_lengths(batch) < batch.input_ids.shape[1]).any())
    with torch.inference_mode():
        logits = logits_of(
            model, runtime, batch.attention_mask, batch.token_type_ids, input_ids=batch.input_ids, padded=padded
        )
    return logits.clone()


def masked_logits(
    model: Classifier,
    batch: TokenBatch,
    owner: torch.Tensor | np.ndarray,
    drop: torch.Tensor,
    mask_token_id: int,
    runtime: Runtime | None = None,
) -> torch.Tensor:
    """Logits on copies of batch rows with some tokens replaced by ``[MASK]``.

    ``owner`` ``(R,)``: the batch row each copy is made from (best given on the host: chunks are planned
    from it); ``drop`` ``(R, T)`` bool: the positions masked in it. Returns ``(R, C)`` float32. Each chunk
    holds about ``runtime.tokens`` padded tokens and is cut to its longest row (padding is on the right).
    """
    device = batch.input_ids.device
    runtime = runtime or Runtime.default(device)
    owner_host = owner if isinstance(owner, np.ndarray) else owner.cpu().numpy()
    owner_device = to_device(owner_host, device)
    drop = drop.to(device, non_blocking=True)
    out = []
    with torch.inference_mode():
        for chunk in plan_chunks(host_lengths(batch), owner_host, runtime, batch.input_ids.shape[1]):
            idx = owner_device[chunk.start : chunk.stop]
            ids, attention, types = _rows(batch, idx, chunk.length)
            ids = ids.masked_fill(drop[chunk.start : chunk.stop, : chunk.length], mask_token_id)
            out.append(logits_of(model, runtime, attention, types, input_ids=ids, padded=chunk.padded))
    if not out:
        return torch.empty(0, int(model.config.num_labels), device=device)
    return torch.cat(out)


def _rows(batch: TokenBatch, idx: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``idx`` of the batch's ids, attention mask and token types, cut to ``length``."""
    return batch.input_ids[idx, :length], batch.attention_mask[idx, :length], batch.token_type_ids[idx, :length]


@contextmanager
def frozen_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter for the duration, then restore it."""
    parameters = list(model.parameters())
    flags = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(parameters, flags, strict=True):
            p.requires_grad_(flag)
