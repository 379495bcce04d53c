"""Server-made SVG charts for the admin pages: a time series and stacked horizontal bars.

Pure functions from numbers to SVG text, so the pages need no chart library and no
script: the browser scales each chart to its box (viewBox, width 100%), and every point
and segment carries a <title> with its exact value, which is what a hover shows and what
the tests read. Colours are SVG presentation attributes, which the panel's CSP allows
(inline `style=` is refused).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

# Distinguishable for the common colour-vision deficiencies (Okabe-Ito).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#f0e442")
# Outcomes keep their colour on every chart: green is good, red is lost.
OUTCOME_COLOURS = {
    "delivered": "#2f9e5a",
    "retry": "#e69f00",
    "pending": "#56b4e9",
    "failed": "#d55e00",
    "dead": "#8b1a1a",
}

WIDTH = 600
AXIS_WIDTH = 44
BOTTOM = 22
BAR_HEIGHT = 14
ROW_HEIGHT = 38


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _done(parts: list[str]) -> Markup:
    # Safe to mark: every text that came from outside (titles, labels, names) went
    # through _e(); the rest is numbers and fixed markup.
    return Markup("".join([*parts, "</svg>"]))  # noqa: S704


def _num(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}".rstrip("0")


def _coord(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^k at least `value` (1 for nothing): an axis top that
    reads well and keeps the largest value inside the chart."""
    if value <= 0 or math.isnan(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 5.0, 10.0):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10.0 * power


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a time series: a value per label of the chart."""

    name: str
    values: Sequence[float]


def _legend(names: Sequence[tuple[str, str]], y: float) -> list[str]:
    parts = []
    x = 0.0
    for name, colour in names:
        parts.append(
            f'<rect x="{_coord(x)}" y="{_coord(y - 9)}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{_coord(x + 14)}" y="{_coord(y)}">{_e(name)}</text>'
        )
        # Room for the name at the phone-sized font (admin.css enlarges chart text on
        # narrow screens, where the viewBox scales it down); a legend has one line, so it
        # stays short by design (a few series or outcomes).
        x += 30 + 12 * len(name)
    return parts


def time_series(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    height: int = 200,
    tick_every: int = 10,
) -> Markup:
    """A line per series over `labels` (e.g. minutes), y from 0 to a nice ceiling of the
    largest value. Each non-zero point has a <title> "label · name: value"; the chart's
    own <title> gives each series' total."""
    totals = ", ".join(f"{s.name}: {_num(sum(s.values))}" for s in series)
    head = f"{title} ({totals})" if series else title
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height + 24}" role="img"'
        f' xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">',
        f"<title>{_e(head)}</title>",
    ]
    top = 24
    plot_h = height - BOTTOM - 6
    plot_w = WIDTH - AXIS_WIDTH - 8
    out += _legend([(s.name, PALETTE[i % len(PALETTE)]) for i, s in enumerate(series)], 12)
    if not labels or not series:
        out.append(
            f'<text x="{WIDTH / 2}" y="{top + plot_h / 2}" text-anchor="middle">No data</text>'
        )
        return _done(out)
    peak = max((max(s.values, default=0) for s in series), default=0)
    ceiling = nice_ceiling(peak)
    step_x = plot_w / max(len(labels) - 1, 1)

    def x_at(i: int) -> float:
        return AXIS_WIDTH + i * step_x

    def y_at(v: float) -> float:
        return top + plot_h - (max(v, 0) / ceiling) * plot_h

    for fraction in (0.0, 0.5, 1.0):
        y = y_at(ceiling * fraction)
        out.append(
            f'<line x1="{AXIS_WIDTH}" x2="{WIDTH - 8}" y1="{_coord(y)}" y2="{_coord(y)}"'
            ' stroke="#dde3ea" stroke-width="1"/>'
            f'<text x="{AXIS_WIDTH - 6}" y="{_coord(y + 4)}" text-anchor="end">'
            f"{_num(ceiling * fraction)}</text>"
        )
    for i, label in enumerate(labels):
        last = i == len(labels) - 1
        # A regular tick too close to the last label would be written over by it.
        regular = i % tick_every == 0 and (len(labels) - 1 - i) * step_x >= 90
        if regular or last:
            # The last label ends at the chart's edge rather than running past it.
            anchor = "end" if last and len(labels) > 1 else "middle"
            out.append(
                f'<text x="{_coord(x_at(i))}" y="{top + plot_h + 16}" text-anchor="{anchor}">'
                f"{_e(label)}</text>"
            )
    for n, s in enumerate(series):
        colour = PALETTE[n % len(PALETTE)]
        points = " ".join(
            f"{_coord(x_at(i))},{_coord(y_at(v))}" for i, v in enumerate(s.values[: len(labels)])
        )
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"'
            ' stroke-linejoin="round"/>'
        )
        for i, v in enumerate(s.values[: len(labels)]):
            if v:
                out.append(
                    f'<circle cx="{_coord(x_at(i))}" cy="{_coord(y_at(v))}" r="3"'
                    f' fill="{colour}"><title>{_e(labels[i])} · {_e(s.name)}: {_num(v)}'
                    "</title></circle>"
                )
    return _done(out)


def stacked_bars(
    title: str,
    rows: Sequence[tuple[str, Mapping[str, float]]],
    keys: Sequence[str],
    colours: Mapping[str, str] | None = None,
    *,
    link: Callable[[int, str | None], str | None] | None = None,
    empty: str = "No data",
) -> Markup:
    """A horizontal bar per row, its segments the row's value per key in `keys` order,
    all bars on one scale (the largest row total). The row's label and total are written
    above its bar, so long names fit a phone's width. Each segment has a <title>
    "label · key: value". `link(row index, key)` is where a segment leads (key None:
    the row's label), e.g. the deliveries it counts; `empty` is said when there are no
    rows."""
    palette = {k: (colours or {}).get(k, PALETTE[i % len(PALETTE)]) for i, k in enumerate(keys)}
    height = 24 + max(len(rows), 1) * ROW_HEIGHT + 6
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img"'
        f' xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">',
        f"<title>{_e(title)}</title>",
    ]
    out += _legend([(k, palette[k]) for k in keys], 12)
    if not rows:
        out.append(
            f'<text x="{WIDTH / 2}" y="{24 + ROW_HEIGHT / 2}" text-anchor="middle">'
            f"{_e(empty)}</text>"
        )
        return _done(out)

    def linked(part: str, n: int, key: str | None) -> str:
        href = link(n, key) if link else None
        return f'<a href="{_e(href)}">{part}</a>' if href else part

    biggest = max(sum(max(values.get(k, 0), 0) for k in keys) for _, values in rows)
    scale = (WIDTH - 2) / biggest if biggest > 0 else 0.0
    for n, (label, values) in enumerate(rows):
        y = 24 + n * ROW_HEIGHT
        total = sum(max(values.get(k, 0), 0) for k in keys)
        out.append(linked(f'<text x="0" y="{y + 13}">{_e(label)} · {_num(total)}</text>', n, None))
        out.append(
            f'<rect x="0" y="{y + 18}" width="{WIDTH}" height="{BAR_HEIGHT}" fill="#f1f4f8"/>'
        )
        x = 0.0
        for key in keys:
            value = max(values.get(key, 0), 0)
            if not value:
                continue
            width = value * scale
            segment = (
                f'<rect x="{_coord(x)}" y="{y + 18}" width="{_coord(max(width, 1))}"'
                f' height="{BAR_HEIGHT}" fill="{palette[key]}"><title>{_e(label)} · {_e(key)}:'
                f" {_num(value)}</title></rect>"
            )
            out.append(linked(segment, n, key))
            x += width
    return _done(out)
