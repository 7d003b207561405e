"""Every model the scorer can serve or is graded against: one typed declaration each.

A `Candidate` names its target, how it predicts from the stacked feature rows (the features
plus the BTYD columns of `training.components`) with the fitted models of a scorer, whether
the scorer may serve it, and the name it is graded under when it is a baseline. Selection
(`training.train`), the scorer, the evaluation and the model card all read this table, so
adding a candidate is one entry here (plus its tests).

Examples
--------
>>> [c.name for c in served(Target.CHURN)]
['xgboost', 'rfm_logistic', 'bg_nbd']
>>> SELECTION[Target.PURCHASES]
<Metric.PURCHASES_MAE: 'purchases.mae'>
>>> candidate(Target.SPEND, "pnbd_gg").baseline
'pareto_nbd_gg'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from training.evaluate import Metric, recency_score

if TYPE_CHECKING:
    from training.models import (
        ChurnClassifier,
        PurchasesRegressor,
        RFMLogistic,
        SpendRegressor,
    )

# Our model's name in every metrics table, beside the baselines' names.
OURS = "ours"
# The classic analyst's churn model reads recency, frequency and monetary value.
RFM_COLUMNS: tuple[str, ...] = ("days_since_last", "orders_365d", "spend_365d")


def rfm_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The RFM columns as a plain array, in RFM_COLUMNS order (the RFM baseline is fitted
    and scored on arrays, as models registered earlier were)."""
    return frame[list(RFM_COLUMNS)].to_numpy(dtype="float64")


class Target(StrEnum):
    """What a candidate forecasts for the horizon."""

    CHURN = "churn"  # P(no purchase)
    PURCHASES = "purchases"  # expected purchase days
    SPEND = "spend"  # expected net spend


class Fitted(Protocol):
    """The fitted models a candidate may read (a `CustomerScorer` is one)."""

    churn: ChurnClassifier
    purchases: PurchasesRegressor
    spend: SpendRegressor
    rfm: RFMLogistic


Predict = Callable[[Fitted, pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class Candidate:
    """One way to forecast a target from stacked feature rows."""

    name: str  # stored in the scorer and answered as `<target>_model`
    target: Target
    predict: Predict
    served: bool = True  # the scorer may serve it when it wins on validation
    baseline: str | None = None  # its name in the evaluation's baselines, if it is one


def _column(name: str) -> Predict:
    return lambda _models, x: x[name].to_numpy(dtype="float64")


def _product(a: str, b: str) -> Predict:
    return lambda _models, x: (x[a] * x[b]).to_numpy(dtype="float64")


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("xgboost", Target.CHURN,
              lambda m, x: m.churn.predict_proba(x[m.churn.feature_names_in_])[:, 1]),
    Candidate("recency_rule", Target.CHURN,
              lambda _m, x: recency_score(x["days_since_last"]), served=False,
              baseline="recency_rule"),
    Candidate("rfm_logistic", Target.CHURN,
              lambda m, x: m.rfm.predict_proba(rfm_matrix(x))[:, 1],
              baseline="rfm_logistic"),
    Candidate("bg_nbd", Target.CHURN, _column("bg_p_zero"), baseline="bg_nbd"),
    Candidate("pareto_nbd", Target.CHURN,
              lambda _m, x: 1.0 - x["pnbd_p_alive"].to_numpy(dtype="float64"), served=False,
              baseline="pareto_nbd"),
    Candidate("xgboost", Target.PURCHASES,
              lambda m, x: m.purchases.predict(x[m.purchases.feature_names_in_])),
    Candidate("bg_nbd", Target.PURCHASES, _column("bg_expected"), baseline="bg_nbd"),
    Candidate("pareto_nbd", Target.PURCHASES, _column("pnbd_expected"), baseline="pareto_nbd"),
    Candidate("xgboost", Target.SPEND,
              lambda m, x: m.spend.predict(x[m.spend.feature_names_in_])),
    Candidate("bg_gg", Target.SPEND, _product("bg_expected", "gg_spend"),
              baseline="bg_nbd_gg"),
    Candidate("pnbd_gg", Target.SPEND, _product("pnbd_expected", "gg_spend"),
              baseline="pareto_nbd_gg"),
)

# The validation metric that picks the served candidate per target.
SELECTION: dict[Target, Metric] = {
    Target.CHURN: Metric.CHURN_ROC_AUC,
    Target.PURCHASES: Metric.PURCHASES_MAE,
    Target.SPEND: Metric.VALUE_MAE,
}
# The label column of the feature table that each target forecasts.
LABELS: dict[Target, str] = {
    Target.CHURN: "churned", Target.PURCHASES: "n_purchases", Target.SPEND: "spend",
}


def served(target: Target) -> tuple[Candidate, ...]:
    """The candidates the scorer may serve for `target`, in selection order."""
    return tuple(c for c in CANDIDATES if c.target == target and c.served)


def baselines(target: Target) -> tuple[Candidate, ...]:
    """The candidates graded as baselines for `target`, in report order."""
    return tuple(c for c in CANDIDATES if c.target == target and c.baseline is not None)


def candidate(target: Target, name: str) -> Candidate:
    """The declaration of `name` for `target`; a ValueError names the known ones."""
    for c in CANDIDATES:
        if c.target == target and c.name == name:
            return c
    known = [c.name for c in CANDIDATES if c.target == target]
    raise ValueError(f"{target} candidate {name!r} is not one of {known}")


def baseline_names(*targets: Target) -> tuple[str, ...]:
    """Baseline names of the targets, without repeats, in report order."""
    names: dict[str, None] = {}
    for target in targets:
        names.update(dict.fromkeys(c.baseline for c in baselines(target)))
    return tuple(n for n in names if n is not None)
