"""Task metrics (accuracy, F1, Matthews, Pearson/Spearman) as typed results.

``compute_metrics(task, preds, labels)`` returns a :class:`TaskMetrics` whose
``main`` is the task's first metric (the one GLUE reports) and whose ``values``
lists every metric of the task as ``(name, value)`` pairs, in the task's order.
``predictions_from_logits`` turns model outputs into what ``compute_metrics``
expects: class indices for classification, scores for regression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from pipeline.tasks import Metric, TaskSpec


@dataclass(frozen=True)
class TaskMetrics:
    """Metrics of one task on one set of predictions."""

    main_name: str
    main: float
    values: tuple[tuple[str, float], ...]
    count: int

    def get(self, metric: Metric | str) -> float:
        name = metric.value if isinstance(metric, Metric) else metric
        for key, value in self.values:
            if key == name:
                return value
        raise KeyError(name)


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(preds) == np.asarray(labels))) if len(labels) else 0.0


def f1_binary(preds: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 of the positive class; 0.0 when there are neither predicted nor true positives."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    tp = float(np.sum((preds == positive) & (labels == positive)))
    fp = float(np.sum((preds == positive) & (labels != positive)))
    fn = float(np.sum((preds != positive) & (labels == positive)))
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def matthews(preds: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (multi-class form); 0.0 when undefined (a constant prediction)."""
    preds, labels = np.asarray(preds).astype(int), np.asarray(labels).astype(int)
    classes = np.union1d(preds, labels)
    index = {c: i for i, c in enumerate(classes)}
    conf = np.zeros((len(classes), len(classes)), dtype=np.float64)
    for p, y in zip(preds, labels, strict=False):
        conf[index[y], index[p]] += 1
    t_k, p_k = conf.sum(axis=1), conf.sum(axis=0)
    c, s = np.trace(conf), conf.sum()
    denom = np.sqrt((s * s - p_k @ p_k) * (s * s - t_k @ t_k))
    return float((c * s - t_k @ p_k) / denom) if denom else 0.0


def _correlation(kind: Metric, preds: np.ndarray, labels: np.ndarray) -> float:
    preds, labels = np.asarray(preds, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if len(preds) < 2 or np.std(preds) == 0 or np.std(labels) == 0:
        return 0.0
    if kind is Metric.PEARSON:
        return float(stats.pearsonr(preds, labels)[0])
    return float(stats.spearmanr(preds, labels)[0])


def metric_value(metric: Metric, preds: np.ndarray, labels: np.ndarray) -> float:
    if metric is Metric.ACCURACY:
        return accuracy(preds, labels)
    if metric is Metric.F1:
        return f1_binary(preds, labels)
    if metric is Metric.MATTHEWS:
        return matthews(preds, labels)
    return _correlation(metric, preds, labels)


def compute_metrics(task: TaskSpec, preds: np.ndarray, labels: np.ndarray) -> TaskMetrics:
    """All of ``task``'s metrics; ``preds`` from :func:`predictions_from_logits`, shape (N,)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    if preds.shape != labels.shape:
        raise ValueError(f"predictions {preds.shape} and labels {labels.shape} differ in shape")
    values = tuple((m.value, metric_value(m, preds, labels)) for m in task.metrics)
    return TaskMetrics(values[0][0], values[0][1], values, int(len(labels)))


def predictions_from_logits(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """(N, C) logits -> (N,) class indices, or (N, 1) / (N,) scores -> (N,) floats for regression."""
    logits = np.asarray(logits)
    if task.is_regression:
        return logits.reshape(len(logits), -1)[:, 0].astype(np.float64)
    return logits.argmax(axis=-1)
