"""Every model the scorer can serve or is graded against: one typed declaration each.

A `Candidate` names its target, how it predicts from the stacked feature rows (the features
plus the BTYD columns of `training.components`) with the fitted models of a scorer, whether
the scorer may serve it, and the name it is graded under when it is a baseline. Selection
(`training.train`), the scorer, the evaluation and the model card all read this table, so
adding a candidate is one entry here (plus its tests).

Selection (`choose`) reads each servable candidate's `SELECTION` metrics on the validation
cutoff. A candidate is eligible when it is within `TOLERANCES` of the best candidate on every
one of them (absolute for a score such as an AUC, relative for an error such as Brier or MAE);
the eligible candidate with the lowest sum of its ranks over the metrics wins (rank 1 = best,
ties share the mean rank). When none is eligible, the lowest rank sum among all wins. Equal
rank sums go to the earlier entry of the table. With one metric this is simply the best value.

Examples
--------
>>> [c.name for c in served(Target.CHURN)]
['xgboost', 'rfm_logistic', 'blend', 'xgboost_bg_mean', 'bg_nbd']
>>> SELECTION[Target.PURCHASES]
(<Metric.PURCHASES_MAE: 'purchases.mae'>,)
>>> candidate(Target.SPEND, "pnbd_gg").baseline
'pareto_nbd_gg'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd
from scipy import stats

from training.evaluate import Metric, recency_score

if TYPE_CHECKING:
    from training.models import (
        ChurnClassifier,
        PurchasesRegressor,
        RankBlend,
        RFMLogistic,
        SpendRegressor,
    )

# Our model's name in every metrics table, beside the baselines' names.
OURS = "ours"
# The churn candidate that blends the booster's and the RFM logistic regression's ranks.
BLEND = "blend"
# The churn candidate that averages the booster's and BG/NBD's probabilities.
BG_MEAN = "xgboost_bg_mean"
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
    blend: RankBlend | None  # fitted when the blend can be chosen


Predict = Callable[[Fitted, pd.DataFrame], np.ndarray]
# Per-feature contributions to a churn score's log-odds plus `bias` (TreeSHAP's format), the
# input of `training.reasons`.
Explain = Callable[[Fitted, pd.DataFrame], pd.DataFrame]


@dataclass(frozen=True)
class Candidate:
    """One way to forecast a target from stacked feature rows."""

    name: str  # stored in the scorer and answered as `<target>_model`
    target: Target
    predict: Predict
    served: bool = True  # the scorer may serve it when it wins on validation
    baseline: str | None = None  # its name in the evaluation's baselines, if it is one
    # the contributions behind the reasons given with its churn score (None: the booster's)
    explain: Explain | None = None


def booster_churn(churn: ChurnClassifier, x: pd.DataFrame) -> np.ndarray:
    """The churn booster's calibrated P(churn) of stacked rows."""
    return churn.predict_proba(x[churn.feature_names_in_])[:, 1]


def rfm_churn(rfm: RFMLogistic, x: pd.DataFrame) -> np.ndarray:
    """The RFM logistic regression's P(churn) of stacked rows."""
    return rfm.predict_proba(rfm_matrix(x))[:, 1]


def blend_inputs(churn: ChurnClassifier, rfm: RFMLogistic, x: pd.DataFrame) -> np.ndarray:
    """(rows, 2): the scores the rank blend averages, booster first, then RFM logistic."""
    return np.column_stack([booster_churn(churn, x), rfm_churn(rfm, x)])


def _blend(m: Fitted, x: pd.DataFrame) -> np.ndarray:
    if m.blend is None:
        raise ValueError(f"churn candidate {BLEND!r} was not fitted with this model")
    return m.blend.predict_proba(blend_inputs(m.churn, m.rfm, x))[:, 1]


def _bg_mean(m: Fitted, x: pd.DataFrame) -> np.ndarray:
    return 0.5 * (booster_churn(m.churn, x) + x["bg_p_zero"].to_numpy(dtype="float64"))


def _booster_reasons(m: Fitted, x: pd.DataFrame) -> pd.DataFrame:
    return m.churn.contributions(x[m.churn.feature_names_in_])


def _rfm_reasons(m: Fitted, x: pd.DataFrame) -> pd.DataFrame:
    contrib = m.rfm.contributions(rfm_matrix(x))
    return contrib.set_axis([*RFM_COLUMNS, "bias"], axis=1).set_axis(x.index)


def churn_contributions(m: Fitted, name: str, x: pd.DataFrame) -> pd.DataFrame:
    """The contributions behind the reasons of churn candidate `name` for stacked rows: its
    own when it declares them (the RFM logistic regression's coefficient times distance from
    the training mean), else the booster's TreeSHAP."""
    explain = candidate(Target.CHURN, name).explain or _booster_reasons
    return explain(m, x)


def prepare_reasons(m: Fitted, name: str) -> None:
    """Build now what `churn_contributions` of candidate `name` reads for big batches (the
    booster's TreeSHAP tables when its reasons are the booster's)."""
    if candidate(Target.CHURN, name).explain is None:
        m.churn.prepare_contributions()


def _column(name: str) -> Predict:
    return lambda _models, x: x[name].to_numpy(dtype="float64")


def _product(a: str, b: str) -> Predict:
    return lambda _models, x: (x[a] * x[b]).to_numpy(dtype="float64")


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("xgboost", Target.CHURN, lambda m, x: booster_churn(m.churn, x)),
    Candidate("recency_rule", Target.CHURN,
              lambda _m, x: recency_score(x["days_since_last"]), served=False,
              baseline="recency_rule"),
    Candidate("rfm_logistic", Target.CHURN, lambda m, x: rfm_churn(m.rfm, x),
              baseline="rfm_logistic", explain=_rfm_reasons),
    # Average of the booster's and the RFM logistic regression's percentile ranks, calibrated
    # (training.models.blend.RankBlend); its reasons are the booster's.
    Candidate(BLEND, Target.CHURN, _blend),
    # The mean of two probabilities of the same event from unlike models: the booster learns
    # from past cutoffs' outcomes, BG/NBD (P(no purchase in the horizon)) from this snapshot's
    # own histories, so a shift in the churn rate since training moves one and not the other.
    # Its reasons are the booster's.
    Candidate(BG_MEAN, Target.CHURN, _bg_mean),
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

# The validation metrics that pick the served candidate per target (see `choose`).
SELECTION: dict[Target, tuple[Metric, ...]] = {
    Target.CHURN: (Metric.CHURN_ROC_AUC, Metric.CHURN_PR_AUC, Metric.CHURN_BRIER),
    Target.PURCHASES: (Metric.PURCHASES_MAE,),
    Target.SPEND: (Metric.VALUE_MAE,),
}
# How far from the best candidate a candidate may be and stay eligible: absolute for a score
# (higher is better), relative for an error (a share of the best error). Other metrics: 0.
TOLERANCES: dict[Metric, float] = {
    Metric.CHURN_ROC_AUC: 0.005, Metric.CHURN_PR_AUC: 0.005, Metric.CHURN_BRIER: 0.01,
}
_EPS = 1e-12
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


def selection_rule(target: Target) -> str:
    """The selection rule of `target` in words, with its metrics and tolerances (model card)."""
    metrics = SELECTION[target]
    if len(metrics) == 1:
        return f"the best {metrics[0]}"
    tolerances = ", ".join(f"{m} {TOLERANCES.get(m, 0.0):g}"
                           + ("" if m.higher_is_better else " relative") for m in metrics)
    return ("the lowest rank sum over its metrics among candidates within tolerance of the "
            f"best on all of them ({tolerances}); among all candidates when none is")


@dataclass(frozen=True)
class Choice:
    """The candidate selection serves for a target, and why."""

    name: str
    reason: str
    eligible: tuple[str, ...]  # within tolerance of the best on every metric
    rank_sums: dict[str, float]


def _within(metric: Metric, value: float, best: float) -> bool:
    tolerance = TOLERANCES.get(metric, 0.0)
    if not math.isfinite(value):
        return False
    if metric.higher_is_better:
        return value >= best - tolerance - _EPS
    return value <= best + tolerance * abs(best) + _EPS


def choose(values: Mapping[str, Mapping[str, float]], metrics: Sequence[Metric]) -> Choice:
    """The winner among candidates by their validation `values` (candidate -> metric key ->
    value, in table order) on `metrics`, by the rule in this module's docstring.

    A NaN value ranks last and is never within tolerance; a metric NaN for every candidate
    is left out of the rule.

    Examples
    --------
    >>> auc, pr, brier = SELECTION[Target.CHURN]
    >>> values = {"xgboost": {auc: 0.770, pr: 0.700, brier: 0.200},
    ...           "rfm_logistic": {auc: 0.772, pr: 0.720, brier: 0.199},
    ...           "blend": {auc: 0.775, pr: 0.718, brier: 0.198}}
    >>> choice = choose(values, SELECTION[Target.CHURN])
    >>> choice.name, choice.eligible, choice.rank_sums["rfm_logistic"]
    ('blend', ('rfm_logistic', 'blend'), 5.0)
    """
    names = list(values)
    if not names:
        raise ValueError("no candidates to choose from")
    used = [m for m in metrics
            if any(math.isfinite(values[n].get(m, math.nan)) for n in names)]
    ranks = {n: 0.0 for n in names}
    best: dict[Metric, float] = {}
    for m in used:
        v = np.array([values[n].get(m, math.nan) for n in names], dtype=float)
        signed = np.where(np.isfinite(v), -v if m.higher_is_better else v, np.inf)
        for n, r in zip(names, stats.rankdata(signed, method="average"), strict=True):
            ranks[n] += float(r)
        finite = v[np.isfinite(v)]
        best[m] = float(finite.max() if m.higher_is_better else finite.min())
    eligible = tuple(n for n in names
                     if all(_within(m, values[n].get(m, math.nan), best[m]) for m in used))
    pool = eligible or tuple(names)
    name = min(pool, key=lambda n: (ranks[n], names.index(n)))
    shown = ", ".join(f"{m} {values[name][m]:.4f} (best {best[m]:.4f})" for m in used)
    if not used:
        reason = f"{name}: no selection metric could be measured; the first candidate serves"
    elif len(used) == 1:
        others = ", ".join(f"{n} {values[n][used[0]]:.4f}" for n in names if n != name)
        reason = (f"{name}: the best {used[0]} on the validation cutoff, "
                  f"{values[name][used[0]]:.4f} ({others})")
    elif len(eligible) == 1:
        reason = (f"{name}: the only candidate within tolerance of the best on every "
                  f"validation metric: {shown}")
    elif eligible:
        others = ", ".join(f"{n} {ranks[n]:g}" for n in eligible if n != name)
        reason = (f"{name}: within tolerance of the best on every validation metric, with the "
                  f"lowest rank sum of those that are ({ranks[name]:g}; {others}): {shown}")
    else:
        others = ", ".join(f"{n} {ranks[n]:g}" for n in names if n != name)
        reason = (f"{name}: no candidate is within tolerance of the best on every validation "
                  f"metric; it has the lowest rank sum ({ranks[name]:g}; {others}): {shown}")
    return Choice(name, reason, eligible, ranks)
