"""egkd: Explanation Guided Knowledge Distillation.

``pipeline`` is the library: GLUE data, models, explainers, the explanation
cache, distillation losses and training, evaluation and reports. ``stages``
holds the thin command-line entry points that call it.
"""

__version__ = "0.1.0"
