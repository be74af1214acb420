"""Explanation methods: one module per family, each registered in ``base.REGISTRY``."""

from pipeline.explain import feature_selection, gradient, perturbation  # noqa: F401  (registration)
from pipeline.explain.base import REGISTRY, Explainer, Explanation, Method, make_explainer

__all__ = ["REGISTRY", "Explainer", "Explanation", "Method", "make_explainer"]
