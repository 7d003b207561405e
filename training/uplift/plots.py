"""Uplift plots (matplotlib only), drawn from the tables of `training.uplift.evaluate`.

Every function returns a `matplotlib.figure.Figure` built without pyplot (nothing global
touched; `fig.savefig("x.png")` renders with Agg; notebooks display it). A learner keeps one
colour across plots: its position in what is passed (tab10), or the colour `colors=` names.
In the budget chart the uplift policy takes the colour of its learner (`color=`), the risk
scores others, and the references (random, perfect, everyone) are grey as in every chart of
`training.plots`. Size 7 x 4.5 in, 100 dpi.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from training import plots
from training.uplift import evaluate as ev

FIGSIZE = (7.0, 4.5)
DPI = 100
REFERENCE = plots.REFERENCE
_RISK_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive")


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    return fig, fig.subplots()


def _colors(names: Iterable[str], given: Mapping[str, str] | None) -> dict[str, str]:
    """`given` colours by name, the others by position (tab10)."""
    given = given or {}
    return {name: given.get(name, f"C{i % 10}") for i, name in enumerate(names)}


def qini_plot(y: npt.ArrayLike, treatment: npt.ArrayLike,
              uplifts: Mapping[str, npt.ArrayLike], title: str = "Qini curves",
              perfect: bool = False, *, colors: Mapping[str, str] | None = None) -> Figure:
    """Qini curves of several uplift scores on one test set, with the random line.

    x: share of customers targeted (highest predicted uplift first); y: incremental outcomes
    (Y_T - Y_C N_T / N_C). Legend: each model's Qini coefficient (`evaluate.qini_auc_score`,
    normalised by the perfect curve). `perfect=True` also draws the perfect curve, which on
    real campaigns is so much higher that it flattens the others; its peak is in the legend.
    `colors`: name -> colour for some scores (the others by position).
    """
    if not uplifts:
        raise ValueError("qini_plot: no uplift scores")
    yy = np.asarray(y, dtype=np.float64)
    t = np.asarray(treatment, dtype=np.float64)
    n = len(yy)
    fig, ax = _figure()
    color = _colors(uplifts, colors)
    for name, u in uplifts.items():
        x, q = ev.qini_curve(yy, u, t)
        ax.plot(x / n, q, color=color[name],
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
                          title: str = "Observed uplift by decile of predicted uplift", *,
                          colors: Mapping[str, str] | None = None) -> Figure:
    """Bars of observed uplift (treated rate - control rate) per decile, one colour per model
    (tables from `evaluate.uplift_by_bins`; `colors` as `qini_plot`); the dashed line is the
    test set's average effect."""
    if not tables:
        raise ValueError("uplift_by_decile_plot: no tables")
    fig, ax = _figure()
    first = next(iter(tables.values()))
    x = np.arange(len(first))
    width = 0.8 / len(tables)
    color = _colors(tables, colors)
    for i, (name, t) in enumerate(tables.items()):
        ax.bar(x + (i - (len(tables) - 1) / 2) * width, t["uplift"], width, color=color[name],
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
                       title: str = "Policy value vs contact budget", *,
                       color: str = "C0") -> Figure:
    """Estimated incremental outcomes per 1,000 customers vs the share contacted, one line per
    policy (table from `evaluate.compare_policies`): the uplift policy in `color` (its
    learner's) with a +-1.96 SE band, each risk score in its own colour, and the references in
    grey: "random" dotted, "everyone" (all customers, best single arm) dashed."""
    fig, ax = _figure()
    ratio = (table["per_1000"] / table["incremental"]).replace([np.inf, -np.inf], np.nan)
    scale = float(ratio.dropna().iloc[0]) if ratio.notna().any() else 0.0  # 1000 / customers
    risks = 0
    for name, t in table.groupby("policy", sort=False):
        t = t.sort_values("budget")
        if name == "everyone":
            ax.axhline(t["per_1000"].iloc[0], color=REFERENCE, ls="--", lw=1,
                       label="everyone (best single arm)")
            continue
        if name == "random":
            ax.plot(t["budget"], t["per_1000"], color=REFERENCE, ls=":", lw=1.5,
                    label="random")
            continue
        if name == "uplift":
            line_color = color
            ax.fill_between(t["budget"], (t["incremental"] - 1.96 * t["se"]) * scale,
                            (t["incremental"] + 1.96 * t["se"]) * scale, color=color,
                            alpha=0.15, lw=0, label="uplift +-1.96 SE")
        else:
            line_color = _RISK_COLORS[risks % len(_RISK_COLORS)]
            risks += 1
        ax.plot(t["budget"], t["per_1000"], marker="o", ms=3, color=line_color,
                label=str(name), lw=2.0 if name == "uplift" else 1.5)
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set(title=title, xlabel="share of customers contacted (budget)",
           ylabel=f"incremental {outcome} per 1,000 customers (IPS)", xlim=(0, 1.02))
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig
