"""The figures of a training run: the evaluation's charts, drawn from its tables, and the BTYD
diagnostics of the components fitted at the test cutoff (plotting apart from maths).

`figures` is what the registry logs under plots/<name>.png; `CAPTIONS` says what to look at in
each, in the order the model-report notebook shows them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from training import plots
from training.candidates import OURS, Target, candidate, served
from training.models.plots import (
    plot_frequency_recency_matrix,
    plot_period_transactions,
    plot_probability_alive_matrix,
)
from training.train import TrainConfig, TrainResult

CAPTIONS: dict[str, str] = {
    "churn_lift_gain": (
        "Contact customers from the riskiest down: the left panel is the share of all churners "
        "reached, the right how many times the average churn rate the contacted group has. "
        "Higher curves are better; the dashed diagonal is contact at random."),
    "churn_reliability": (
        "Predicted churn probability against the churn rate observed, in ten bins of equal "
        "size: on the diagonal, a predicted 30% means 30% churn. Pareto/NBD's score is "
        "1 - P(alive), the chance the customer has left for good, not the chance of no "
        "purchase in the horizon, so it sits above the diagonal. The recency rule gives a rank, "
        "not a probability, and is left out."),
    "churn_roc_auc": (
        "How well each model ranks churners above stayers (0.5 = random, 1 = perfect). When "
        "the values are close the axis is cut around them: read the labels."),
    "purchases_tracking": (
        "Purchase days of the test customers per week of the horizon, actual against "
        "expected; the bottom panel adds them up. Our weekly curve spreads our horizon total "
        "the way BG/NBD's curve runs."),
    "purchases_actual_vs_expected": (
        "Mean purchases in the horizon of customers grouped by their repeat purchases before "
        "the cutoff, actual against each model (the BTYD conditional-expectations check)."),
    "purchases_mae": "Mean absolute error of the purchases forecast per customer.",
    "value_deciles": (
        "Customers in ten groups by forecast spend, highest first: bars are the actual mean "
        "spend (tall on the left = good ranking), dashes the forecast (on the bars = right "
        "level)."),
    "value_interval": (
        "Each test customer's spend interval (band), forecast (line) and actual spend (dots), "
        "customers sorted by forecast. The ends are quantiles at levels chosen on the "
        "validation cutoff so that the interval holds the target share of actuals; the title "
        "says how many it holds on the test cutoff."),
    "btyd_period_transactions": (
        "Customers by repeat purchases before the test cutoff, actual against simulated from "
        "each fitted model: matching bars mean the model describes the data it was fitted on."),
    "btyd_expected_purchases_matrix": (
        "What BG/NBD and Pareto/NBD expect a customer to buy in the horizon, by frequency and "
        "recency, for a customer observed as long as the longest-standing test customer. The "
        "best customers sit top right."),
    "btyd_p_alive_matrix": (
        "The probability a customer is still active, by frequency and recency: frequent buyers "
        "gone quiet (bottom right) are the likeliest lost. BG/NBD takes a customer without a "
        "repeat purchase to be active."),
}

_INTERVAL_TARGET = TrainConfig.model_fields["interval_target"].default
_PAIR_SIZE = (11.0, 4.5)


def figures(result: TrainResult, *,
            interval_target: float = _INTERVAL_TARGET) -> dict[str, Figure]:
    """name -> figure, as logged to MLflow under plots/ and shown by the model report.

    `interval_target`: the share the value interval was calibrated to hold (the run's
    `TrainConfig.interval_target`), for its label.
    """
    t, test = result.tables, result.test
    h = result.cutoffs.horizon_days
    y = test["churned"].astype(int).to_numpy()
    scores = {m: result.metrics[m] for m in result.churn_scores}
    probs = {m: s for m, s in result.churn_scores.items() if f"reliability_{m}" in t}
    no_probs = [m for m in result.churn_scores if m not in probs]

    def tables(prefix: str) -> dict[str, pd.DataFrame]:
        return {k.removeprefix(prefix): v for k, v in t.items() if k.startswith(prefix)}

    axes = {
        "churn_lift_gain": plots.lift_gain_plot(y, result.churn_scores,
                                                note=_serves(result, Target.CHURN)),
        "churn_reliability": plots.reliability_plot(
            y, probs, note=_join(
                _serves(result, Target.CHURN),
                "pareto_nbd is 1 - P(alive), not a horizon probability: it sits above the "
                "diagonal" if "pareto_nbd" in probs else None,
                f"{', '.join(no_probs)}: no probabilities, left out" if no_probs else None)),
        "churn_roc_auc": plots.metrics_bar(scores, "churn.roc_auc"),
        "purchases_tracking": plots.tracking_plot(
            tables("tracking_"), xlabel="week after the test cutoff",
            note=_join(_serves(result, Target.PURCHASES),
                       f"{OURS}: its {h}-day total spread over the weeks like BG/NBD's curve",
                       f"the last week has {h % 7} days" if h % 7 else None)),
        "purchases_actual_vs_expected": plots.actual_vs_expected_plot(
            tables("actual_vs_expected_"), note=_serves(result, Target.PURCHASES)),
        "purchases_mae": plots.metrics_bar(
            {m: v for m, v in result.metrics.items() if "purchases.mae" in v}, "purchases.mae"),
        "value_deciles": plots.decile_chart(
            tables("deciles_"), ylabel=f"mean spend per customer in the next {h} days",
            note=_serves(result, Target.SPEND)),
        "value_interval": plots.interval_plot(
            test["spend"], test["score_spend_p10"], test["score_spend_p50"],
            test["score_spend_p90"], target=interval_target,
            ylabel=f"spend in the next {h} days",
            note="interval ends: quantiles {:.2f} and {:.2f} of the simulated spend".format(
                *result.scorer.interval_levels)),
    }
    out = {name: _figure(ax) for name, ax in axes.items()}
    out.update(_btyd_figures(result))
    return out


def _btyd_figures(result: TrainResult) -> dict[str, Figure]:
    """Period transactions and the frequency/recency matrices of the test cutoff's BG/NBD and
    Pareto/NBD, side by side."""
    comp = result.test_components
    if comp is None:
        return {}
    test = result.test
    f, r, big_t = (test[c].to_numpy(dtype="float64") for c in ("frequency", "recency", "T"))
    age = float(big_t.max())
    top = max(int(np.percentile(f, 99)), 1)
    h = float(result.cutoffs.horizon_days)
    models = {"bg_nbd": comp.bg, "pareto_nbd": comp.pnbd}
    draw: dict[str, Callable[[str, Axes], Axes]] = {
        "btyd_period_transactions": lambda name, ax: plot_period_transactions(
            models[name], f, r, big_t, color=plots.MODEL_COLORS[name], ax=ax),
        "btyd_expected_purchases_matrix": lambda name, ax: plot_frequency_recency_matrix(
            models[name], T=age, t=h, max_frequency=top, ax=ax),
        "btyd_p_alive_matrix": lambda name, ax: plot_probability_alive_matrix(
            models[name], T=age, max_frequency=top, ax=ax),
    }
    out = {}
    for key, plot in draw.items():
        fig = Figure(figsize=_PAIR_SIZE, dpi=plots.DPI, layout="constrained")
        for name, ax in zip(models, fig.subplots(1, 2, sharey=True), strict=True):
            plot(name, ax)
        fig.suptitle(f"BTYD components fitted at the test cutoff {result.cutoffs.test}")
        out[key] = fig
    return out


def _serves(result: TrainResult, target: Target) -> str | None:
    """Which baseline or other candidate than our booster our model serves for `target`, if
    it serves one (chosen on validation)."""
    choice = {Target.CHURN: result.scorer.churn_choice,
              Target.PURCHASES: result.scorer.purchases_choice,
              Target.SPEND: result.scorer.spend_choice}[target]
    if choice == served(target)[0].name:
        return None
    return f"{OURS} = {candidate(target, choice).baseline or choice} (served: chosen on validation)"


def _join(*notes: str | None) -> str | None:
    return "; ".join(n for n in notes if n) or None


def _figure(drawn: Axes | tuple[Axes, ...]) -> Figure:
    first = drawn[0] if isinstance(drawn, tuple) else drawn
    return first.figure
