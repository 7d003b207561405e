"""Server-drawn SVG charts for the console pages and the HTML report.

Hand-written SVG rather than a JavaScript chart library or matplotlib: a chart is a few
hundred bytes of markup built in well under a millisecond, it needs no script and no asset
from anywhere, it prints and scales crisply, and its colours come from the stylesheet, where
each meaning has one class (`s-active`, `band-high`, `tier-gold`, `arm-treated`, …).

Every chart has a title saying what to look at, labelled axes with units, and a <title> per
mark so a hover shows the exact figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

Format = Callable[[float], str]

W, H = 640, 260  # default viewBox size
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 16, 40


def number(v: float) -> str:
    """1,234 / 12.3k / 1.2M: compact, for axes and labels."""
    if v is None or not math.isfinite(v):
        return "–"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.1f}M"
    if a >= 1e4:
        return f"{v / 1e3:.0f}k"
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2f}".rstrip("0").rstrip(".")


def percent(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.0f}%"


def percent1(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = [round(start, 10)]
    while ticks[-1] < hi - 1e-9 * step and len(ticks) < 12:
        ticks.append(round(start + len(ticks) * step, 10))
    return ticks


@dataclass(frozen=True)
class Series:
    """One line or set of bars: its name (legend), values and CSS class (its colour)."""

    name: str
    values: Sequence[float]
    css: str


def _svg(body: list[str], title: str, w: int = W, h: int = H, fixed: bool = False) -> Markup:
    """The chart's markup; `fixed` charts keep their natural size (at most the page width)
    instead of stretching to it, so that their text stays the size of the page's."""
    size = f'width="{w}" height="{h}" ' if fixed else ""
    head = (f'<svg class="chart{" fixed" if fixed else ""}" {size}viewBox="0 0 {w} {h}" '
            f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">')
    return Markup(head + "".join(body) + "</svg>")


def _legend(series: Sequence[Series], x: float, y: float) -> list[str]:
    out, at = [], x
    for s in series:
        out.append(f'<rect class="{s.css}" x="{at:.1f}" y="{y - 9:.1f}" width="12" height="12" '
                   f'rx="2"/><text class="legend" x="{at + 16:.1f}" y="{y + 1:.1f}">'
                   f"{escape(s.name)}</text>")
        at += 26 + 7 * len(s.name)
    return out


def _y_axis(ticks: list[float], scale: Callable[[float], float], fmt: Format, x0: float,
            x1: float, unit: str) -> list[str]:
    out = []
    for t in ticks:
        y = scale(t)
        out.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{escape(fmt(t))}</text>")
    if unit:
        out.append(f'<text class="unit" x="4" y="{PAD_T - 4}">{escape(unit)}</text>')
    return out


def _x_labels(labels: Sequence[str], xs: Sequence[float], y: float) -> list[str]:
    every = max(1, math.ceil(len(labels) / 8))
    return [f'<text class="tick" x="{x:.1f}" y="{y}" text-anchor="middle">{escape(lab)}</text>'
            for i, (lab, x) in enumerate(zip(labels, xs, strict=True)) if i % every == 0]


def line_chart(title: str, labels: Sequence[str], series: Sequence[Series], *,
               fmt: Format = number, unit: str = "", zero: bool = True,
               y_max: float | None = None) -> Markup:
    """Lines over periods (missing values break the line)."""
    finite = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    lo = 0.0 if zero or not finite else min(finite)
    hi = y_max if y_max is not None else max(finite, default=1.0)
    ticks = nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]
    x0, x1, y0, y1 = PAD_L, W - PAD_R, H - PAD_B, PAD_T + 14
    n = max(len(labels), 1)
    xs = [x0 + (x1 - x0) * (i + 0.5) / n for i in range(len(labels))]

    def sy(v: float) -> float:
        return y0 - (y0 - y1) * (v - lo) / (hi - lo or 1.0)

    body = _y_axis(ticks, sy, fmt, x0, x1, unit)
    for s in series:
        parts, pen = [], "M"
        for x, v in zip(xs, s.values, strict=True):
            if v is None or not math.isfinite(v):
                pen = "M"
                continue
            parts.append(f"{pen}{x:.1f},{sy(v):.1f}")
            pen = "L"
        body.append(f'<path class="line {s.css}" d="{" ".join(parts)}"/>')
        for x, v, lab in zip(xs, s.values, labels, strict=True):
            if v is not None and math.isfinite(v):
                body.append(f'<circle class="dot {s.css}" cx="{x:.1f}" cy="{sy(v):.1f}" r="3">'
                            f"<title>{escape(s.name)}, {escape(lab)}: {escape(fmt(v))}"
                            "</title></circle>")
    body += _x_labels(labels, xs, H - PAD_B + 18)
    body += _legend(series, x0, H - 4)
    return _svg(body, title)


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], css: str, *,
              fmt: Format = number, unit: str = "", name: str = "", width: int = W) -> Markup:
    """Vertical bars, one per label (negative bars hang below the zero line); `width` is
    the drawing's width (wider for a chart that spans the page)."""
    finite = [v for v in values if math.isfinite(v)] or [0.0]
    ticks = nice_ticks(min(0.0, min(finite)), max(0.0, max(finite)) or 1.0)
    lo, hi = ticks[0], ticks[-1]
    x0, x1, y0, y1 = PAD_L, width - PAD_R, H - PAD_B, PAD_T + 6
    n = max(len(labels), 1)
    band = (x1 - x0) / n

    def sy(v: float) -> float:
        return y0 - (y0 - y1) * (v - lo) / (hi - lo or 1.0)

    body = _y_axis(ticks, sy, fmt, x0, x1, unit)
    zero = sy(0.0)
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        if not math.isfinite(v):
            continue
        top, bottom = sorted((sy(v), zero))
        body.append(f'<rect class="{css}" x="{x0 + i * band + band * 0.15:.1f}" y="{top:.1f}" '
                    f'width="{band * 0.7:.1f}" height="{max(bottom - top, 0.5):.1f}">'
                    f"<title>{escape(name or title)}, {escape(lab)}: {escape(fmt(v))}</title>"
                    "</rect>")
    body.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{zero:.1f}" y2="{zero:.1f}"/>')
    body += _x_labels(labels, [x0 + (i + 0.5) * band for i in range(len(labels))],
                      H - PAD_B + 18)
    return _svg(body, title, w=width)


def hbar_stacked(title: str, categories: Sequence[str], series: Sequence[Series], *,
                 fmt: Format = number, unit: str = "") -> Markup:
    """Horizontal stacked bars: one row per category, one stack per series."""
    totals = [sum(max(s.values[i], 0.0) for s in series) for i in range(len(categories))]
    ticks = nice_ticks(0.0, max(totals, default=1.0) or 1.0)
    hi = ticks[-1]
    row = 24
    x0, x1 = 150, W - PAD_R - 48
    h = PAD_T + 24 + row * len(categories) + 30
    y_top = PAD_T + 24

    def sx(v: float) -> float:
        return x0 + (x1 - x0) * v / (hi or 1.0)

    body = []
    for t in ticks:
        body.append(f'<line class="grid" x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{y_top}" '
                    f'y2="{y_top + row * len(categories)}"/><text class="tick" x="{sx(t):.1f}" '
                    f'y="{y_top + row * len(categories) + 16}" text-anchor="middle">'
                    f"{escape(fmt(t))}</text>")
    for i, cat in enumerate(categories):
        y = y_top + i * row
        body.append(f'<text class="tick" x="{x0 - 6}" y="{y + row * 0.65:.1f}" '
                    f'text-anchor="end">{escape(cat)}</text>')
        at = 0.0
        for s in series:
            v = max(float(s.values[i]), 0.0)
            if v <= 0:
                continue
            body.append(f'<rect class="{s.css}" x="{sx(at):.1f}" y="{y + 4}" '
                        f'width="{max(sx(at + v) - sx(at), 0.5):.1f}" height="{row - 8}">'
                        f"<title>{escape(cat)}, {escape(s.name)}: {escape(fmt(v))}</title></rect>")
            at += v
        body.append(f'<text class="value" x="{sx(at) + 4:.1f}" y="{y + row * 0.65:.1f}">'
                    f"{escape(fmt(totals[i]))}</text>")
    if unit:
        body.append(f'<text class="unit" x="{x1}" y="{h - 2}" text-anchor="end">'
                    f"{escape(unit)}</text>")
    body += _legend(series, x0, PAD_T + 2)
    return _svg(body, title, h=h + 4)


def lorenz(title: str, share_customers: Sequence[float], share_value: Sequence[float],
           mark: float = 0.2) -> Markup:
    """Cumulative share of value against share of customers, best customers first, with
    the diagonal (value spread evenly) and the share held by the top `mark` of customers."""
    x0, x1, y0, y1 = PAD_L, W - PAD_R, H - PAD_B, PAD_T + 6

    def sx(v: float) -> float:
        return x0 + (x1 - x0) * v

    def sy(v: float) -> float:
        return y0 - (y0 - y1) * v

    ticks = [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    body = _y_axis(ticks, sy, percent, x0, x1, "share of value")
    for t in ticks:
        body.append(f'<text class="tick" x="{sx(t):.1f}" y="{H - PAD_B + 18}" '
                    f'text-anchor="middle">{percent(t)}</text>')
    body.append(f'<text class="unit" x="{x1}" y="{H - 4}" text-anchor="end">share of customers, '
                "most valuable first</text>")
    body.append(f'<path class="diagonal" d="M{sx(0):.1f},{sy(0):.1f} L{sx(1):.1f},{sy(1):.1f}"/>')
    d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}"
                 for i, (x, y) in enumerate(zip(share_customers, share_value, strict=True)))
    body.append(f'<path class="line s-value" d="{d}"/>')
    at = min(range(len(share_customers)), key=lambda i: abs(share_customers[i] - mark),
             default=None)
    if at is not None:
        x, y = share_customers[at], share_value[at]
        body.append(f'<line class="marker" x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{y0}" '
                    f'y2="{sy(y):.1f}"/><line class="marker" x1="{x0}" x2="{sx(x):.1f}" '
                    f'y1="{sy(y):.1f}" y2="{sy(y):.1f}"/><circle class="dot s-value" '
                    f'cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4"/><text class="value" '
                    f'x="{sx(x) + 8:.1f}" y="{sy(y) + 16:.1f}">top {percent(x)} of customers '
                    f"hold {percent(y)} of the value</text>")
    return _svg(body, title)


def heatmap(title: str, rows: Sequence[str], cols: Sequence[str],
            values: Sequence[Sequence[float]], *, row_note: Sequence[str] = (),
            fmt: Format = percent) -> Markup:
    """Cells shaded by value in [0, 1] (darker is higher); NaN cells are left blank."""
    cell_w = max(24, min(44, (W - 150) // max(len(cols), 1)))
    cell_h = 20
    x0, y0 = 150, PAD_T + 22
    w = x0 + cell_w * len(cols) + 8
    h = y0 + cell_h * len(rows) + 30
    body = [f'<text class="unit" x="{x0}" y="{PAD_T + 4}">periods since first purchase →'
            "</text>"]
    for j, c in enumerate(cols):
        body.append(f'<text class="tick" x="{x0 + (j + 0.5) * cell_w:.1f}" y="{y0 - 4}" '
                    f'text-anchor="middle">{escape(c)}</text>')
    for i, r in enumerate(rows):
        y = y0 + i * cell_h
        note = f" ({row_note[i]})" if i < len(row_note) else ""
        body.append(f'<text class="tick" x="{x0 - 6}" y="{y + 14}" text-anchor="end">'
                    f"{escape(r)}{escape(note)}</text>")
        for j, v in enumerate(values[i]):
            if v is None or not math.isfinite(v):
                continue
            level = min(max(v, 0.0), 1.0)
            body.append(f'<rect class="heat" x="{x0 + j * cell_w}" y="{y}" width="{cell_w - 1}" '
                        f'height="{cell_h - 1}" fill-opacity="{0.08 + 0.92 * level:.3f}">'
                        f"<title>cohort {escape(r)}, {escape(cols[j])} periods on: "
                        f"{escape(fmt(v))}</title></rect>"
                        f'<text class="cell{" light" if level > 0.5 else ""}" '
                        f'x="{x0 + (j + 0.5) * cell_w:.1f}" y="{y + 14}" '
                        f'text-anchor="middle">{escape(fmt(v))}</text>')
    return _svg(body, title, w=w, h=h, fixed=True)


def intervals(title: str, labels: Sequence[str], estimates: Sequence[float],
              lows: Sequence[float], highs: Sequence[float], *, fmt: Format = number,
              unit: str = "") -> Markup:
    """Estimate (dot) and 95% interval (whisker) per row, beside the zero line: a whisker
    that crosses zero is an effect the data cannot tell from none."""
    finite = [v for v in (*lows, *highs, *estimates, 0.0) if math.isfinite(v)]
    ticks = nice_ticks(min(finite), max(finite))
    lo, hi = ticks[0], ticks[-1]
    row = 28
    x0, x1 = 200, W - PAD_R
    y_top = PAD_T + 6
    h = y_top + row * len(labels) + 36

    def sx(v: float) -> float:
        return x0 + (x1 - x0) * (v - lo) / (hi - lo or 1.0)

    body = []
    for t in ticks:
        body.append(f'<line class="grid" x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{y_top}" '
                    f'y2="{y_top + row * len(labels)}"/><text class="tick" x="{sx(t):.1f}" '
                    f'y="{y_top + row * len(labels) + 16}" text-anchor="middle">'
                    f"{escape(fmt(t))}</text>")
    body.append(f'<line class="axis" x1="{sx(0):.1f}" x2="{sx(0):.1f}" y1="{y_top}" '
                f'y2="{y_top + row * len(labels)}"/>')
    for i, lab in enumerate(labels):
        y = y_top + i * row + row / 2
        body.append(f'<text class="tick" x="{x0 - 8}" y="{y + 4:.1f}" text-anchor="end">'
                    f"{escape(lab)}</text>")
        e, a, b = estimates[i], lows[i], highs[i]
        if not all(math.isfinite(v) for v in (e, a, b)):
            continue
        css = "effect-up" if a > 0 else "effect-down" if b < 0 else "effect-unclear"
        body.append(f'<line class="whisker {css}" x1="{sx(a):.1f}" x2="{sx(b):.1f}" '
                    f'y1="{y:.1f}" y2="{y:.1f}"/><circle class="dot {css}" cx="{sx(e):.1f}" '
                    f'cy="{y:.1f}" r="5"><title>{escape(lab)}: {escape(fmt(e))} '
                    f"(95% interval {escape(fmt(a))} to {escape(fmt(b))})</title></circle>")
    if unit:
        body.append(f'<text class="unit" x="{x1}" y="{h - 4}" text-anchor="end">'
                    f"{escape(unit)}</text>")
    return _svg(body, title, h=h, fixed=True)


def range_bar(low: float, mid: float, high: float, point: float, *, fmt: Format = number,
              width: int = 320) -> Markup:
    """One value's P10–P90 range as a bar with the P50 tick and the point estimate."""
    values = [v for v in (low, mid, high, point) if math.isfinite(v)]
    top = max(values, default=1.0) * 1.1 or 1.0
    x0, x1 = 8, width - 8

    def sx(v: float) -> float:
        return x0 + (x1 - x0) * max(v, 0.0) / top

    body = [f'<line class="axis" x1="{x0}" x2="{x1}" y1="30" y2="30"/>']
    if all(math.isfinite(v) for v in (low, high)):
        body.append(f'<rect class="s-range" x="{sx(low):.1f}" y="20" '
                    f'width="{max(sx(high) - sx(low), 2):.1f}" height="20" rx="3"><title>P10 '
                    f"{escape(fmt(low))} to P90 {escape(fmt(high))}</title></rect>")
        body.append(f'<text class="tick" x="{sx(low):.1f}" y="54" text-anchor="middle">'
                    f"{escape(fmt(low))}</text><text class=\"tick\" x=\"{sx(high):.1f}\" y=\"54\" "
                    f'text-anchor="middle">{escape(fmt(high))}</text>')
    if math.isfinite(mid):
        body.append(f'<line class="median" x1="{sx(mid):.1f}" x2="{sx(mid):.1f}" y1="16" '
                    f'y2="44"><title>P50 {escape(fmt(mid))}</title></line>')
    if math.isfinite(point):
        body.append(f'<circle class="dot s-value" cx="{sx(point):.1f}" cy="30" r="5"><title>'
                    f"expected {escape(fmt(point))}</title></circle><text class=\"value\" "
                    f'x="{sx(point):.1f}" y="12" text-anchor="middle">expected '
                    f"{escape(fmt(point))}</text>")
    return _svg(body, "CLV range", w=width, h=60, fixed=True)
