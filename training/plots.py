"""Evaluation plots (matplotlib only), drawn from the tables of `training.evaluate`.

Every function returns a `matplotlib.figure.Figure` built without pyplot: nothing global is
touched (no backend switch, no figure registry to leak), `fig.savefig("x.png")` renders with
Agg, and notebooks display the returned figure. Models keep one colour across plots (their
position in the dict passed, tab10); "actual" is always black. Size 7 x 4.5 in, 100 dpi.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from training import evaluate as ev

FIGSIZE = (7.0, 4.5)
DPI = 100
ACTUAL = "black"
_GRID = np.linspace(0.0, 1.0, 201)
_HIGHER = {"roc_auc", "pr_auc", "top_decile_lift", "normalized_gini", "spearman",
           "top_decile_share"}
_LOWER = {"brier", "ece", "mae", "rmse"}


def _figure(nrows: int = 1, ncols: int = 1, **kw: object) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes.ravel()


def _color(i: int) -> str:
    return f"C{i % 10}"


def _finish(fig: Figure) -> Figure:
    fig.tight_layout()
    return fig


def _date_axis(ax: Axes, index: pd.Index) -> None:
    if isinstance(index, pd.DatetimeIndex):
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def lift_gain_plot(y_true: npt.ArrayLike, scores: Mapping[str, npt.ArrayLike]) -> Figure:
    """Cumulative gain (left) and lift (right) of churn scores, models on the same axes.

    Left: share of churners captured vs share contacted, one line per model (ROC-AUC in the
    legend) plus random (diagonal) and perfect references. Right: lift per model, same colours,
    plus the random reference at 1. Curves are drawn on a 201-point grid of share contacted
    (linear interpolation of `evaluate.gain_curve`, exact between its points).
    """
    y = np.asarray(y_true, dtype=float)
    fig, (gain_ax, lift_ax) = _figure(1, 2)
    base = y.mean()
    for i, (name, s) in enumerate(scores.items()):
        g = ev.gain_curve(y, s)
        captured = np.interp(_GRID, g.share_contacted, g.share_captured)
        auc = ev.churn_metrics(y, s)["roc_auc"]
        gain_ax.plot(_GRID, captured, color=_color(i), label=f"{name}  AUC {auc:.3f}")
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = captured[1:] / _GRID[1:]
        lift_ax.plot(_GRID[1:], lift, color=_color(i), label=name)
    gain_ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="random")
    gain_ax.plot([0, base, 1], [0, 1, 1], color="grey", ls=":", lw=1, label="perfect")
    lift_ax.axhline(1.0, color="grey", ls="--", lw=1, label="random")
    lift_ax.annotate("random", (0.98, 1.0), xytext=(0, -10), textcoords="offset points",
                     ha="right", fontsize="small", color="grey")
    gain_ax.set(title="Cumulative gain", xlabel="share of customers contacted (highest risk first)",
                ylabel="share of churners captured", xlim=(0, 1), ylim=(0, 1.02))
    lift_ax.set(title="Lift", xlabel="share of customers contacted",
                ylabel="churn rate in contacted / overall", xlim=(0, 1))
    lift_ax.set_ylim(bottom=0)
    gain_ax.legend(loc="lower right", fontsize="x-small")  # the lift panel shares its colours
    fig.suptitle(f"Churn targeting: gain and lift (base rate {base:.1%})")
    return _finish(fig)


def reliability_plot(
    y_true: npt.ArrayLike, probs: Mapping[str, npt.ArrayLike], bins: int = 10
) -> Figure:
    """Reliability diagram: observed churn rate vs mean predicted probability per
    equal-frequency bin, one line per model (ECE in the legend), diagonal = perfect."""
    fig, (ax,) = _figure()
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfectly calibrated")
    for i, (name, p) in enumerate(probs.items()):
        t = ev.reliability_table(y_true, p, bins=bins)
        ece = ev.churn_metrics(y_true, p)["ece"]
        ax.plot(t.mean_predicted, t.observed_rate, marker="o", color=_color(i),
                label=f"{name} (ECE {ece:.3f})")
    ax.set(title=f"Calibration of churn probabilities ({bins} equal-frequency bins)",
           xlabel="mean predicted churn probability", ylabel="observed churn rate",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize="small")
    return _finish(fig)


def tracking_plot(tracking_tables: Mapping[str, pd.DataFrame]) -> Figure:
    """Repeat purchases over time: actual vs each model's expectation, per period (top) and
    cumulative (bottom). Tables come from `evaluate.tracking_table`; actual is taken from the
    first table (all tables should share it)."""
    if not tracking_tables:
        raise ValueError("tracking_plot: no tables")
    fig, (inc_ax, cum_ax) = _figure(2, 1, sharex=True)
    first = next(iter(tracking_tables.values()))
    inc_ax.plot(first.index, first.actual, color=ACTUAL, lw=1.8, label="actual")
    cum_ax.plot(first.index, first.cumulative_actual, color=ACTUAL, lw=1.8, label="actual")
    for i, (name, t) in enumerate(tracking_tables.items()):
        inc_ax.plot(t.index, t.expected, color=_color(i), ls="--", label=name)
        cum_ax.plot(t.index, t.cumulative_expected, color=_color(i), ls="--", label=name)
    inc_ax.set(title="Repeat purchases per period: actual vs expected", ylabel="purchases")
    cum_ax.set(title="Cumulative repeat purchases", ylabel="cumulative purchases",
               xlabel="period start")
    inc_ax.legend(loc="upper left", fontsize="small")
    cum_ax.legend(loc="upper left", fontsize="small")
    _date_axis(cum_ax, first.index)
    return _finish(fig)


def actual_vs_expected_plot(table_by_model: Mapping[str, pd.DataFrame]) -> Figure:
    """Conditional expectations: mean holdout purchases by calibration frequency, actual vs
    each model (tables from `evaluate.actual_vs_expected_by_frequency`, same cap)."""
    if not table_by_model:
        raise ValueError("actual_vs_expected_plot: no tables")
    fig, (ax,) = _figure()
    first = next(iter(table_by_model.values()))
    x = np.arange(len(first))
    ax.plot(x, first.mean_actual, color=ACTUAL, marker="o", lw=1.8, label="actual")
    for i, (name, t) in enumerate(table_by_model.items()):
        ax.plot(x, t.mean_expected, color=_color(i), marker="s", ls="--", label=name)
    ax.set_xticks(x, [f"{f}\nn={n:,}" for f, n in zip(first.index, first.n, strict=True)],
                  fontsize="small")
    ax.set(title="Holdout purchases by calibration-period frequency",
           xlabel="repeat purchases in calibration period",
           ylabel="mean purchases in holdout")
    ax.legend(loc="upper left", fontsize="small")
    return _finish(fig)


def decile_chart(decile_tables: Mapping[str, pd.DataFrame]) -> Figure:
    """Mean actual per predicted decile (bars, one group per decile, one bar per model) with
    each model's mean prediction (markers): tall left bars = good ranking, markers on the bars
    = good calibration. Tables from `evaluate.decile_table`."""
    if not decile_tables:
        raise ValueError("decile_chart: no tables")
    fig, (ax,) = _figure()
    k = len(decile_tables)
    width = 0.8 / k
    for i, (name, t) in enumerate(decile_tables.items()):
        x = np.arange(len(t)) + (i - (k - 1) / 2) * width
        ax.bar(x, t.mean_actual, width=width, color=_color(i), alpha=0.75,
               label=f"{name}: actual")
        ax.plot(x, t.mean_predicted, color=_color(i), marker="_", ms=12, mew=2.5, ls="none",
                label=f"{name}: predicted")
    deciles = next(iter(decile_tables.values())).index
    ax.set_xticks(np.arange(len(deciles)), [str(d) for d in deciles])
    ax.set(title="Actual vs predicted by predicted decile",
           xlabel="predicted decile (1 = highest predicted)", ylabel="mean per customer")
    handles, labels = ax.get_legend_handles_labels()
    order = [j for j, lab in enumerate(labels) if lab.endswith("actual")]
    order += [j for j in range(len(labels)) if j not in order]
    ax.legend([handles[j] for j in order], [labels[j] for j in order], loc="upper right",
              fontsize="small", ncols=2 if k > 1 else 1)
    return _finish(fig)


def interval_plot(
    actual: npt.ArrayLike,
    p10: npt.ArrayLike,
    p50: npt.ArrayLike,
    p90: npt.ArrayLike,
    *,
    max_points: int = 2000,
    log_scale: bool | None = None,
) -> Figure:
    """Prediction intervals: customers ranked by P50, the P10-P90 band, P50, and each actual
    (grey inside the band, red outside). Coverage in the title is over all customers; at
    most `max_points` customers, evenly spaced by rank, are drawn. `log_scale`: symlog y axis;
    None = automatic, on when values are heavy-tailed (99th percentile of P90 and actual above
    10 x the median positive P50)."""
    a, lo, mid, hi = (np.asarray(v, dtype=float) for v in (actual, p10, p50, p90))
    coverage = ev.value_metrics(a, mid, lo, hi)["interval_coverage"]
    order = np.argsort(mid, kind="stable")
    if order.size > max_points:
        order = order[np.linspace(0, order.size - 1, max_points).round().astype(int)]
    rank = np.linspace(0, 1, order.size)
    a, lo, mid, hi = a[order], lo[order], mid[order], hi[order]
    inside = (a >= lo) & (a <= hi)
    fig, (ax,) = _figure()
    ax.fill_between(rank, lo, hi, color="C0", alpha=0.25, lw=0, label="P10-P90 interval")
    ax.plot(rank, mid, color="C0", lw=1.5, label="P50")
    ax.scatter(rank[inside], a[inside], s=6, color="grey", alpha=0.6, label="actual, inside")
    ax.scatter(rank[~inside], a[~inside], s=6, color="C3", alpha=0.7, label="actual, outside")
    if log_scale is None:
        positive = mid[mid > 0]
        top = np.percentile(np.concatenate([hi, a]), 99)
        log_scale = bool(positive.size) and top > 10 * np.median(positive)
    if log_scale:
        ax.set_yscale("symlog", linthresh=1.0)
    ax.set(title=f"Prediction intervals: {coverage:.1%} of actuals inside P10-P90 "
                 "(nominal 80%)",
           xlabel="customers ranked by predicted P50", ylabel="value", xlim=(0, 1))
    ax.legend(loc="upper left", fontsize="small")
    return _finish(fig)


def metrics_bar(metrics_by_model: Mapping[str, Mapping[str, float]], metric: str) -> Figure:
    """One metric across models as bars with value labels (models lacking it or NaN are
    left out); the title says whether higher or lower is better when known."""
    fig, (ax,) = _figure()
    names, values, colors = [], [], []
    for i, (name, m) in enumerate(metrics_by_model.items()):
        v = m.get(metric)
        if v is not None and np.isfinite(v):
            names.append(name)
            values.append(float(v))
            colors.append(_color(i))
    bars = ax.bar(np.arange(len(names)), values, color=colors)
    ax.bar_label(bars, fmt="%.3g", fontsize="small")
    ax.set_xticks(np.arange(len(names)), names, fontsize="small")
    bare = metric.rsplit(".", 1)[-1]
    hint = ("higher is better" if bare in _HIGHER else
            "lower is better" if bare in _LOWER else "")
    ax.set(title=f"{metric}" + (f" ({hint})" if hint else "") + " by model",
           xlabel="model", ylabel=metric)
    ax.margins(y=0.12)
    return _finish(fig)
