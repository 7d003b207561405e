"""Out-of-time evaluation maths: churn, purchase and value metrics, tables for the plots, grades.

Pure numpy/pandas/scipy/scikit-learn, no plotting (see `training.plots`). Conventions:

- Churn: `y_true` is 0/1 with 1 = churned, `p` the predicted churn probability (higher = riskier).
- Ties in a score never depend on input order where it matters for a headline number: the
  top-decile numbers, the Gini and the gain curve give the expected value over a random order
  of tied customers (ROC-AUC and average precision from scikit-learn treat ties the same way).
  Equal-frequency bins and deciles (`reliability_table`, `decile_table`, ECE) split tied
  customers by input order.
- Undefined values (an AUC on one class, a share of a zero total) are NaN, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypedDict

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

ArrayLike = npt.ArrayLike
_EPS = 1e-9  # tolerance on grade boundaries, so 0.79 - 0.77 counts as a 0.02 improvement
GRADE_ORDER = ("A", "B", "C")
NOT_GRADED = "n/a"




class Metric(StrEnum):
    """A metric's key in every metrics table: "<section>.<name>" (section churn, purchases or
    value; name as `churn_metrics`, `purchase_metrics` and `value_metrics` return it)."""

    CHURN_ROC_AUC = "churn.roc_auc"
    CHURN_PR_AUC = "churn.pr_auc"
    CHURN_BRIER = "churn.brier"
    CHURN_ECE = "churn.ece"
    PURCHASES_MAE = "purchases.mae"
    VALUE_MAE = "value.mae"
    VALUE_GINI = "value.normalized_gini"
    VALUE_COVERAGE = "value.interval_coverage"

    @property
    def section(self) -> str:
        return self.value.split(".", 1)[0]

    @property
    def short(self) -> str:
        return self.value.split(".", 1)[1]

    @property
    def higher_is_better(self) -> bool:
        return self.short in _HIGHER_IS_BETTER


_HIGHER_IS_BETTER = frozenset({"roc_auc", "pr_auc", "normalized_gini", "interval_coverage"})


def metric_value(metric: Metric, actual: ArrayLike, predicted: ArrayLike) -> float:
    """One metric of `predicted` against `actual` (churn: 0/1 labels and probabilities)."""
    compute = {"churn": churn_metrics, "purchases": purchase_metrics,
               "value": value_metrics}[metric.section]
    return float(compute(actual, predicted)[metric.short])


def metric_error(metric: Metric, actual: ArrayLike, predicted: ArrayLike) -> float:
    """`metric_value` as an error, lower is better (1 - value for AUC-like metrics)."""
    value = metric_value(metric, actual, predicted)
    return 1.0 - value if metric.higher_is_better else value


# --------------------------------------------------------------------------------- helpers


def _vec(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    if a.size == 0:
        raise ValueError(f"{name}: empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def _vecs(**named: ArrayLike) -> list[np.ndarray]:
    out = [_vec(v, k) for k, v in named.items()]
    sizes = {k: a.size for k, a in zip(named, out, strict=True)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"arrays differ in length: {sizes}")
    return out


def _binary(y: np.ndarray, name: str = "y_true") -> np.ndarray:
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{name}: expected only 0/1 values")
    return y


def _top_sum(values: np.ndarray, score: np.ndarray, frac: float = 0.1) -> tuple[float, int]:
    """Sum of `values` over the top ceil(frac*n) by `score`, ties at the cut shared pro rata."""
    n = values.size
    k = max(1, math.ceil(n * frac - _EPS))
    cut = np.sort(score)[::-1][k - 1]
    above, tied = score > cut, score == cut
    total = values[above].sum() + (k - above.sum()) * values[tied].mean()
    return float(total), k


def _equal_frequency_bins(score: np.ndarray, bins: int, *, descending: bool) -> list[np.ndarray]:
    """Indices split into min(bins, n) groups of near-equal size (larger groups first)."""
    order = np.argsort(-score if descending else score, kind="stable")
    return np.array_split(order, min(bins, score.size))


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b != 0 else float("nan")


# ------------------------------------------------------------------------------------ churn


def reliability_table(y_true: ArrayLike, p: ArrayLike, bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs observed churn rate per equal-frequency bin of `p` (ascending).

    Customers sorted by `p` are cut into min(bins, n) groups of near-equal size. Columns:
    n, p_min, p_max, mean_predicted, observed_rate; index `bin` 1..bins (1 = lowest p).
    """
    y, q = _vecs(y_true=y_true, p=p)
    _binary(y)
    rows = [
        {"n": idx.size, "p_min": q[idx].min(), "p_max": q[idx].max(),
         "mean_predicted": q[idx].mean(), "observed_rate": y[idx].mean()}
        for idx in _equal_frequency_bins(q, bins, descending=False)
    ]
    out = pd.DataFrame(rows)
    out.index = pd.RangeIndex(1, len(out) + 1, name="bin")
    return out


def churn_metrics(y_true: ArrayLike, p: ArrayLike) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision), Brier, ECE, top-decile lift, base rate, n.

    ECE (expected calibration error) uses 10 equal-frequency bins of `p` (see
    `reliability_table`): sum over bins of (bin size / n) * |mean p - observed churn rate|.
    Top-decile lift = churn rate among the ceil(n/10) highest `p` / overall churn rate.
    With one class in `y_true`, roc_auc and pr_auc are NaN (and lift is NaN if nobody churned).
    """
    y, q = _vecs(y_true=y_true, p=p)
    _binary(y)
    both = 0 < y.sum() < y.size
    rel = reliability_table(y, q, bins=10)
    top, k = _top_sum(y, q)
    base = float(y.mean())
    return {
        "roc_auc": float(roc_auc_score(y, q)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, q)) if both else float("nan"),
        "brier": float(np.mean((q - y) ** 2)),
        "ece": float(np.sum(rel.n / y.size * (rel.mean_predicted - rel.observed_rate).abs())),
        "top_decile_lift": _safe_div(top / k, base),
        "base_rate": base,
        "n": int(y.size),
    }


def gain_curve(y_true: ArrayLike, score: ArrayLike) -> pd.DataFrame:
    """Cumulative gain and lift: contact customers from the highest score down.

    One row per distinct score (ties enter together) plus a first row (0, 0). Columns:
    threshold (contact everyone with score >= it), share_contacted, share_captured (share of
    all positives reached), lift = share_captured / share_contacted (NaN on the first row).
    """
    y, s = _vecs(y_true=y_true, score=score)
    _binary(y)
    g = (pd.DataFrame({"s": s, "y": y}).groupby("s", sort=True)
         .agg(n=("y", "size"), pos=("y", "sum")).iloc[::-1])
    contacted = np.concatenate([[0.0], g.n.cumsum().to_numpy() / y.size])
    positives = y.sum()
    captured = (np.concatenate([[0.0], g.pos.cumsum().to_numpy() / positives]) if positives
                else np.full(contacted.size, np.nan))
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(contacted > 0, captured / np.where(contacted > 0, contacted, 1), np.nan)
    return pd.DataFrame({
        "threshold": np.concatenate([[np.inf], g.index.to_numpy(dtype=float)]),
        "share_contacted": contacted, "share_captured": captured, "lift": lift,
    })


# -------------------------------------------------------------------------------- purchases


def purchase_metrics(actual: ArrayLike, expected: ArrayLike) -> dict[str, float]:
    """MAE, RMSE, aggregate error (sum(expected) - sum(actual)) / sum(actual), means, n."""
    a, e = _vecs(actual=actual, expected=expected)
    return {
        "mae": float(np.mean(np.abs(e - a))),
        "rmse": float(np.sqrt(np.mean((e - a) ** 2))),
        "aggregate_error": _safe_div(e.sum() - a.sum(), a.sum()),
        "mean_actual": float(a.mean()),
        "mean_expected": float(e.mean()),
        "n": int(a.size),
    }


def actual_vs_expected_by_frequency(
    calibration_frequency: ArrayLike, actual: ArrayLike, expected: ArrayLike, cap: int = 7
) -> pd.DataFrame:
    """The BTYD conditional-expectations table: holdout purchases by calibration frequency.

    Rows "0".."cap-1" and "cap+" (frequency >= cap), always all present (n = 0 and NaN means
    when empty). Columns n, mean_actual, mean_expected; index `frequency` (strings).
    """
    f, a, e = _vecs(calibration_frequency=calibration_frequency, actual=actual, expected=expected)
    if cap < 1:
        raise ValueError("cap must be >= 1")
    if (f < 0).any() or (f != np.round(f)).any():
        raise ValueError("calibration_frequency: expected non-negative whole numbers")
    labels = [str(i) for i in range(cap)] + [f"{cap}+"]
    group = pd.Categorical.from_codes(np.minimum(f, cap).astype(int), categories=labels)
    out = (pd.DataFrame({"frequency": group, "actual": a, "expected": e})
           .groupby("frequency", observed=False)
           .agg(n=("actual", "size"), mean_actual=("actual", "mean"),
                mean_expected=("expected", "mean")))
    out.index = pd.Index(labels, name="frequency")
    return out


def tracking_table(actual_by_period: pd.Series, expected_by_period: pd.Series) -> pd.DataFrame:
    """Repeat purchases per period, actual vs model-expected, and their running totals.

    The caller builds both series (index = period start, e.g. daily or weekly). Periods present
    in only one series count 0 in the other. Columns actual, expected, cumulative_actual,
    cumulative_expected; index `period`, sorted.
    """
    out = (pd.concat({"actual": actual_by_period, "expected": expected_by_period}, axis=1,
                     sort=True)
           .sort_index().fillna(0.0).astype(float))
    out["cumulative_actual"] = out.actual.cumsum()
    out["cumulative_expected"] = out.expected.cumsum()
    out.index.name = "period"
    return out


# ------------------------------------------------------------------------------------ value


def _gini(actual: np.ndarray, score: np.ndarray) -> float:
    """Gini of the Lorenz curve of `actual` ordered by `score` (descending, ties averaged)."""
    order = np.argsort(-score, kind="stable")
    a = pd.Series(actual[order]).groupby(score[order]).transform("mean").to_numpy()
    total = a.sum()
    if total == 0:
        return float("nan")
    n = a.size
    return float(np.cumsum(a).sum() / total / n - (n + 1) / (2 * n))


def normalized_gini(actual: ArrayLike, predicted: ArrayLike) -> float:
    """Gini of the predicted ordering / Gini of the perfect ordering (1 perfect, -1 reversed).

    For 0/1 `actual` it equals 2 * ROC-AUC - 1. NaN when all actual values are equal.
    """
    a, p = _vecs(actual=actual, predicted=predicted)
    return _safe_div(_gini(a, p), _gini(a, a))


def value_metrics(
    actual_spend: ArrayLike,
    predicted_value: ArrayLike,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
) -> dict[str, float]:
    """normalized_gini, spearman, mae, top_decile_share, and interval_coverage if the interval
    ends `lower` and `upper` are given.

    top_decile_share = share of total actual spend among the ceil(n/10) highest predicted;
    interval_coverage = share of customers with lower <= actual <= upper.
    """
    a, v = _vecs(actual_spend=actual_spend, predicted_value=predicted_value)
    constant = np.ptp(a) == 0 or np.ptp(v) == 0
    top, _ = _top_sum(a, v)
    out = {
        "normalized_gini": normalized_gini(a, v),
        "spearman": float("nan") if constant else float(stats.spearmanr(a, v).statistic),
        "mae": float(np.mean(np.abs(v - a))),
        "top_decile_share": _safe_div(top, a.sum()),
    }
    if (lower is None) != (upper is None):
        raise ValueError("give both lower and upper, or neither")
    if lower is not None and upper is not None:
        lo, hi = _vecs(actual_spend=a, lower=lower, upper=upper)[1:]
        out["interval_coverage"] = float(np.mean((a >= lo) & (a <= hi)))
    return out


def decile_table(actual: ArrayLike, predicted: ArrayLike, n: int = 10) -> pd.DataFrame:
    """Customers by predicted decile (1 = highest predicted): n, mean_predicted, mean_actual,
    share_of_actual (of the total), lift (mean_actual / overall mean actual).

    min(n, len) groups of near-equal size, larger groups first; ties split by input order.
    """
    a, p = _vecs(actual=actual, predicted=predicted)
    total, mean = a.sum(), a.mean()
    rows = [
        {"n": idx.size, "mean_predicted": p[idx].mean(), "mean_actual": a[idx].mean(),
         "share_of_actual": _safe_div(a[idx].sum(), total),
         "lift": _safe_div(a[idx].mean(), mean)}
        for idx in _equal_frequency_bins(p, n, descending=True)
    ]
    out = pd.DataFrame(rows)
    out.index = pd.RangeIndex(1, len(out) + 1, name="decile")
    return out


# ---------------------------------------------------------------------------- recency rules


def recency_rule(days_since_last: ArrayLike, threshold_days: float) -> np.ndarray:
    """The "no purchase in X days" rule: 1.0 (churn) where days_since_last > X, else 0.0."""
    d = _vec(days_since_last, "days_since_last")
    return (d > threshold_days).astype(float)


def recency_score(days_since_last: ArrayLike) -> np.ndarray:
    """Continuous score of the recency-rule family: rank of days_since_last scaled to [0, 1].

    (average rank - 1) / (n - 1), ties share a rank; 0.5 for a single customer. Use it for
    ROC-AUC / PR-AUC / Gini / gain only: it is an ordering, not a probability.
    """
    d = _vec(days_since_last, "days_since_last")
    if d.size == 1:
        return np.array([0.5])
    return (stats.rankdata(d, method="average") - 1) / (d.size - 1)


def recency_candidates(start_days: float = 365, min_days: float = 7) -> list[float]:
    """X = start, start/2, start/4, ... while X >= min_days (365 → 365 … 11.40625)."""
    out, x = [], float(start_days)
    while x >= min_days:
        out.append(x)
        x /= 2
    if not out:
        raise ValueError(f"start_days {start_days} < min_days {min_days}")
    return out


def best_recency_rule(
    days_since_last: ArrayLike,
    y_true: ArrayLike,
    start_days: float = 365,
    min_days: float = 7,
) -> tuple[float, np.ndarray]:
    """The best "no purchase in X days" rule over halving X, chosen on the data passed.

    Candidates: `recency_candidates(start_days, min_days)`; rule X predicts churn where
    days_since_last > X. X maximises Youden's J = TPR - FPR on (days_since_last, y_true)
    (prevalence-free, so "everyone churns" scores 0 however high the churn rate; F1 would
    pick it). Ties go to the larger X. Pass training data here, then apply to test data:
    `recency_rule(test_days, X)` for threshold metrics (precision, recall, Brier of the rule),
    `recency_score(test_days)` for ranking metrics (ROC-AUC etc.: days_since_last itself is the
    continuous score of the rule family; a single rule's 0/1 score has a poor, two-point ROC).

    Returns (X, recency_score(days_since_last)) for the data passed.
    """
    d, y = _vecs(days_since_last=days_since_last, y_true=y_true)
    _binary(y)
    pos, neg = y.sum(), y.size - y.sum()
    if pos == 0 or neg == 0:
        raise ValueError("y_true has one class: cannot choose a recency rule")
    best_x, best_j = math.nan, -math.inf
    for x in recency_candidates(start_days, min_days):
        flag = d > x
        j = flag[y == 1].sum() / pos - flag[y == 0].sum() / neg
        if j > best_j + _EPS:
            best_x, best_j = x, j
    return best_x, recency_score(d)


# ------------------------------------------------------------------------------------ grades


def grade(
    ours: float,
    best_baseline: float,
    *,
    higher_is_better: bool,
    margins: tuple[float, float] = (0.02, 0.0),
) -> str:
    """Plain A/B/C against the best baseline; "n/a" if either value is NaN.

    improvement = ours - baseline when higher_is_better (absolute: AUC, Gini), else
    (baseline - ours) / |baseline| (relative: MAE, Brier; a zero baseline gives B if ours is
    also 0, else C). "A": improvement >= margins[0]; "B": improvement >= -margins[1];
    else "C". Defaults: A needs +0.02 AUC or a 2% smaller error; B means no worse.
    """
    if math.isnan(ours) or math.isnan(best_baseline):
        return NOT_GRADED
    if higher_is_better:
        improvement = ours - best_baseline
    elif best_baseline == 0:
        return "B" if ours <= _EPS else "C"
    else:
        improvement = (best_baseline - ours) / abs(best_baseline)
    if improvement >= margins[0] - _EPS:
        return "A"
    return "B" if improvement >= -margins[1] - _EPS else "C"


@dataclass(frozen=True)
class GradedMetric:
    """A metric the grade report compares with the best baseline, and how it says so."""

    key: Metric
    alias: str | None  # bare name accepted when the key is not namespaced
    label: str
    subject: str
    verbs: tuple[str, str, str]  # for A, B, C
    headline: bool  # counts toward the overall grade
    fmt: str = ".3f"

    @property
    def higher_is_better(self) -> bool:
        return self.key.higher_is_better


class Grade(TypedDict):
    """One graded metric of a grade report."""

    metric: str
    label: str
    higher_is_better: bool
    best_baseline: str
    baseline_value: float
    ours: float
    delta: float
    grade: str
    explanation: str


class OverallGrade(TypedDict):
    """The report's "overall" entry: the weakest headline grade."""

    grade: str
    based_on: list[str]
    explanation: str


GradeReport = dict[str, Grade | OverallGrade]

_RANKS = ("better than", "about as well as", "worse than")
_ACCURACY = ("more accurate than", "about as accurate as", "less accurate than")
GRADED_METRICS: tuple[GradedMetric, ...] = (
    GradedMetric(Metric.CHURN_ROC_AUC, "roc_auc", "ROC-AUC", "Churn model ranks customers",
                 _RANKS, True),
    GradedMetric(Metric.CHURN_PR_AUC, "pr_auc", "PR-AUC",
                 "Churn model puts churners at the top of its list", _RANKS, True),
    GradedMetric(Metric.CHURN_BRIER, "brier", "Brier score", "Churn probabilities are",
                 _ACCURACY, True),
    GradedMetric(Metric.PURCHASES_MAE, None, "MAE", "Purchase forecasts are", _ACCURACY, True,
                 ".3g"),
    GradedMetric(Metric.VALUE_GINI, "normalized_gini", "normalized Gini",
                 "Value model ranks customers by future spend", _RANKS, True),
)


def _lookup(metrics: dict[str, float], m: GradedMetric) -> float | None:
    for key in (m.key, m.alias):
        if key is not None and key in metrics:
            return float(metrics[key])
    return None


def grade_report(
    metrics_by_model: dict[str, dict[str, float]],
    ours: str,
    baselines: Sequence[str],
    *,
    margins: tuple[float, float] = (0.02, 0.0),
) -> GradeReport:
    """Grade our model against the best baseline per metric, plus an overall grade.

    Metric keys: "churn.roc_auc", "churn.pr_auc", "churn.brier", "purchases.mae",
    "value.normalized_gini" (bare "roc_auc", "pr_auc", "brier", "normalized_gini" also work;
    a bare "mae" is refused as ambiguous between purchases and value). A metric is graded
    when `ours` and at least one baseline have it; the best baseline is the one with the best
    non-NaN value. Each entry: metric, label, higher_is_better, best_baseline, baseline_value,
    ours, delta (ours - baseline), grade, explanation. "overall": the worst grade among the
    headline entries present ("n/a" ones ignored): churn ROC-AUC, PR-AUC and Brier (ranking,
    ranking at the top of the list, and probabilities a person reads), purchases MAE and value
    Gini.
    """
    if ours not in metrics_by_model:
        raise ValueError(f"model {ours!r} not in metrics_by_model")
    missing = [b for b in baselines if b not in metrics_by_model]
    if missing:
        raise ValueError(f"baselines not in metrics_by_model: {missing}")
    for name in (ours, *baselines):
        if "mae" in metrics_by_model[name]:
            raise ValueError(f"{name}: bare 'mae' is ambiguous; use 'purchases.mae' or "
                             "'value.mae'")
    report: GradeReport = {}
    for m in GRADED_METRICS:
        mine = _lookup(metrics_by_model[ours], m)
        theirs = {b: v for b in baselines if (v := _lookup(metrics_by_model[b], m)) is not None}
        if mine is None or not theirs:
            continue
        finite = {b: v for b, v in theirs.items() if not math.isnan(v)} or theirs
        pick = max if m.higher_is_better else min
        best = pick(finite, key=finite.__getitem__)
        base = finite[best]
        g = grade(mine, base, higher_is_better=m.higher_is_better, margins=margins)
        if g == NOT_GRADED:
            text = (f"{m.label} could not be compared "
                    f"({ours} {mine:{m.fmt}}, {best} {base:{m.fmt}}).")
        else:
            verb = m.verbs[GRADE_ORDER.index(g)]
            text = (f"{m.subject} {verb} the best baseline ({best}): "
                    f"{m.label} {mine:{m.fmt}} vs {base:{m.fmt}}.")
        report[str(m.key)] = {
            "metric": str(m.key), "label": m.label, "higher_is_better": m.higher_is_better,
            "best_baseline": best, "baseline_value": base, "ours": mine,
            "delta": mine - base, "grade": g, "explanation": text,
        }
    headline = {k: r["grade"] for k, r in report.items()
                if any(m.key == k and m.headline for m in GRADED_METRICS)
                and r["grade"] != NOT_GRADED}
    if headline:
        worst = max(headline.values(), key=GRADE_ORDER.index)
        parts = ", ".join(f"{k} {g}" for k, g in headline.items())
        text = f"Overall {worst}: the weakest of the headline grades ({parts})."
    else:
        labels = ", ".join(m.label for m in GRADED_METRICS if m.headline)
        worst, text = NOT_GRADED, f"No headline metric ({labels}) could be graded."
    report["overall"] = {"grade": worst, "based_on": list(headline), "explanation": text}
    return report
