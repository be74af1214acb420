"""Inline SVG charts for the HTML report: loss curves and a bar chart with error bars (or intervals).

Plain SVG markup, no script: the page renders offline in any browser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
DASHES = ("", "6 3", "2 3", "8 3 2 3")


@dataclass(frozen=True)
class Series:
    label: str  # legend group (the variant)
    name: str  # the line's own name (the student)
    index: int  # position within its group (the seed's rank): picks the dash pattern
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    error: float  # half-width of the error bar
    colour: int | None = None  # the palette's colour (by variant); None: the bar's position


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(1, count)
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * step:
            step *= factor
            break
    first = math.floor(low / step + 1e-9) * step
    ticks = [round(first, 10)]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _fmt(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def line_chart(
    series: Sequence[Series], groups: Sequence[str], x_label: str, y_label: str, width: int = 860, height: int = 320
) -> str:
    """Lines coloured by group (legend on the right), dashed by their index within the group."""
    points = [p for s in series for p in s.points]
    if not points:
        return '<p class="note">No training logs found.</p>'
    left, right, top, bottom = 56, 170, 12, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    x_ticks = nice_ticks(0.0, max(x for x, _ in points))
    y_ticks = nice_ticks(min(0.0, min(y for _, y in points)), max(y for _, y in points))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0 or 1) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (y - y0) / (y1 - y0 or 1) * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(y_label)} by {escape(x_label)}">'
    ]
    for t in y_ticks:
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" class="tick" text-anchor="end">{_fmt(t)}</text>'
        )
    for t in x_ticks:
        parts.append(
            f'<text x="{sx(t):.1f}" y="{top + plot_h + 16}" class="tick" text-anchor="middle">{_fmt(t)}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" class="axis"/>'
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" class="axis"/>'
    )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" class="label" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    parts.append(
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" class="label" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    rank = {g: i for i, g in enumerate(groups)}
    for s in series:
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
        dash = DASHES[s.index % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour(rank.get(s.label, 0))}" '
            f'stroke-width="1.6" stroke-opacity="0.9"{dash_attr}><title>{escape(s.name)}</title></polyline>'
        )
    for i, group in enumerate(groups):
        y = top + 8 + i * 20
        parts.append(
            f'<line x1="{left + plot_w + 16}" x2="{left + plot_w + 40}" y1="{y}" y2="{y}" '
            f'stroke="{colour(i)}" stroke-width="3"/>'
            f'<text x="{left + plot_w + 46}" y="{y + 4}" class="legend">{escape(group)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    bars: Sequence[Bar], x_label: str, reference: float | None = None, reference_label: str = "", width: int = 860
) -> str:
    """Horizontal bars with error bars; an optional dashed reference line (e.g. the teacher)."""
    if not bars:
        return ""
    left, right, top, row = max(150, 7 * max(len(b.label) for b in bars) + 16), 30, 10, 26  # room for the labels
    height = top + row * len(bars) + 46
    plot_w = width - left - right
    values = [b.value - b.error for b in bars] + [b.value + b.error for b in bars]
    values += [reference] if reference is not None else []
    low = max(0.0, min(values) - 0.05 * (max(values) - min(values) or 1))
    ticks = nice_ticks(low, max(values))
    x0, x1 = ticks[0], ticks[-1]

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0 or 1) * plot_w

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(x_label)}">'
    ]
    bottom = top + row * len(bars)
    for t in ticks:
        parts.append(
            f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top}" y2="{bottom}" class="grid"/>'
            f'<text x="{sx(t):.1f}" y="{bottom + 16}" class="tick" text-anchor="middle">{_fmt(t)}</text>'
        )
    for i, bar in enumerate(bars):
        y = top + i * row
        mid = y + row / 2
        lo, hi = sx(bar.value - bar.error), sx(bar.value + bar.error)
        fill = colour(i if bar.colour is None else bar.colour)
        parts.append(
            f'<text x="{left - 8}" y="{mid + 4:.1f}" class="legend" text-anchor="end">'
            f"{escape(bar.label)}</text>"
            f'<rect x="{left}" y="{y + 4}" width="{max(0.0, sx(bar.value) - left):.1f}" height="{row - 8}" '
            f'fill="{fill}" fill-opacity="0.85"><title>{escape(bar.label)}: {bar.value:.4f} '
            f"± {bar.error:.4f}</title></rect>"
            f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{mid:.1f}" y2="{mid:.1f}" class="whisker"/>'
            f'<line x1="{lo:.1f}" x2="{lo:.1f}" y1="{mid - 5:.1f}" y2="{mid + 5:.1f}" class="whisker"/>'
            f'<line x1="{hi:.1f}" x2="{hi:.1f}" y1="{mid - 5:.1f}" y2="{mid + 5:.1f}" class="whisker"/>'
        )
    if reference is not None:
        x = sx(reference)
        # the label right of the line, or left of it where it would run off the chart (a reference at the axis' end)
        fits = x + 4 + 7 * len(reference_label) <= width
        anchor = f'x="{x + 4:.1f}"' if fits else f'x="{x - 4:.1f}" text-anchor="end"'
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{bottom}" '
            f'class="reference"/><text {anchor} y="{top + 8}" class="tick">'
            f"{escape(reference_label)}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" class="label" text-anchor="middle">'
        f"{escape(x_label)}</text></svg>"
    )
    return "".join(parts)
