"""The CRM figures as a page shows them: the charts and tables of the console's CRM page and of
`retention report`'s HTML, built from the same `crm` results, so both show the same numbers."""

from __future__ import annotations

import pandas as pd

from serving.console import charts
from serving.console.crm import METRICS, PERIODS, Period


def crm_context(metrics: pd.DataFrame | None, cohorts: pd.DataFrame | None,
                campaigns: pd.DataFrame, period: Period) -> dict[str, object]:
    """Template context of the CRM section (`_crm_body.html`)."""
    context: dict[str, object] = {"period": period, "periods": PERIODS,
                                  "metrics_meta": METRICS, "table": metrics,
                                  "campaigns": campaigns, "charts": [], "cohort_chart": None,
                                  "campaign_chart": None}
    if metrics is not None and not metrics.empty:
        context["charts"] = _metric_charts(metrics, list(metrics.index), period)
    if cohorts is not None and not cohorts.empty:
        ages = [c for c in cohorts.columns if c != "customers"]
        context["cohort_chart"] = charts.heatmap(
            "Share of each cohort still buying, by periods since its first purchase",
            list(cohorts.index), [str(a) for a in ages],
            cohorts[ages].to_numpy(dtype=float).tolist(),
            row_note=[f"{n:,}" for n in cohorts["customers"]])
    if not campaigns.empty:
        names = [f"{r.campaign_id} · {r.offer_id}" for r in campaigns.itertuples()]
        context["campaign_chart"] = charts.intervals(
            "Incremental revenue per campaign and offer (treated vs control, 95% interval)",
            names, campaigns["incremental_revenue"].tolist(),
            campaigns["incremental_revenue_low"].tolist(),
            campaigns["incremental_revenue_high"].tolist(), unit="incremental revenue")
    return context


def _metric_charts(m: pd.DataFrame, labels: list[str], period: str) -> list[tuple[str, object]]:
    unit = f"per {period}"

    def col(name: str) -> list[float]:
        return m[name].astype(float).tolist()

    return [
        ("Active and new customers: is the base growing?", charts.line_chart(
            "Active and new customers", labels,
            [charts.Series("active customers", col("active_customers"), "s-active"),
             charts.Series("new customers", col("new_customers"), "s-new")],
            unit=f"customers {unit}")),
        ("Retention vs churn rate: of last period's buyers, the share who bought again",
         charts.line_chart(
             "Retention and churn rate", labels,
             [charts.Series("retention rate", col("retention_rate"), "s-retention"),
              charts.Series("churn rate", col("churn_rate"), "s-churn")],
             fmt=charts.percent, unit="share of last period's active customers", y_max=1.0)),
        ("Repeat-purchase rate: active customers with two or more orders in the period",
         charts.line_chart(
             "Repeat-purchase rate", labels,
             [charts.Series("repeat-purchase rate", col("repeat_purchase_rate"), "s-repeat")],
             fmt=charts.percent, unit="share of active customers")),
        ("Sales per customer and average order value: is each customer worth more?",
         charts.line_chart(
             "Sales per customer and average order value", labels,
             [charts.Series("sales per active customer", col("sales_per_customer"),
                            "s-sales"),
              charts.Series("average order value", col("average_order_value"), "s-aov")],
             unit=f"currency {unit}")),
    ]
