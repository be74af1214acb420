"""Stage one: the explanation methods (one module per family) and the run that caches them.

* :mod:`~pipeline.explain.base`: the :class:`Explainer` interface and its registry;
* :mod:`~pipeline.explain.gradient`, :mod:`~pipeline.explain.perturbation`,
  :mod:`~pipeline.explain.feature_selection`: one class per family (the forwards, draws and top-k they
  share with evaluation are the core modules :mod:`pipeline.forwards`, :mod:`pipeline.draws` and
  :mod:`pipeline.topk`);
* :mod:`~pipeline.explain.run` (the whole split, part by part, on dask workers) and
  :mod:`~pipeline.explain.part` (one part: encode, explain, write).
"""

from pipeline.explain import feature_selection, gradient, perturbation  # noqa: F401  (registration)
from pipeline.explain.base import REGISTRY, Explainer, Explanation, explainer_class, make_explainer

__all__ = ["REGISTRY", "Explainer", "Explanation", "explainer_class", "make_explainer"]
