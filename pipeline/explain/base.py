"""The explainer interface and its registry.

Each explanation family is one :class:`Explainer` subclass, registered under
its :class:`~pipeline.methods.Method`. ``explain(batch)`` returns an
:class:`Explanation` whose ``attribution`` is ``(B, T)`` with zeros at special
tokens and padding, plus the extras its family caches for stage two; a class
declares those in ``extras`` (:mod:`pipeline.cache.extras`), which is all the
cache, verification and student collation need to know of them.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from pipeline.cache.extras import Extra, Extras
from pipeline.config import ExplainParams
from pipeline.encoding import TokenBatch
from pipeline.methods import Method
from pipeline.models import Classifier


@dataclass(frozen=True)
class Explanation:
    attribution: torch.Tensor  # (B, T) float32, zero at special tokens and padding
    logits: torch.Tensor  # (B, C) teacher logits on the unperturbed input
    extras: Extras = field(default_factory=Extras)  # (B, ...) tensors of the kinds the explainer declares


class Explainer(ABC):
    """Computes one family's explanations of a classifier for a batch of inputs."""

    method: ClassVar[Method]
    extras: ClassVar[tuple[type[Extra], ...]] = ()  # what stage one caches beside the attribution

    def __init__(self, model: Classifier, params: ExplainParams, mask_token_id: int) -> None:
        self.model = model.eval()
        self.params = params
        self.mask_token_id = mask_token_id

    @abstractmethod
    def explain(self, batch: TokenBatch) -> Explanation:
        """Explain the model's predicted class for every example of ``batch``."""

    def example_generator(self, example_id: str) -> torch.Generator:
        """A random generator seeded by the run seed and the example id.

        Random choices then depend on the example alone, never on which batch or
        worker it lands in, so results are the same for any batch size.
        """
        digest = hashlib.sha256(f"{self.params.seed}:{example_id}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))

    def method_params(self) -> object:
        """This method's own parameters (recorded in the cache metadata)."""
        return self.params.method_params(self.method)


REGISTRY: dict[Method, type[Explainer]] = {}


def register(cls: type[Explainer]) -> type[Explainer]:
    REGISTRY[cls.method] = cls
    return cls


def explainer_class(method: Method) -> type[Explainer]:
    import pipeline.explain  # noqa: F401  (importing the package registers every method)

    return REGISTRY[method]


def make_explainer(method: Method, model: Classifier, params: ExplainParams, mask_token_id: int) -> Explainer:
    return explainer_class(method)(model, params, mask_token_id)
