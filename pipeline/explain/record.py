"""How a cache records the way it was explained, and the parameters read back from that record.

Stage one writes :func:`method_params_json` into the cache metadata (the method's
parameters, the seed and the views' parameters) and :func:`cached_kinds` (the extras its
rows carry); evaluation and the report explain a student exactly as the teacher was
explained by reading the parameters back with :func:`explain_params_from_cache`.
"""

from __future__ import annotations

import dataclasses
import json

from pipeline.cache.extras import VIEW_KINDS, Extra, Magnitude, Selection, Views
from pipeline.config import ExplainParams, PerturbationParams, section_from_dict
from pipeline.errors import EgkdError
from pipeline.methods import Method

# Each family's own extras, as its explainer declares them (Explainer.extras), read here without importing the
# explainers (torch): a rerun with nothing to compute rebuilds the metadata from them (explain.resume). A test holds
# the two equal for every family.
_OWN_EXTRAS: dict[Method, tuple[type[Extra], ...]] = {
    Method.GRADIENT: (Magnitude,),
    Method.PERTURBATION: (Views,),
    Method.FEATURE_SELECTION: (Selection,),
}


def cached_kinds(method: Method) -> tuple[str, ...]:
    """The kinds of extras every row of ``method``'s cache carries (``CacheMetadata.extras``): the family's own,
    then the views every family caches (:meth:`Explainer.cached_extras`)."""
    return tuple(kind.kind for kind in (*_OWN_EXTRAS[method], *VIEW_KINDS))


def method_params_json(method: Method, params: ExplainParams) -> str:
    """The parameters that change a method's results (not batch size or workers), as stable JSON.

    The views' parameters are under ``views``: parts made with other views are another run's.
    """
    own = dataclasses.asdict(params.method_params(method))
    if method is Method.PERTURBATION:  # spans recorded only when used: caches made before them keep their record
        own = {k: v for k, v in own.items() if PerturbationParams.DEFAULT_SPANS.get(k) != v}
    return json.dumps({"seed": params.seed, **own, "views": dataclasses.asdict(params.views)}, sort_keys=True)


def explain_params_from_cache(explain: ExplainParams, method: Method, method_params: str) -> ExplainParams:
    """``explain`` with the seed and the method's section replaced by the parameters the cache recorded.

    So a model is explained exactly as stage one explained the teacher. A record that does not parse
    as this egkd's parameters of ``method`` is an error naming the field, never silently replaced. The
    views are stage two's training data, not part of the map: the parameters returned build none
    (``views.count`` 0), so explaining a student for agreement costs no view forwards.
    """
    section = explain.method_params(method)
    try:
        recorded = json.loads(method_params)
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except ValueError as err:
        raise EgkdError(f"cache field 'method_params' is not readable JSON ({err})") from None
    seed = recorded.pop("seed", explain.seed)
    recorded.pop("views", None)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise EgkdError(f"cache field 'method_params': seed must be an integer, got {seed!r}")
    chosen = section_from_dict(type(section), recorded, f"method_params.{method.value}")
    views = dataclasses.replace(explain.views, count=0)
    return dataclasses.replace(explain, method=method, seed=seed, views=views, **{method.value: chosen})
