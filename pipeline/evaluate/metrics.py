"""Task metrics (accuracy, F1, macro-F1, Matthews, Pearson/Spearman) as typed results.

``compute_metrics(task, preds, labels)`` returns a :class:`TaskMetrics` whose
``main`` is the task's first metric (the one GLUE reports) and whose ``values``
lists every metric of the task as ``(name, value)`` pairs, in the task's order.
``predictions_from_logits`` turns model outputs into what ``compute_metrics``
expects: class indices for classification, scores for regression.

:func:`one_class` flags a classifier whose predictions fall 95 % or more into one class: its
metric may look like learning (SST-2's majority class is about half, QNLI's re-split 68 %), but it
has learnt next to nothing. Every :class:`TaskMetrics` carries the flag, so ``egkd distill``,
``egkd evaluate`` and the report all show it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.tasks import Metric, TaskSpec

ONE_CLASS_SHARE = 0.95  # a classifier predicting one class at least this often is flagged


@dataclass(frozen=True)
class OneClass:
    """Predictions that fall (almost) all into one class."""

    label: int  # the class index
    share: float  # of the predictions, >= ONE_CLASS_SHARE

    def note(self, labels: tuple[str, ...] | None = None, who: str = "the model") -> str:
        name = labels[self.label] if labels and 0 <= self.label < len(labels) else str(self.label)
        return (
            f"warning: {who} predicts class {name} for {self.share:.1%} of the examples "
            f"(flagged at {ONE_CLASS_SHARE:.0%} or more): it has learnt next to nothing but the class balance"
        )


def one_class(preds: np.ndarray, threshold: float = ONE_CLASS_SHARE) -> OneClass | None:
    """The class that takes ``threshold`` or more of the (N,) class predictions, else None (also for none)."""
    preds = np.asarray(preds)
    if preds.size == 0:
        return None
    classes, counts = np.unique(preds.astype(np.int64), return_counts=True)
    top = int(counts.argmax())
    share = float(counts[top]) / preds.size
    return OneClass(int(classes[top]), share) if share >= threshold else None


@dataclass(frozen=True)
class TaskMetrics:
    """Metrics of one task on one set of predictions."""

    main_name: str
    main: float
    values: tuple[tuple[str, float], ...]
    count: int
    one_class: OneClass | None = None  # classification predictions almost all of one class (never for regression)

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


def macro_f1(preds: np.ndarray, labels: np.ndarray) -> float:
    """The unweighted mean of each class's F1, over the classes that occur in ``labels`` or ``preds``.

    The classes are those of scikit-learn's ``f1_score(average="macro")``; 0.0 when there are no examples.
    """
    preds, labels = np.asarray(preds).astype(np.int64), np.asarray(labels).astype(np.int64)
    classes = np.union1d(preds, labels)
    if classes.size == 0:
        return 0.0
    return float(np.mean([f1_binary(preds, labels, int(c)) for c in classes]))


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
    from scipy import stats  # here, not at the top: scipy takes most of a second to import

    if kind is Metric.PEARSON:
        return float(stats.pearsonr(preds, labels)[0])
    return float(stats.spearmanr(preds, labels)[0])


def metric_value(metric: Metric, preds: np.ndarray, labels: np.ndarray) -> float:
    if metric is Metric.ACCURACY:
        return accuracy(preds, labels)
    if metric is Metric.F1:
        return f1_binary(preds, labels)
    if metric is Metric.MACRO_F1:
        return macro_f1(preds, labels)
    if metric is Metric.MATTHEWS:
        return matthews(preds, labels)
    return _correlation(metric, preds, labels)


def compute_metrics(task: TaskSpec, preds: np.ndarray, labels: np.ndarray) -> TaskMetrics:
    """All of ``task``'s metrics; ``preds`` from :func:`predictions_from_logits`, shape (N,)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    if preds.shape != labels.shape:
        raise ValueError(f"predictions {preds.shape} and labels {labels.shape} differ in shape")
    values = tuple((m.value, metric_value(m, preds, labels)) for m in task.metrics)
    flag = None if task.is_regression else one_class(preds)
    return TaskMetrics(values[0][0], values[0][1], values, int(len(labels)), flag)


def predictions_from_logits(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """(N, C) logits -> (N,) class indices, or (N, 1) / (N,) scores -> (N,) floats for regression."""
    logits = np.asarray(logits)
    if task.is_regression:
        return logits.reshape(len(logits), -1)[:, 0].astype(np.float64)
    return logits.argmax(axis=-1)
