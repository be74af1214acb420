"""The explanation families: one enum, the single place their names are declared.

Every other module refers to a family through :class:`Method` (the explainer and
objective registries are keyed by it, params are typed with it), so adding a
family starts here; ``docs/method.md`` has the whole checklist.
"""

from __future__ import annotations

from enum import Enum

from pipeline.errors import EgkdError

NO_METHOD = "none"  # the distill "method" of the baselines: no explanation term


class Method(str, Enum):
    GRADIENT = "gradient"
    PERTURBATION = "perturbation"
    FEATURE_SELECTION = "feature_selection"

    def __str__(self) -> str:  # the name users type, in messages and f-strings alike
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def parse(cls, name: str) -> Method:
        try:
            return cls(name)
        except ValueError:
            raise EgkdError(f"unknown method {name!r}; methods: {', '.join(m.value for m in cls)}") from None

    @property
    def label(self) -> str:
        """The family's name for tables and headings ("feature selection")."""
        return self.value.replace("_", " ")


def method_or_none(name: str) -> Method | None:
    """``"none"`` -> None (no explanation term), else the :class:`Method` of that name."""
    return None if name == NO_METHOD else Method.parse(name)
