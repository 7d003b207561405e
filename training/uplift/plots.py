"""Uplift plots (matplotlib only), drawn from the tables of `training.uplift.evaluate`.

As `training.plots`: every function returns a `matplotlib.figure.Figure` built without pyplot
(nothing global touched; `fig.savefig("x.png")` renders with Agg; notebooks display it).
Models and policies keep one colour across plots (their position in what is passed, tab10);
references (random, perfect, everyone) are grey. Size 7 x 4.5 in, 100 dpi.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from training.uplift import evaluate as ev

FIGSIZE = (7.0, 4.5)
DPI = 100
REFERENCE = "grey"


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    return fig, fig.subplots()


def _color(i: int) -> str:
    return f"C{i % 10}"


def qini_plot(y: npt.ArrayLike, treatment: npt.ArrayLike,
              uplifts: Mapping[str, npt.ArrayLike], title: str = "Qini curves",
              perfect: bool = False) -> Figure:
    """Qini curves of several uplift scores on one test set, with the random line.

    x: share of customers targeted (highest predicted uplift first); y: incremental outcomes
    (Y_T - Y_C N_T / N_C). Legend: each model's Qini coefficient (`evaluate.qini_auc_score`,
    normalised by the perfect curve). `perfect=True` also draws the perfect curve, which on
    real campaigns is so much higher that it flattens the others; its peak is in the legend.
    """
    if not uplifts:
        raise ValueError("qini_plot: no uplift scores")
    yy = np.asarray(y, dtype=np.float64)
    t = np.asarray(treatment, dtype=np.float64)
    n = len(yy)
    fig, ax = _figure()
    for i, (name, u) in enumerate(uplifts.items()):
        x, q = ev.qini_curve(yy, u, t)
        ax.plot(x / n, q, color=_color(i),
                label=f"{name}  Qini {ev.qini_auc_score(yy, u, t):.3f}")
    xp, qp = ev.perfect_qini_curve(yy, t)
    if perfect:
        ax.plot(xp / n, qp, color=REFERENCE, ls=":", lw=1, label="perfect")
    else:
        ax.plot([], [], color="none", label=f"(perfect curve peaks at {qp.max():,.0f})")
    ax.plot([0, 1], [0, qp[-1]], color=REFERENCE, ls="--", lw=1, label="random")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set(title=title, xlabel="share of customers targeted (highest predicted uplift first)",
           ylabel="incremental outcomes (Qini)", xlim=(0, 1))
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig


def uplift_by_decile_plot(tables: Mapping[str, pd.DataFrame],
                          title: str = "Observed uplift by decile of predicted uplift") -> Figure:
    """Bars of observed uplift (treated rate - control rate) per decile, one colour per model
    (tables from `evaluate.uplift_by_bins`); the dashed line is the test set's average effect."""
    if not tables:
        raise ValueError("uplift_by_decile_plot: no tables")
    fig, ax = _figure()
    first = next(iter(tables.values()))
    x = np.arange(len(first))
    width = 0.8 / len(tables)
    for i, (name, t) in enumerate(tables.items()):
        ax.bar(x + (i - (len(tables) - 1) / 2) * width, t["uplift"], width, color=_color(i),
               label=name)
    n_t = first["n_treated"].to_numpy()
    n_c = first["n_control"].to_numpy()
    overall = (np.nansum(first["rate_treated"] * n_t) / n_t.sum()
               - np.nansum(first["rate_control"] * n_c) / n_c.sum())
    ax.axhline(overall, color=REFERENCE, ls="--", lw=1, label=f"average effect {overall:.4f}")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xticks(x, [f"{i}" for i in first.index])
    ax.set(title=title, xlabel="decile of predicted uplift (1 = highest)",
           ylabel="treated rate - control rate")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return fig


def policy_budget_plot(table: pd.DataFrame, outcome: str = "outcomes",
                       title: str = "Policy value vs contact budget") -> Figure:
    """Estimated incremental outcomes per 1,000 customers vs the share contacted, one line per
    policy (table from `evaluate.compare_policies`); the uplift policy with a +-1.96 SE band,
    "everyone" (all customers, best single arm) as the grey dashed reference."""
    fig, ax = _figure()
    ratio = (table["per_1000"] / table["incremental"]).replace([np.inf, -np.inf], np.nan)
    scale = float(ratio.dropna().iloc[0]) if ratio.notna().any() else 0.0  # 1000 / customers
    i = 0
    for name, t in table.groupby("policy", sort=False):
        t = t.sort_values("budget")
        if name == "everyone":
            ax.axhline(t["per_1000"].iloc[0], color=REFERENCE, ls="--", lw=1,
                       label="everyone (best single arm)")
            continue
        ax.plot(t["budget"], t["per_1000"], marker="o", ms=3, color=_color(i), label=str(name),
                ls=":" if name == "random" else "-")
        if name == "uplift":
            ax.fill_between(t["budget"], (t["incremental"] - 1.96 * t["se"]) * scale,
                            (t["incremental"] + 1.96 * t["se"]) * scale, color=_color(i),
                            alpha=0.15, lw=0, label="uplift +-1.96 SE")
        i += 1
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set(title=title, xlabel="share of customers contacted (budget)",
           ylabel=f"incremental {outcome} per 1,000 customers (IPS)", xlim=(0, 1.02))
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig
