"""The CSV files behind ``dvc plots``: training-loss curves, the variant comparison and the retention per set.

``dvc plots show`` renders them with the templates in ``.dvc/plots/``: the loss
curves one line per student, coloured by variant; the comparison one bar per
variant and measure, with the standard deviation over seeds as an error bar; the
retention of the teacher's metric one bar per evaluation set and variant, with its
95 % interval over the seeds.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from pipeline.report.data import ExperimentSummary, LossPoint, StudentRun

SMOOTHING_WINDOW = 10  # steps in the trailing mean of the smoothed loss


def smoothed(points: Sequence[LossPoint], window: int = SMOOTHING_WINDOW) -> list[float]:
    """Trailing mean of the loss over the last ``window`` steps (fewer at the start)."""
    out, total = [], 0.0
    for i, point in enumerate(points):
        total += point.loss
        if i >= window:
            total -= points[i - window].loss
        out.append(total / min(i + 1, window))
    return out


def write_loss_csv(runs: Sequence[StudentRun], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "variant", "seed", "step", "loss", "loss_smoothed"])
        for run in sorted(runs, key=lambda r: r.name):
            for point, smooth in zip(run.losses, smoothed(run.losses), strict=False):
                writer.writerow(
                    [
                        run.name,
                        run.variant,
                        "" if run.seed is None else run.seed,
                        point.step,
                        f"{point.loss:.6f}",
                        f"{smooth:.6f}",
                    ]
                )


def comparison_rows(summary: ExperimentSummary) -> list[dict[str, object]]:
    """Long format: one row per (variant, measure) with mean, std and the number of runs."""
    rows: list[dict[str, object]] = []
    for v in summary.variants:
        measures = [(summary.main_name, v.main)]
        measures += [(f"spearman {m}", stat) for m, stat in v.spearman.items()]
        measures += [(f"top-k overlap {m}", stat) for m, stat in v.top_k_overlap.items()]
        for measure, stat in measures:
            rows.append(
                {
                    "variant": v.variant,
                    "measure": measure,
                    "mean": round(stat.mean, 6),
                    "std": round(stat.std, 6),
                    "n": stat.n,
                }
            )
    return rows


def write_comparison_csv(summary: ExperimentSummary, path: Path) -> None:
    _write_rows(path, ["variant", "measure", "mean", "std", "n"], comparison_rows(summary))


def retention_rows(summary: ExperimentSummary) -> list[dict[str, object]]:
    """One row per evaluation set and variant with a retention: its mean and 95 % interval (empty for one seed)."""
    rows: list[dict[str, object]] = []
    for row in summary.sets.rows if summary.sets is not None else ():
        if row.retention is not None:
            low, high = row.retention.low, row.retention.high
            rows.append(
                {
                    "set": row.set,
                    "variant": row.variant,
                    "retention": round(row.retention.mean, 6),
                    "ci95_low": "" if low is None else round(low, 6),
                    "ci95_high": "" if high is None else round(high, 6),
                }
            )
    return rows


def write_retention_csv(summary: ExperimentSummary, path: Path) -> None:
    _write_rows(path, ["set", "variant", "retention", "ci95_low", "ci95_high"], retention_rows(summary))


def _write_rows(path: Path, fields: list[str], rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
