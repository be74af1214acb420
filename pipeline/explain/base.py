"""The explainer interface and its registry.

Each explanation family is one :class:`Explainer` subclass, registered under
its :class:`Method`. ``explain(batch)`` returns an :class:`Explanation` whose
``attribution`` is ``(B, T)`` with zeros at special tokens and padding, plus
the typed extras its family caches for stage two.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import torch

from pipeline.config import ExplainParams
from pipeline.encoding import TokenBatch
from pipeline.errors import EgkdError


class Method(str, Enum):
    GRADIENT = "gradient"
    PERTURBATION = "perturbation"
    FEATURE_SELECTION = "feature_selection"

    @classmethod
    def parse(cls, name: str) -> Method:
        try:
            return cls(name)
        except ValueError:
            raise EgkdError(f"unknown method {name!r}; methods: {', '.join(m.value for m in cls)}") from None


@dataclass(frozen=True)
class PerturbedViews:
    """The teacher's outputs on the perturbed inputs stage two trains on (perturbation family)."""

    masks: torch.Tensor  # (B, P, T) bool: tokens replaced by [MASK] in each view
    logits: torch.Tensor  # (B, P, C) teacher logits on each view


@dataclass(frozen=True)
class Selection:
    """The instance-wise token selection (feature-selection family)."""

    mask: torch.Tensor  # (B, T) bool: the k selected tokens
    logits: torch.Tensor  # (B, C) teacher logits when only the selected tokens are kept


@dataclass(frozen=True)
class Explanation:
    attribution: torch.Tensor  # (B, T) float32, zero at special tokens and padding
    logits: torch.Tensor  # (B, C) teacher logits on the unperturbed input
    views: PerturbedViews | None = None
    selection: Selection | None = None


class Explainer(ABC):
    """Computes one family's explanations of a classifier for a batch of inputs."""

    method: ClassVar[Method]

    def __init__(self, model: torch.nn.Module, params: ExplainParams, mask_token_id: int) -> None:
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
        return getattr(self.params, self.method.value)


REGISTRY: dict[Method, type[Explainer]] = {}


def register(cls: type[Explainer]) -> type[Explainer]:
    REGISTRY[cls.method] = cls
    return cls


def make_explainer(method: Method, model: torch.nn.Module, params: ExplainParams,
                   mask_token_id: int) -> Explainer:
    # Importing the package registers every method.
    import pipeline.explain  # noqa: F401

    return REGISTRY[method](model, params, mask_token_id)
