"""The report as one self-contained HTML page: inline CSS and inline SVG, no script, no CDN.

Sections: the comparison table (mean ± std over seeds, and each variant's paired difference
to vanilla KD with its 95 % interval and McNemar's test), the dev metric as bars, with
evaluation sets their table and the retention of the teacher's metric per set and variant,
the training-loss curves, and explanation heatmaps of a few dev sentences, the
teacher's map above each student's own. In a heatmap a token's colour is the
sign of its score (red: for the explained class, blue: against) and its
opacity the score's magnitude relative to the largest in that row.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from pipeline.methods import Method
from pipeline.report.compare import Comparison
from pipeline.report.data import ExperimentSummary, StudentRun
from pipeline.report.heatmaps import HeatRow, SentenceHeatmaps, TokenScore
from pipeline.report.plots import smoothed
from pipeline.report.sets import SetsSummary
from pipeline.report.stats import PairedDifference, Stat
from pipeline.report.svg import Bar, Series, bar_chart, line_chart

METHOD_TITLES = {m.value: m.label for m in Method}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#222;padding:0 16px;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.meta{color:#555}.note{color:#666;font-size:.9em}
table.cmp{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:.6em 0;display:block;overflow-x:auto;
max-width:100%}
table.cmp th,table.cmp td{border:1px solid #ddd;padding:5px 10px;text-align:right;white-space:nowrap}
table.cmp th{background:#f4f5f7}table.cmp td:first-child,table.cmp th:first-child,table.cmp .name{text-align:left}
table.cmp td.best{font-weight:700;background:#eef6ee}table.cmp tr.teacher td{color:#555;font-style:italic}
.pm{color:#777;font-size:.88em}
svg.chart{font-size:12px;max-width:100%;height:auto}svg .grid{stroke:#e6e6e6}svg .axis{stroke:#888}
svg .tick{fill:#555}svg .label{fill:#333;font-size:13px}svg .legend{fill:#333}
svg .whisker{stroke:#222;stroke-width:1.3}svg .reference{stroke:#c00;stroke-dasharray:5 4;stroke-width:1.3}
.sentence{border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:14px 0;background:#fcfcfc}
.sentence h3{margin:.1em 0 .4em;font-size:1em;font-weight:600}
table.heat{border-collapse:collapse;margin:.3em 0 .8em;width:100%}
table.heat td{padding:3px 8px;vertical-align:top;border-bottom:1px solid #eee}
table.heat td.who{white-space:nowrap;width:150px;font-weight:600}
table.heat td.pred{white-space:nowrap;width:120px;color:#555;font-size:.9em}
table.heat tr.teacher td{background:#f7f7fb}
.text{line-height:1.9}.tok{border-radius:3px;padding:1px 1px}
.method{font-weight:600;margin-top:.4em;color:#444}
.key span{padding:1px 6px;border-radius:3px;margin-right:6px}
"""


def _stat(stat: Stat | None, digits: int = 4) -> str:
    if stat is None:
        return "–"
    spread = f' <span class="pm">± {stat.std:.{digits}f}</span>' if stat.n > 1 else ""
    return f"{stat.mean:.{digits}f}{spread}"


def _best(values: dict[int, Stat | None], lower: bool = False) -> int | None:
    """The row with the best mean among ``values`` (row -> stat), when there is a choice."""
    present = [(s.mean if not lower else -s.mean, row) for row, s in values.items() if s is not None]
    return max(present)[1] if len(present) > 1 else None


def _interval(d: PairedDifference | None, digits: int = 4, sign: str = "+") -> str:
    """A mean, and its 95 % interval beside it in small print."""
    if d is None:
        return "–"
    interval = "" if d.low is None or d.high is None else f"[{d.low:{sign}.{digits}f}, {d.high:{sign}.{digits}f}]"
    return f'{d.mean:{sign}.{digits}f} <span class="pm">{interval}</span>'


def _versus(comparison: Comparison | None, digits: int = 4) -> str:
    """The paired difference to another variant: mean, and its 95 % interval in small print."""
    return _interval(None if comparison is None else comparison.difference, digits)


def _mcnemar(comparison: Comparison | None) -> str:
    if comparison is None or comparison.mcnemar is None:
        return "–"
    pooled = comparison.mcnemar.pooled
    return f'{pooled.p_value:.3g} <span class="pm">({pooled.b}/{pooled.c})</span>'


BEST = ' class="best"'
MEASURES = ("Spearman ρ", "top-k overlap", "AOPC compr. ↑", "AOPC suff. ↓")


def comparison_table(summary: ExperimentSummary) -> str:
    """One row per variant and agreement method; bold: the best dev metric, and the best per method."""
    rows = summary.rows()
    best_main = _best({i: v.main for i, (v, _) in enumerate(rows)})
    best: dict[tuple[int, int], bool] = {}
    for name in summary.methods:
        for m in range(len(MEASURES)):
            column = {i: v.measures(name)[m] for i, (v, meth) in enumerate(rows) if meth == name}
            winner = _best(column, lower=(m == 3))
            if winner is not None:
                best[(winner, m)] = True
    head = "".join(f"<th>{title}</th>" for title in MEASURES)
    body = []
    for i, (v, method) in enumerate(rows):
        first = i == 0 or rows[i - 1][0] is not v
        span = sum(1 for other, _ in rows if other is v)
        cells = ""
        if first:
            main_class = BEST if best_main is not None and rows[best_main][0] is v else ""
            flag = ' <span class="pm">(one class!)</span>' if v.one_class else ""
            cells += (
                f'<td rowspan="{span}">{escape(v.variant)}{flag}</td><td rowspan="{span}">{len(v.runs)}</td>'
                f'<td rowspan="{span}"{main_class}>{_stat(v.main)}</td>'
                f'<td rowspan="{span}">{_versus(v.versus)}</td><td rowspan="{span}">{_mcnemar(v.versus)}</td>'
            )
        stats = v.measures(method) if method else (None,) * len(MEASURES)
        cells += f'<td class="name">{escape(METHOD_TITLES.get(method, method)) if method else "–"}</td>'
        shown = [_stat(stat) for stat in stats]
        agreement = v.own_agreement(method)
        if agreement is not None:
            shown[0] += f'<br><span class="pm">vs {escape(summary.reference)} {agreement.signed(3)}</span>'
        cells += "".join(f"<td{BEST if best.get((i, m)) else ''}>{text}</td>" for m, text in enumerate(shown))
        body.append(f"<tr>{cells}</tr>")
    if summary.teacher is not None:
        body.append(
            f'<tr class="teacher"><td>teacher</td><td>1</td><td>{summary.teacher.main:.4f}</td>'
            + "<td></td>" * (len(MEASURES) + 3)
            + "</tr>"
        )
    return (
        f'<table class="cmp"><tr><th>variant</th><th>runs</th><th>dev {escape(summary.main_name)}</th>'
        f"<th>vs {escape(summary.reference)} [95% CI]</th><th>McNemar p (b/c)</th>"
        f'<th class="name">agreement with</th>{head}</tr>{"".join(body)}</table>'
    )


def accuracy_bars(summary: ExperimentSummary) -> str:
    bars = [Bar(v.variant, v.main.mean, v.main.std) for v in summary.variants]
    teacher = summary.teacher
    return bar_chart(
        bars,
        f"dev {summary.main_name} (mean ± std over seeds)",
        teacher.main if teacher else None,
        "teacher" if teacher else "",
    )


def sets_table(sets: SetsSummary) -> str:
    """One row per evaluation set and variant, the teacher's first; bold: the best main metric of each set."""
    random = escape(sets.random or "random views")
    head = (
        "<tr><th>set</th><th>variant</th><th>runs</th><th>metric</th><th>retention [95% CI]</th>"
        f"<th>vs {escape(sets.reference)} [95% CI]</th><th>McNemar p (b/c)</th><th>vs {random} [95% CI]</th>"
        "<th>McNemar p (b/c)</th></tr>"
    )
    body = []
    for name in sets.names:
        rows = [row for row in sets.rows if row.set == name]
        best = _best({i: row.main for i, row in enumerate(rows)})
        teacher = sets.teacher.get(name)
        if teacher is not None:
            body.append(
                f'<tr class="teacher"><td>{escape(name)}</td><td>teacher</td><td>1</td>'
                f"<td>{escape(teacher.main_name)} {teacher.main:.4f}</td>" + "<td></td>" * 5 + "</tr>"
            )
        for i, row in enumerate(rows):
            flag = ' <span class="pm">(one class!)</span>' if row.one_class else ""
            body.append(
                f"<tr><td>{escape(name)}</td><td>{escape(row.variant)}{flag}</td><td>{row.runs}</td>"
                f"<td{BEST if best == i else ''}>{escape(row.main_name)} {_stat(row.main)}</td>"
                f"<td>{_interval(row.retention, sign='')}</td><td>{_versus(row.versus)}</td>"
                f"<td>{_mcnemar(row.versus)}</td><td>{_versus(row.versus_random)}</td>"
                f"<td>{_mcnemar(row.versus_random)}</td></tr>"
            )
    return f'<table class="cmp">{head}{"".join(body)}</table>'


def retention_bars(sets: SetsSummary, variants: Sequence[str]) -> str:
    """The retention of the teacher's metric per set and variant, with its 95 % interval; colour by variant."""
    rank = {name: i for i, name in enumerate(variants)}
    bars = [
        Bar(
            f"{row.set} · {row.variant}",
            row.retention.mean,
            0.0 if row.retention.high is None else row.retention.high - row.retention.mean,
            rank.get(row.variant),
        )
        for row in sets.rows
        if row.retention is not None
    ]
    if not bars:
        return '<p class="note">No teacher evaluation (egkd report --teacher-eval): no retention.</p>'
    title = "retention of the teacher's metric (student / teacher; mean over seeds, 95% interval)"
    return bar_chart(bars, title, 1.0, "teacher")


def sets_section(summary: ExperimentSummary) -> str:
    sets = summary.sets
    if sets is None:
        return ""
    return f"""<h2>Held-out and shifted data</h2>
<p class="note">Every student and the teacher scored on each evaluation set (experiment.eval_sets: forwards only;
explanation agreement and AOPC stay on the dev sentences). Metric: mean ± sample standard deviation over seeds.
Retention: the student's metric over the teacher's on the same set, mean and 95% Student-t interval over the seeds.
vs {escape(sets.reference)} and vs {escape(sets.random or "random views")}: the mean paired difference to that
variant's run of the same seed with its 95% interval, and McNemar's exact test on the set's predictions pooled over
the seeds. {escape(sets.random or "KD on random views")} is KD with the augmentation and without an explanation:
what a guided variant gains over it is the explanation's share.</p>
{sets_table(sets)}
{retention_bars(sets, [v.variant for v in summary.variants])}
"""


def loss_curves(runs: Sequence[StudentRun], groups: Sequence[str]) -> str:
    series = []
    for group in groups:
        members = sorted((r for r in runs if r.variant == group), key=lambda r: (r.seed is None, r.seed))
        for index, run in enumerate(members):
            values = smoothed(run.losses)
            points = tuple((p.step, v) for p, v in zip(run.losses, values, strict=True))
            series.append(Series(group, run.name, index, points))
    return line_chart(series, groups, "training step", "total loss (trailing mean)")


def _tint(score: float, scale: float) -> str:
    if scale <= 0 or score == 0:
        return "transparent"
    alpha = min(1.0, abs(score) / scale) * 0.85
    rgb = "214,39,40" if score > 0 else "31,119,180"
    return f"rgba({rgb},{alpha:.3f})"


def highlighted(text: str, tokens: Sequence[TokenScore], segment: int) -> str:
    """``text`` with each token's span coloured by its score (merged sub-word spans stay apart)."""
    mine = sorted((t for t in tokens if t.segment == segment), key=lambda t: t.start)
    scale = max((abs(t.score) for t in tokens), default=0.0)
    out, cursor = [], 0
    for token in mine:
        if token.start < cursor:
            continue
        out.append(escape(text[cursor : token.start]))
        piece = escape(text[token.start : token.end])
        out.append(
            f'<span class="tok" style="background:{_tint(token.score, scale)}" '
            f'title="{token.score:+.4f}">{piece}</span>'
        )
        cursor = token.end
    out.append(escape(text[cursor:]))
    return "".join(out)


def _heat_row(row: HeatRow, sentence: SentenceHeatmaps) -> str:
    text = highlighted(sentence.text_a, row.tokens, 0)
    if sentence.text_b is not None:
        text += " ‖ " + highlighted(sentence.text_b, row.tokens, 1)
    cls = ' class="teacher"' if row.who == "teacher" else ""
    return (
        f'<tr{cls}><td class="who">{escape(row.who)}</td><td class="pred">{escape(row.prediction)} '
        f'({row.confidence:.2f})</td><td class="text">{text}</td></tr>'
    )


def heatmaps(sentences: Sequence[SentenceHeatmaps]) -> str:
    if not sentences:
        return '<p class="note">No dev partition in the caches given: no heatmaps.</p>'
    parts = [
        '<p class="key"><span style="background:rgba(214,39,40,.7)">for the explained class</span>'
        '<span style="background:rgba(31,119,180,.7)">against it</span> opacity: |score| relative to the '
        "row's largest; the explained class is each model's own prediction (shown with its probability).</p>"
    ]
    for sentence in sentences:
        parts.append(
            f'<div class="sentence"><h3>{escape(sentence.example_id)} · gold label: {escape(sentence.label)}</h3>'
        )
        for block in sentence.blocks:
            rows = "".join(_heat_row(row, sentence) for row in block.rows)
            parts.append(
                f'<div class="method">{escape(METHOD_TITLES.get(block.method, block.method))}</div>'
                f'<table class="heat">{rows}</table>'
            )
        parts.append("</div>")
    return "".join(parts)


def render_page(
    summary: ExperimentSummary,
    runs: Sequence[StudentRun],
    sentences: Sequence[SentenceHeatmaps],
    notes: Sequence[str] = (),
) -> str:
    groups = [v.variant for v in summary.variants]
    teacher = summary.teacher
    teacher_line = (
        ""
        if teacher is None
        else (
            f" Teacher: dev {escape(teacher.main_name)} {teacher.main:.4f}"
            + (f", fine-tuned on {teacher.train_examples:,} examples." if teacher.train_examples else ".")
        )
    )
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    seed_list = ", ".join(map(str, seeds)) or "–"
    extra = "".join(f'<p class="note">{escape(n)}</p>' for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>egkd report: {escape(summary.task)}</title>
<style>{CSS}</style></head><body>
<h1>Explanation Guided Knowledge Distillation: {escape(summary.task)}</h1>
<p class="meta">{len(runs)} students, {len(groups)} variants, seeds {seed_list}.{teacher_line}</p>
{extra}
<h2>Comparison</h2>
<p class="note">Mean ± sample standard deviation over seeds. vs {escape(summary.reference)}: the mean
difference in dev {escape(summary.main_name)} to the {escape(summary.reference)} run of the same seed, with its
95% Student-t interval over the seeds (an interval that excludes 0 is a difference the seeds can tell).
McNemar p: exact test on the dev predictions, example by example, pooled over the seeds; b / c: examples
only this variant / only {escape(summary.reference)} gets right. Spearman ρ: rank correlation of the student's
explanation with the teacher's over the sentence's tokens; top-k overlap: share of the student's top-scored
tokens among the teacher's (for feature selection, among its selected tokens). Both measured on the dev
sentences explained in stage one, each method with its own explainer. Best value per column in bold.</p>
{comparison_table(summary)}
{accuracy_bars(summary)}
{sets_section(summary)}<h2>Training loss</h2>
<p class="note">Total loss per step (trailing mean over 10 steps); one line per student, colour by variant,
dash pattern by seed.</p>
{loss_curves(runs, groups)}
<h2>Explanations of dev sentences</h2>
{heatmaps(sentences)}
</body></html>
"""
