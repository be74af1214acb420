"""The explainer interface and its registry.

Each explanation family is one :class:`Explainer` subclass, registered under
its :class:`~pipeline.methods.Method`. A family supplies ``attribute(batch)``: an
:class:`Explanation` whose ``attribution`` is ``(B, T)`` with zeros at special
tokens and padding, plus the extras of its own it caches for stage two, which
it declares in ``extras`` (:mod:`pipeline.cache.extras`). ``explain(batch)``, the
same for every family, adds the views built from that map
(:mod:`pipeline.explain.view_masks`); :meth:`Explainer.cached_extras` names everything
a row carries, which is all the cache, verification and student collation need
to know of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from pipeline.cache.extras import VIEW_KINDS, Extra, Extras
from pipeline.config import ExplainParams
from pipeline.draws import example_keys
from pipeline.encoding import TokenBatch
from pipeline.explain.view_masks import build_views
from pipeline.forwards import Runtime, to_device
from pipeline.methods import Method
from pipeline.models import Classifier


@dataclass(frozen=True)
class Explanation:
    attribution: torch.Tensor  # (B, T) float32, zero at special tokens and padding
    logits: torch.Tensor  # (B, C) teacher logits on the unperturbed input
    extras: Extras = field(default_factory=Extras)  # (B, ...) tensors of the kinds the explainer declares


class Explainer(ABC):
    """Computes one family's explanations of a classifier for a batch of inputs.

    ``explain`` runs on the batch's device with the :class:`~pipeline.forwards.Runtime` that the
    parameters give there (precision, padded tokens per forward) and never waits for the device: the
    caller copies the explanation out once per batch.
    """

    method: ClassVar[Method]
    extras: ClassVar[tuple[type[Extra], ...]] = ()  # what the family caches of its own beside the attribution

    def __init__(self, model: Classifier, params: ExplainParams, mask_token_id: int) -> None:
        self.model = model.eval()
        self.params = params
        self.mask_token_id = mask_token_id

    @classmethod
    def cached_extras(cls) -> tuple[type[Extra], ...]:
        """Everything a cached row of this family carries: its own extras, then the views of every kind."""
        return cls.extras + VIEW_KINDS

    @abstractmethod
    def attribute(self, batch: TokenBatch) -> Explanation:
        """The family's map of the model's predicted class for every example of ``batch``, and its own extras."""

    def explain(self, batch: TokenBatch) -> Explanation:
        """:meth:`attribute`, plus the views built from its map (``params.views``; empty with count 0)."""
        explanation = self.attribute(batch)
        views = build_views(
            self.model,
            batch,
            explanation.attribution,
            self.keys(batch),
            self.params.views,
            self.mask_token_id,
            self.runtime(batch),
        )
        return Explanation(explanation.attribution, explanation.logits, Extras(explanation.extras.items + views))

    @abstractmethod
    def copies(self, real: int) -> int:
        """Rows that one example of ``real`` explained tokens adds to the batch's largest forward pass.

        Perturbed copies, IG points, surrogate samples; times the padded length, that is the example's
        share of the token budget of a batch (:func:`pipeline.explain.part.plan_batches`).
        """

    def runtime(self, batch: TokenBatch) -> Runtime:
        return Runtime.of(self.params, batch.input_ids.device)

    def keys(self, batch: TokenBatch) -> torch.Tensor:
        """``(B,)`` int64 keys of the batch's examples on its device: the seeds of their random draws.

        Draws are :func:`~pipeline.draws.random_bits` of the key, a stream, a sample and a
        position, so they depend on the run seed and the example alone, never on which batch, device or
        worker it lands in: results are the same for any batching.
        """
        return to_device(example_keys(self.params.seed, batch.example_ids), batch.input_ids.device)

    def method_params(self) -> object:
        """This method's own parameters (recorded in the cache metadata)."""
        return self.params.method_params(self.method)


REGISTRY: dict[Method, type[Explainer]] = {}


def register(cls: type[Explainer]) -> type[Explainer]:
    REGISTRY[cls.method] = cls
    return cls


def explainer_class(method: Method) -> type[Explainer]:
    from pipeline.explain import register_families

    register_families()
    return REGISTRY[method]


def make_explainer(method: Method, model: Classifier, params: ExplainParams, mask_token_id: int) -> Explainer:
    return explainer_class(method)(model, params, mask_token_id)
