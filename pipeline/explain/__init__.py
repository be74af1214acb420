"""Stage one: the explanation methods (one module per family) and the run that caches them.

* :mod:`~pipeline.explain.base`: the :class:`Explainer` interface and its registry;
* :mod:`~pipeline.explain.gradient`, :mod:`~pipeline.explain.perturbation`,
  :mod:`~pipeline.explain.feature_selection`: one class per family, each module named after its
  :class:`~pipeline.methods.Method` (the forwards, draws and top-k they share with evaluation are the core
  modules :mod:`pipeline.forwards`, :mod:`pipeline.draws` and :mod:`pipeline.topk`);
* :mod:`~pipeline.explain.run` (the whole split, part by part, on dask workers),
  :mod:`~pipeline.explain.resume` (the parts a rerun keeps) and :mod:`~pipeline.explain.part` (one part:
  encode, explain, write).

Importing the package imports no family, nor torch: a rerun with nothing to compute decides so without them
(:mod:`~pipeline.explain.resume`). The registry's names below import every family when first asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.methods import Method

if TYPE_CHECKING:
    from pipeline.explain.base import REGISTRY, Explainer, Explanation, explainer_class, make_explainer

__all__ = ["REGISTRY", "Explainer", "Explanation", "explainer_class", "make_explainer", "register_families"]


def register_families() -> None:
    """Import every family's module (``pipeline.explain.<method>``), which registers its explainer."""
    for method in Method:
        importlib.import_module(f"pipeline.explain.{method.value}")


def __getattr__(name: str) -> Any:
    if name in ("REGISTRY", "Explainer", "Explanation", "explainer_class", "make_explainer"):
        from pipeline.explain import base

        register_families()
        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
