"""Evaluation plots of a training run, drawn from the tables of `training.evaluate`.

Conventions, the same in every chart:

- Each function draws on `ax` (`axes` for the two-panel charts) when given, else on a new
  figure built without pyplot (nothing global is touched: no backend switch, no figure registry
  to leak; `ax.figure.savefig("x.png")` renders it), and returns what it drew on.
- One colour per model, whatever the chart: `MODEL_COLORS` (our model and every baseline of
  `training.candidates`); "actual" is black and references (random, perfect, the diagonal)
  grey. Names outside the mapping take `OTHER_COLORS` in the order they come.
- Our model is a wider, lighter line beneath the others: when it serves a baseline's forecast
  the two coincide, and the baseline stays visible on top.
- `note=` adds a subtitle: what to keep in mind when reading the chart.

Examples
--------
>>> ax = metrics_bar({"ours": {"churn.roc_auc": 0.76}, "bg_nbd": {"churn.roc_auc": 0.74}},
...                  "churn.roc_auc")
>>> ax.get_title()
'churn ROC-AUC by model (higher is better)'
>>> [p.get_facecolor() == ax.patches[0].get_facecolor() for p in ax.patches]
[True, False]
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from training import evaluate as ev
from training.candidates import OURS

FIGSIZE = (7.0, 4.5)
DPI = 100
ACTUAL = "black"
REFERENCE = "grey"
# One colour per model in every chart; each spend baseline (count model x Gamma-Gamma) takes a
# colour near its count model's.
MODEL_COLORS: dict[str, str] = {
    OURS: "tab:blue",
    "recency_rule": "tab:brown",
    "rfm_logistic": "tab:purple",
    "bg_nbd": "tab:green",
    "bg_nbd_gg": "tab:cyan",
    "pareto_nbd": "tab:orange",
    "pareto_nbd_gg": "tab:red",
}
OTHER_COLORS: tuple[str, ...] = ("tab:pink", "tab:olive", "#393b79", "#8c6d31", "#7b4173")
_GRID = np.linspace(0.0, 1.0, 201)


# ---------------------------------------------------------------------------- conventions


def model_colors(names: Iterable[str]) -> dict[str, str]:
    """Colour of each name: `MODEL_COLORS`, else the next of `OTHER_COLORS`.

    >>> model_colors(["ours", "a", "bg_nbd", "b"])
    {'ours': 'tab:blue', 'a': 'tab:pink', 'bg_nbd': 'tab:green', 'b': 'tab:olive'}
    """
    out: dict[str, str] = {}
    others = 0
    for name in names:
        if name in MODEL_COLORS:
            out[name] = MODEL_COLORS[name]
        else:
            out[name] = OTHER_COLORS[others % len(OTHER_COLORS)]
            others += 1
    return out


def _line(name: str, color: str) -> dict[str, object]:
    """Line style of a model: ours wide and light beneath, the others on top."""
    if name == OURS:
        return {"color": color, "lw": 4.0, "alpha": 0.5, "zorder": 2}
    return {"color": color, "lw": 1.6, "zorder": 3}


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained").subplots()


def _axes_pair(axes: tuple[Axes, Axes] | None, **subplots: object) -> tuple[Axes, Axes]:
    if axes is not None:
        return axes
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    first, second = fig.subplots(**subplots)
    return first, second


def _title(ax: Axes, title: str, note: str | None, *, extra_lines: int = 0) -> None:
    """`title`, and `note` in small grey type beneath it (above `extra_lines` of small text
    the caller writes on top of the axes)."""
    lines = textwrap.wrap(note, 95) if note else []
    above = 10 * extra_lines
    ax.set_title(title, pad=6 + above + 10 * len(lines))
    if lines:
        ax.annotate("\n".join(lines), (0.5, 1.0), xycoords="axes fraction",
                    xytext=(0, 5 + above), textcoords="offset points", ha="center",
                    va="bottom", fontsize="small", color="dimgrey")


def _date_axis(ax: Axes, index: pd.Index) -> None:
    if isinstance(index, pd.DatetimeIndex):
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _first(tables: Mapping[str, pd.DataFrame], plot: str) -> pd.DataFrame:
    if not tables:
        raise ValueError(f"{plot}: no tables")
    return next(iter(tables.values()))


# --------------------------------------------------------------------------------- churn


def lift_gain_plot(
    y_true: npt.ArrayLike,
    scores: Mapping[str, npt.ArrayLike],
    *,
    note: str | None = None,
    axes: tuple[Axes, Axes] | None = None,
) -> tuple[Axes, Axes]:
    """Cumulative gain (left) and lift (right) of churn scores, models on the same axes.

    Left: share of churners captured vs share contacted, one line per model (ROC-AUC in the
    legend) plus random (diagonal) and perfect references. Right: lift per model, same colours,
    plus the random reference at 1. Curves are drawn on a 201-point grid of share contacted
    (linear interpolation of `evaluate.gain_curve`, exact between its points). The base rate
    is in the figure's title, `note` beneath it.
    """
    y = np.asarray(y_true, dtype=float)
    gain_ax, lift_ax = _axes_pair(axes, nrows=1, ncols=2)
    base = y.mean()
    colors = model_colors(scores)
    for name, s in scores.items():
        g = ev.gain_curve(y, s)
        captured = np.interp(_GRID, g.share_contacted, g.share_captured)
        auc = ev.churn_metrics(y, s)["roc_auc"]
        gain_ax.plot(_GRID, captured, label=f"{name}  AUC {auc:.3f}", **_line(name, colors[name]))
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = captured[1:] / _GRID[1:]
        lift_ax.plot(_GRID[1:], lift, label=name, **_line(name, colors[name]))
    gain_ax.plot([0, 1], [0, 1], color=REFERENCE, ls="--", lw=1, label="random")
    gain_ax.plot([0, base, 1], [0, 1, 1], color=REFERENCE, ls=":", lw=1, label="perfect")
    lift_ax.axhline(1.0, color=REFERENCE, ls="--", lw=1, label="random")
    lift_ax.annotate("random", (0.98, 1.0), xytext=(0, -10), textcoords="offset points",
                     ha="right", fontsize="small", color=REFERENCE)
    gain_ax.set(title="Cumulative gain", xlabel="share of customers contacted (highest risk first)",
                ylabel="share of churners captured", xlim=(0, 1), ylim=(0, 1.02))
    lift_ax.set(title="Lift", xlabel="share of customers contacted",
                ylabel="churn rate in contacted / overall", xlim=(0, 1))
    lift_ax.set_ylim(bottom=0)
    gain_ax.legend(loc="lower right", fontsize="x-small")  # the lift panel shares its colours
    title = f"Churn targeting: gain and lift (base rate {base:.1%}); higher is better"
    gain_ax.figure.suptitle(title + (f"\n{note}" if note else ""))
    return gain_ax, lift_ax


def reliability_plot(
    y_true: npt.ArrayLike,
    probs: Mapping[str, npt.ArrayLike],
    *,
    bins: int = 10,
    note: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Reliability diagram: observed churn rate vs mean predicted probability per
    equal-frequency bin, one line per model (ECE in the legend), diagonal = perfect.

    The bins hold the same number of customers each (in the title), so each point weighs the
    same; points above the diagonal mean more churn than predicted.
    """
    ax = _axes(ax)
    ax.plot([0, 1], [0, 1], color=REFERENCE, ls="--", lw=1, label="perfectly calibrated")
    colors = model_colors(probs)
    n = 0
    for name, p in probs.items():
        t = ev.reliability_table(y_true, p, bins=bins)
        n = int(t.n.sum())
        ece = ev.churn_metrics(y_true, p)["ece"]
        ax.plot(t.mean_predicted, t.observed_rate, marker="o", ms=4,
                label=f"{name} (ECE {ece:.3f})", **_line(name, colors[name]))
    per_bin = f" of ~{n / bins:,.0f} customers each" if n else ""
    _title(ax, f"Calibration of churn probabilities ({bins} bins{per_bin})", note)
    ax.set(xlabel="mean predicted churn probability in the bin",
           ylabel="observed churn rate in the bin", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize="small")
    return ax


# ----------------------------------------------------------------------------- purchases


def tracking_plot(
    tracking_tables: Mapping[str, pd.DataFrame],
    *,
    xlabel: str = "period start",
    note: str | None = None,
    axes: tuple[Axes, Axes] | None = None,
) -> tuple[Axes, Axes]:
    """Repeat purchases over time: actual vs each model's expectation, per period (top) and
    cumulative (bottom). Tables come from `evaluate.tracking_table`; actual is taken from the
    first table (all tables should share it)."""
    first = _first(tracking_tables, "tracking_plot")
    inc_ax, cum_ax = _axes_pair(axes, nrows=2, ncols=1, sharex=True)
    inc_ax.plot(first.index, first.actual, color=ACTUAL, lw=1.8, label="actual")
    cum_ax.plot(first.index, first.cumulative_actual, color=ACTUAL, lw=1.8, label="actual")
    colors = model_colors(tracking_tables)
    for name, t in tracking_tables.items():
        inc_ax.plot(t.index, t.expected, ls="--", label=name, **_line(name, colors[name]))
        cum_ax.plot(t.index, t.cumulative_expected, ls="--", label=name,
                    **_line(name, colors[name]))
    _title(inc_ax, "Repeat purchases per period: actual vs expected", note)
    inc_ax.set(ylabel="purchases")
    cum_ax.set(title="Cumulative repeat purchases", ylabel="cumulative purchases",
               xlabel=xlabel)
    inc_ax.set_ylim(bottom=0)
    inc_ax.legend(loc="lower left", fontsize="small", ncols=len(tracking_tables) + 1)
    cum_ax.legend(loc="upper left", fontsize="small")
    _date_axis(cum_ax, first.index)
    return inc_ax, cum_ax


def actual_vs_expected_plot(
    table_by_model: Mapping[str, pd.DataFrame],
    *,
    note: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Conditional expectations: mean holdout purchases by calibration frequency, actual vs
    each model (tables from `evaluate.actual_vs_expected_by_frequency`, same cap); the tick
    labels give the customers in each group."""
    first = _first(table_by_model, "actual_vs_expected_plot")
    ax = _axes(ax)
    x = np.arange(len(first))
    ax.plot(x, first.mean_actual, color=ACTUAL, marker="o", lw=1.8, label="actual")
    colors = model_colors(table_by_model)
    for name, t in table_by_model.items():
        ax.plot(x, t.mean_expected, marker="s", ms=4, ls="--", label=name,
                **_line(name, colors[name]))
    ax.set_xticks(x, [f"{f}\nn={n:,}" for f, n in zip(first.index, first.n, strict=True)],
                  fontsize="small")
    _title(ax, "Holdout purchases by calibration-period frequency", note)
    ax.set(xlabel="repeat purchases in calibration period (n = customers)",
           ylabel="mean purchases per customer in holdout")
    ax.legend(loc="upper left", fontsize="small")
    return ax


# --------------------------------------------------------------------------------- value


def decile_chart(
    decile_tables: Mapping[str, pd.DataFrame],
    *,
    ylabel: str = "mean per customer",
    note: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Mean actual per predicted decile (bars, one group per decile, one bar per model) with
    each model's mean prediction (markers): tall left bars = good ranking, markers on the bars
    = good calibration. Tables from `evaluate.decile_table`."""
    deciles = _first(decile_tables, "decile_chart").index
    ax = _axes(ax)
    k = len(decile_tables)
    width = 0.8 / k
    colors = model_colors(decile_tables)
    for i, (name, t) in enumerate(decile_tables.items()):
        x = np.arange(len(t)) + (i - (k - 1) / 2) * width
        ax.bar(x, t.mean_actual, width=width, color=colors[name], alpha=0.75,
               label=f"{name}: actual")
        ax.plot(x, t.mean_predicted, color=colors[name], marker="_", ms=12, mew=2.5, ls="none",
                label=f"{name}: predicted")
    ax.set_xticks(np.arange(len(deciles)), [str(d) for d in deciles])
    _title(ax, "Actual vs predicted by predicted decile", note)
    ax.set(xlabel="predicted decile (1 = highest predicted)", ylabel=ylabel)
    handles, labels = ax.get_legend_handles_labels()
    order = [j for j, lab in enumerate(labels) if lab.endswith("actual")]
    order += [j for j in range(len(labels)) if j not in order]
    ax.legend([handles[j] for j in order], [labels[j] for j in order], loc="upper right",
              fontsize="small", ncols=2 if k > 1 else 1)
    return ax


def interval_plot(
    actual: npt.ArrayLike,
    lower: npt.ArrayLike,
    median: npt.ArrayLike,
    upper: npt.ArrayLike,
    *,
    target: float = 0.80,
    groups: int = 10,
    ylabel: str = "value",
    max_points: int = 2000,
    log_scale: bool | None = None,
    note: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Value intervals against actuals: customers in `groups` equal groups by forecast
    (`median`, lowest first; ties split by input order) and, within a group, by interval.

    Drawn per customer: the interval from `lower` to `upper` (band), the forecast (dash) and
    the actual (black inside the interval, crimson outside). Above each group, the share of its
    actuals inside; the title gives it over all customers, against `target`. The interval ends
    are quantiles at calibrated levels (chosen so that the interval holds `target` of actuals
    on validation), hence "calibrated to hold 80%" rather than P10-P90. Sorting by interval
    within a group keeps the band smooth where neighbouring forecasts are alike. At most
    `max_points` customers, evenly spaced by rank, are drawn. `log_scale`: symlog y axis; None
    = automatic, on when values are heavy-tailed (99th percentile of the upper ends and
    actuals above 10 x the median positive forecast).
    """
    a, lo, mid, hi = (np.asarray(v, dtype=float) for v in (actual, lower, median, upper))
    coverage = ev.value_metrics(a, mid, lo, hi)["interval_coverage"]
    n, k = a.size, min(int(groups), a.size)
    group = np.empty(n, dtype=int)
    group[np.argsort(mid, kind="stable")] = np.arange(n) * k // n
    order = np.lexsort((hi, lo, group))
    inside = (a >= lo) & (a <= hi)
    group_coverage = np.bincount(group, weights=inside, minlength=k) / np.bincount(group)
    position = np.linspace(0, 1, n)
    edges = np.append(position[np.searchsorted(group[order], np.arange(k))], 1.0)
    if n > max_points:
        keep = np.linspace(0, n - 1, max_points).round().astype(int)
        order, position = order[keep], position[keep]
    a, lo, mid, hi, inside = a[order], lo[order], mid[order], hi[order], inside[order]

    ax = _axes(ax)
    ours = MODEL_COLORS[OURS]
    ax.fill_between(position, lo, hi, step="mid", color=ours, alpha=0.25, lw=0,
                    label=f"interval (calibrated to hold {target:.0%})")
    ax.plot(position, mid, color=ours, ls="none", marker="_", ms=4, label="forecast (median)")
    ax.scatter(position[inside], a[inside], s=6, color=ACTUAL, alpha=0.45, lw=0,
               label="actual, inside")
    ax.scatter(position[~inside], a[~inside], s=8, color="crimson", alpha=0.8, lw=0,
               label="actual, outside")
    if log_scale is None:
        positive = mid[mid > 0]
        top = np.percentile(np.concatenate([hi, a]), 99)
        log_scale = bool(positive.size) and top > 10 * np.median(positive)
    if log_scale:
        ax.set_yscale("symlog", linthresh=1.0)
    centres = (edges[:-1] + edges[1:]) / 2
    for x, share in zip(centres, group_coverage, strict=True):
        ax.annotate(f"{share:.0%}", (x, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                    fontsize="x-small")
    ax.set_xticks(centres, [str(i) for i in range(1, k + 1)])
    ax.set_xticks(edges, minor=True)
    ax.tick_params(axis="x", which="minor", length=0)
    ax.grid(axis="x", which="minor", color=REFERENCE, lw=0.5)
    _title(ax, f"Value interval: {coverage:.1%} of actuals inside, target {target:.0%} "
               "(per group above)", note, extra_lines=1)
    ax.set(xlabel="forecast group (1 = lowest); within a group, customers by interval",
           ylabel=ylabel + (" (symlog scale)" if log_scale else ""), xlim=(0, 1))
    ax.legend(loc="lower left", fontsize="small", markerscale=2)
    return ax


# ----------------------------------------------------------------------------- metrics


def _direction(metric: str) -> bool | None:
    """True when higher is better, False when lower is, None when `Metric` does not say."""
    found = {m.higher_is_better for m in ev.Metric if metric in (m.value, m.short)}
    return found.pop() if len(found) == 1 else None


def _metric_label(metric: str) -> str:
    """'churn ROC-AUC' for churn.roc_auc (the grade report's label), else the name."""
    for g in ev.GRADED_METRICS:
        if metric in (g.key.value, g.alias):
            return f"{g.key.section} {g.label}"
    return metric


def metrics_bar(
    metrics_by_model: Mapping[str, Mapping[str, float]],
    metric: str,
    *,
    note: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """One metric across models as bars with value labels (models lacking it or NaN are left
    out); the best value's label is bold and the title says whether higher or lower is better
    (when `evaluate.Metric` knows).

    Bars start at 0, but when the values differ little compared with their size the y axis is
    cut to a range around them (the lowest bar keeps over a third of the height), with the cut
    marked on the axis and said beneath the title.
    """
    names, values = [], []
    for name, m in metrics_by_model.items():
        v = m.get(metric)
        if v is not None and np.isfinite(v):
            names.append(name)
            values.append(float(v))
    ax = _axes(ax)
    colors = model_colors(names)
    bars = ax.bar(np.arange(len(names)), values, color=[colors[n] for n in names])
    labels = ax.bar_label(bars, fmt="%.4g", fontsize="small", padding=2)
    higher = _direction(metric)
    if values and higher is not None:
        best = max(values) if higher else min(values)
        for text, v in zip(labels, values, strict=True):
            if v == best:
                text.set_fontweight("bold")
    ax.set_xticks(np.arange(len(names)), names, fontsize="small")
    hint = {True: " (higher is better)", False: " (lower is better)", None: ""}[higher]
    label = _metric_label(metric)
    cut = _value_range(ax, np.asarray(values))
    if cut is not None:
        note = "; ".join([*([note] if note else []), f"y axis cut: starts at {cut:.3g}, not 0"])
    _title(ax, f"{label} by model{hint}", note)
    ax.set(xlabel="model", ylabel=label)
    return ax


def _value_range(ax: Axes, values: np.ndarray) -> float | None:
    """Set the y range of a bar chart: from 0, or cut near the values when they differ little
    (then marked on the axis, and the cut returned)."""
    if not values.size:
        return None
    lo, hi = min(values.min(), 0.0), max(values.max(), 0.0)
    if values.min() > 0:
        spread = values.max() - values.min()
        cut = values.min() - max(spread, 0.02 * values.max())
        if cut > 0.25 * values.max():
            ax.set_ylim(cut, values.max() + 0.15 * (values.max() - cut))
            stroke = {"transform": ax.transAxes, "color": "black", "lw": 1, "clip_on": False}
            for y in (0.0, 0.02):  # the usual break mark: two slanted strokes on the axis
                ax.plot([-0.015, 0.015], [y - 0.01, y + 0.01], **stroke)
            return float(cut)
    pad = 0.15 * (hi - lo) or 1.0
    ax.set_ylim(lo - (pad if lo < 0 else 0.0), hi + pad)
    return None
