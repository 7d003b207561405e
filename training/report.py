"""The plots of a training run, built from its evaluation tables (plotting apart from maths)."""

from __future__ import annotations

from matplotlib.figure import Figure

from training import plots
from training.train import TrainResult


def figures(result: TrainResult) -> dict[str, Figure]:
    """name -> figure, as logged to MLflow under plots/ and shown by the model report."""
    t, test = result.tables, result.test
    y = test["churned"].astype(int).to_numpy()
    scores = {m: result.metrics[m] for m in result.churn_scores}
    out = {
        "churn_lift_gain": plots.lift_gain_plot(y, result.churn_scores),
        "churn_reliability": plots.reliability_plot(
            y, {m: v for m, v in result.churn_scores.items()
                if m != "recency_rule"}),
        "churn_roc_auc": plots.metrics_bar(scores, "churn.roc_auc"),
        "purchases_tracking": plots.tracking_plot(
            {k.removeprefix("tracking_"): v for k, v in t.items() if k.startswith("tracking_")}),
        "purchases_actual_vs_expected": plots.actual_vs_expected_plot(
            {k.removeprefix("actual_vs_expected_"): v for k, v in t.items()
             if k.startswith("actual_vs_expected_")}),
        "purchases_mae": plots.metrics_bar(
            {m: v for m, v in result.metrics.items() if "purchases.mae" in v}, "purchases.mae"),
        "value_deciles": plots.decile_chart(
            {k.removeprefix("deciles_"): v for k, v in t.items() if k.startswith("deciles_")}),
        "value_interval": plots.interval_plot(
            test["spend"], test["score_spend_p10"], test["score_spend_p50"],
            test["score_spend_p90"]),
    }
    return out
