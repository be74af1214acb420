"""Evaluation: task metrics, explanation agreement with the teacher, and faithfulness.

* :mod:`~pipeline.evaluate.metrics`: the GLUE task metrics as typed results;
* :mod:`~pipeline.evaluate.predict`: a model's logits over many examples, length-bucketed;
* :mod:`~pipeline.evaluate.faithfulness`: AOPC comprehensiveness / sufficiency, rank agreement, top-k overlap;
* :mod:`~pipeline.evaluate.run`: ``egkd evaluate``, a model against the data and the caches.
* :mod:`~pipeline.evaluate.sets`: the held-out and shifted sets a model is also scored on.
"""
