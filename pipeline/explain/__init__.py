"""Stage one: the explanation methods (one module per family) and the run that caches them.

* :mod:`~pipeline.explain.base`: the :class:`Explainer` interface and its registry;
* :mod:`~pipeline.explain.gradient`, :mod:`~pipeline.explain.perturbation`,
  :mod:`~pipeline.explain.feature_selection`: one class per family;
* :mod:`~pipeline.explain._ops`: forwards, chunking and masking shared by the families and evaluation;
* :mod:`~pipeline.explain.run` (the whole split, part by part, on dask workers) and
  :mod:`~pipeline.explain.part` (one part: encode, explain, write).
"""

from pipeline.explain import feature_selection, gradient, perturbation  # noqa: F401  (registration)
from pipeline.explain.base import REGISTRY, Explainer, Explanation, explainer_class, make_explainer

__all__ = ["REGISTRY", "Explainer", "Explanation", "explainer_class", "make_explainer"]
