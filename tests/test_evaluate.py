"""training.evaluate on hand-computed tiny examples, and every training.plots figure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from training import evaluate as ev
from training import plots as pl

# ------------------------------------------------------------------------------------ churn


def test_churn_metrics_perfect_ranking_and_brier_by_hand():
    m = ev.churn_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert m["roc_auc"] == 1.0
    assert m["pr_auc"] == 1.0
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    # n = 4 < 10 bins: one customer per bin, so ECE = mean |p - y|
    assert m["ece"] == pytest.approx((0.1 + 0.2 + 0.2 + 0.1) / 4)
    assert m["base_rate"] == 0.5
    assert m["n"] == 4


def test_churn_metrics_reversed_ranking():
    m = ev.churn_metrics([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])
    assert m["roc_auc"] == 0.0
    assert m["top_decile_lift"] == 0.0  # top 1 customer (p=0.9) did not churn


def test_ece_zero_when_each_bin_is_calibrated():
    # 10 groups of 10 customers, p = k/10 and exactly k churners in group k
    p = np.repeat(np.arange(10) / 10, 10)
    y = np.concatenate([[1] * k + [0] * (10 - k) for k in range(10)])
    assert ev.churn_metrics(y, p)["ece"] == pytest.approx(0.0, abs=1e-12)


def test_ece_by_hand_with_two_customers_per_bin():
    # 20 customers → 10 bins of 2 (sorted by p). Only bin 10 is off: p = 0.9, 0.9; y = 1, 0.
    p = np.repeat(np.arange(10) / 10, 2)
    y = np.zeros(20)
    y[2:4] = [1, 0]  # bin 2: p 0.1, rate 0.5 → |0.1 - 0.5| = 0.4
    y[18:] = [1, 0]  # bin 10: p 0.9, rate 0.5 → 0.4 ; bin 1 p 0 rate 0 → 0; others p>0 rate 0
    expected = (0.4 + 0.4 + sum(k / 10 for k in range(2, 9))) * 2 / 20
    assert ev.churn_metrics(y, p)["ece"] == pytest.approx(expected)


def test_top_decile_lift_by_hand():
    # n = 20 → top 2 by p; both churned; 5 churners overall → lift (2/2) / (5/20) = 4
    p = np.linspace(0, 1, 20)
    y = np.zeros(20)
    y[[18, 19, 3, 5, 7]] = 1
    assert ev.churn_metrics(y, p)["top_decile_lift"] == pytest.approx(4.0)


def test_ece_bins_do_not_merge_over_and_under_prediction():
    # 10 bins of 2: bin 1 (p = 0) has both churners (error 1), bin k (p = (k-1)/10) none.
    # With 5 bins the first bin would mix p = 0 and 0.1 and give a different ECE (0.53).
    p = np.repeat(np.arange(10) / 10, 2)
    y = np.r_[1, 1, np.zeros(18)]
    assert ev.churn_metrics(y, p)["ece"] == pytest.approx((1 + 4.5) * 2 / 20)


def test_top_decile_is_ceil_of_a_tenth():
    # n = 11 → top 2 (ceil 1.1): one churner of the two, 2 churners overall → 0.5 / (2/11)
    p = np.arange(11.0)
    y = np.zeros(11)
    y[[9, 0]] = 1
    assert ev.churn_metrics(y, p)["top_decile_lift"] == pytest.approx(0.5 / (2 / 11))
    # n = 15 → top 2 of spend: 10 + 0 of 20
    spend = np.r_[10, 0, 10, np.zeros(12)]
    assert ev.value_metrics(spend, -np.arange(15.0))["top_decile_share"] == pytest.approx(0.5)


def test_top_decile_lift_shares_ties_at_the_cut():
    # n = 10 → top 1; the two highest scores tie, one churned → expected rate 0.5; base 0.2
    p = [0.9, 0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.0, 0.0]
    y = [0, 1, 0, 0, 0, 0, 1, 0, 0, 0]
    assert ev.churn_metrics(y, p)["top_decile_lift"] == pytest.approx(2.5)
    assert ev.churn_metrics(y[::-1], p[::-1])["top_decile_lift"] == pytest.approx(2.5)


def test_single_class_gives_nan_aucs_not_an_error():
    m = ev.churn_metrics([0, 0, 0], [0.1, 0.5, 0.2])
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    assert math.isnan(m["top_decile_lift"])
    assert m["brier"] == pytest.approx((0.01 + 0.25 + 0.04) / 3)
    m = ev.churn_metrics([1, 1], [0.4, 0.6])
    assert math.isnan(m["roc_auc"]) and m["top_decile_lift"] == pytest.approx(1.0)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="0/1"):
        ev.churn_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="length"):
        ev.churn_metrics([0, 1], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        ev.purchase_metrics([1, np.nan], [1, 1])


def test_reliability_table_by_hand():
    t = ev.reliability_table([0, 0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], bins=3)
    assert list(t.index) == [1, 2, 3]
    assert list(t.n) == [2, 2, 2]
    np.testing.assert_allclose(t.mean_predicted, [0.15, 0.35, 0.55])
    np.testing.assert_allclose(t.observed_rate, [0.0, 0.5, 1.0])


def test_gain_curve_by_hand_with_ties():
    g = ev.gain_curve([1, 0, 1, 0], [0.9, 0.9, 0.2, 0.1])
    np.testing.assert_allclose(g.share_contacted, [0, 0.5, 0.75, 1])
    np.testing.assert_allclose(g.share_captured, [0, 0.5, 1, 1])
    assert math.isnan(g.lift[0])
    np.testing.assert_allclose(g.lift[1:], [1.0, 4 / 3, 1.0])
    assert list(g.threshold[1:]) == [0.9, 0.2, 0.1]


# -------------------------------------------------------------------------------- purchases


def test_purchase_metrics_by_hand():
    m = ev.purchase_metrics([1, 2, 3, 0], [2, 2, 3, 1])
    assert m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    assert m["aggregate_error"] == pytest.approx((8 - 6) / 6)
    assert (m["mean_actual"], m["mean_expected"], m["n"]) == (1.5, 2.0, 4)
    assert math.isnan(ev.purchase_metrics([0, 0], [1, 1])["aggregate_error"])


def test_actual_vs_expected_by_frequency_by_hand():
    t = ev.actual_vs_expected_by_frequency(
        [0, 0, 1, 2, 3, 5], [0, 1, 1, 2, 4, 3], [0.2, 0.4, 1, 1, 3, 5], cap=3
    )
    assert list(t.index) == ["0", "1", "2", "3+"]
    assert list(t.n) == [2, 1, 1, 2]
    np.testing.assert_allclose(t.mean_actual, [0.5, 1, 2, 3.5])
    np.testing.assert_allclose(t.mean_expected, [0.3, 1, 1, 4])


def test_actual_vs_expected_keeps_empty_rows_and_checks_frequency():
    t = ev.actual_vs_expected_by_frequency([0, 1], [0, 1], [0, 1], cap=3)
    assert list(t.index) == ["0", "1", "2", "3+"]
    assert list(t.n) == [1, 1, 0, 0]
    assert t.loc["2"].isna()[["mean_actual", "mean_expected"]].all()
    with pytest.raises(ValueError, match="whole"):
        ev.actual_vs_expected_by_frequency([0.5], [0], [0])


def test_tracking_table_by_hand():
    idx = pd.date_range("2024-01-01", periods=3, freq="W-MON")
    t = ev.tracking_table(pd.Series([3, 1], idx[[0, 2]]), pd.Series([2.0, 1.5, 1.0], idx))
    assert list(t.columns) == ["actual", "expected", "cumulative_actual", "cumulative_expected"]
    assert t.index.name == "period"
    np.testing.assert_allclose(t.actual, [3, 0, 1])  # missing period = no purchases
    np.testing.assert_allclose(t.cumulative_actual, [3, 3, 4])
    np.testing.assert_allclose(t.cumulative_expected, [2, 3.5, 4.5])


# ------------------------------------------------------------------------------------ value


def test_normalized_gini_perfect_reversed_and_by_hand():
    a = [0, 0, 1, 3]
    assert ev.normalized_gini(a, a) == pytest.approx(1.0)
    assert ev.normalized_gini(a, [3, 2, 1, 0]) == pytest.approx(-1.0)
    # order by prediction: 1, 3, 0, 0 → Lorenz 0.25, 1, 1, 1 → G = 3.25/4 - 5/8 = 0.1875;
    # perfect: 3, 1, 0, 0 → 0.75, 1, 1, 1 → G = 0.3125; normalized 0.6
    assert ev.normalized_gini(a, [1, 2, 4, 3]) == pytest.approx(0.6)
    assert ev.normalized_gini(a, [5, 5, 5, 5]) == pytest.approx(0.0)  # ties averaged
    assert math.isnan(ev.normalized_gini([2, 2, 2], [1, 2, 3]))


def test_normalized_gini_equals_2auc_minus_1_on_binary_outcomes():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 20, 300) + y * 3  # many ties
    auc = ev.churn_metrics(y, s)["roc_auc"]
    assert ev.normalized_gini(y, s) == pytest.approx(2 * auc - 1)


def test_value_metrics_by_hand():
    actual = [10, 5, 5, 0, 0, 0, 0, 0, 0, 0]
    pred = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    m = ev.value_metrics(actual, pred)
    assert m["top_decile_share"] == pytest.approx(10 / 20)  # top 1 of 10 holds 10 of 20
    assert m["mae"] == pytest.approx(np.mean(np.abs(np.subtract(pred, actual))))
    assert m["normalized_gini"] == pytest.approx(1.0)  # order is perfect, up to actual ties
    assert "interval_coverage" not in m
    m = ev.value_metrics([1, 5, 10, 0], [1, 7, 11, 1], lower=[0, 6, 10, 1], upper=[2, 8, 12, 2])
    assert m["interval_coverage"] == 0.5  # 1 in, 5 below, 10 on the edge (in), 0 below
    # ranks (2, 3, 4, 1) vs (1.5, 3, 4, 1.5): Pearson of ranks = 4.5 / sqrt(5 * 4.5)
    assert m["spearman"] == pytest.approx(math.sqrt(0.9))
    with pytest.raises(ValueError, match="both"):
        ev.value_metrics([1, 2], [1, 2], lower=[0, 0])


def test_decile_table_by_hand():
    x = np.arange(8, 0, -1.0)  # 8 .. 1
    t = ev.decile_table(x, x, n=4)
    assert list(t.index) == [1, 2, 3, 4] and list(t.n) == [2, 2, 2, 2]
    np.testing.assert_allclose(t.mean_predicted, [7.5, 5.5, 3.5, 1.5])
    np.testing.assert_allclose(t.share_of_actual, [15 / 36, 11 / 36, 7 / 36, 3 / 36])
    np.testing.assert_allclose(t.lift, np.array([7.5, 5.5, 3.5, 1.5]) / 4.5)
    t = ev.decile_table([0, 0, 0, 4, 1], [1, 2, 3, 5, 4], n=2)  # 3 then 2 customers
    assert list(t.n) == [3, 2]
    np.testing.assert_allclose(t.mean_actual, [5 / 3, 0])


# ---------------------------------------------------------------------------- recency rules


def test_recency_rule_and_score():
    np.testing.assert_array_equal(ev.recency_rule([10, 100, 91.25], 91.25), [0, 1, 0])
    np.testing.assert_allclose(ev.recency_score([5, 1, 5, 10]), [0.5, 0, 0.5, 1])
    assert ev.recency_candidates() == [365, 182.5, 91.25, 45.625, 22.8125, 11.40625]
    assert ev.recency_candidates(56, 7) == [56, 28, 14, 7]


def test_best_recency_rule_picks_the_separating_x():
    days = [10, 30, 60, 80, 100, 120, 150]
    y = [0, 0, 0, 0, 1, 1, 1]
    # J: 365 → 0, 182.5 → 0, 91.25 → 1, 45.625 → 1 - 2/4, ...
    x, score = ev.best_recency_rule(days, y)
    assert x == 91.25
    assert ev.churn_metrics(y, score)["roc_auc"] == 1.0
    np.testing.assert_allclose(score, ev.recency_score(days))


def _f1(days, y, x):
    flag, y = np.asarray(days) > x, np.asarray(y) == 1
    tp = (flag & y).sum()
    return 2 * tp / (flag.sum() + y.sum())


def test_best_recency_rule_uses_youden_not_f1_and_breaks_ties_to_larger_x():
    # 15 churners of 17. X = 91.25 and 45.625 both flag exactly the ten at 100 days
    # (J = 10/15); X = 11.4 flags everyone (J = 0) but has the best F1 at this base rate.
    days = [100] * 10 + [20] * 5 + [30] * 2
    y = [1] * 15 + [0] * 2
    f1 = {x: _f1(days, y, x) for x in ev.recency_candidates()}
    assert max(f1, key=f1.__getitem__) == 11.40625
    assert ev.best_recency_rule(days, y)[0] == 91.25
    # every X from 365 down to 11.4 separates {400} from {1, 5}: ties go to the larger X
    assert ev.best_recency_rule([1, 5, 400], [0, 0, 1])[0] == 365
    with pytest.raises(ValueError, match="one class"):
        ev.best_recency_rule([1, 2], [1, 1])


# ------------------------------------------------------------------------------------ grades


@pytest.mark.parametrize(
    ("ours", "base", "expected"),
    [(0.80, 0.78, "A"), (0.79, 0.77, "A"), (0.79, 0.78, "B"), (0.78, 0.78, "B"),
     (0.7799, 0.78, "C")],
)
def test_grade_higher_is_better_is_absolute(ours, base, expected):
    assert ev.grade(ours, base, higher_is_better=True) == expected


@pytest.mark.parametrize(
    ("ours", "base", "expected"),
    [(0.98, 1.0, "A"), (9.8, 10.0, "A"), (0.099, 0.1, "B"), (0.99, 1.0, "B"), (1.0, 1.0, "B"),
     (1.001, 1.0, "C")],
)
def test_grade_lower_is_better_is_relative(ours, base, expected):
    assert ev.grade(ours, base, higher_is_better=False) == expected


def test_grade_custom_margins_and_edge_cases():
    kw = {"higher_is_better": True, "margins": (0.05, 0.01)}
    assert ev.grade(0.83, 0.78, **kw) == "A"
    assert ev.grade(0.82, 0.78, **kw) == "B"
    assert ev.grade(0.77, 0.78, **kw) == "B"  # within the 0.01 tolerance
    assert ev.grade(0.765, 0.78, **kw) == "C"
    assert ev.grade(1.05, 1.0, higher_is_better=False, margins=(0.02, 0.05)) == "B"
    assert ev.grade(float("nan"), 0.7, higher_is_better=True) == "n/a"
    assert ev.grade(0.0, 0.0, higher_is_better=False) == "B"
    assert ev.grade(0.1, 0.0, higher_is_better=False) == "C"


def test_grade_report():
    metrics = {
        "ours": {"churn.roc_auc": 0.81, "churn.brier": 0.15, "purchases.mae": 0.60,
                 "value.normalized_gini": 0.50},
        "recency rule, 90 days": {"roc_auc": 0.77, "brier": 0.20},
        "bg/nbd": {"churn.roc_auc": 0.75, "churn.brier": 0.16, "purchases.mae": 0.55,
                   "value.normalized_gini": 0.49},
    }
    r = ev.grade_report(metrics, "ours", ["recency rule, 90 days", "bg/nbd"])
    assert set(r) == {"churn.roc_auc", "churn.brier", "purchases.mae", "value.normalized_gini",
                      "overall"}
    auc = r["churn.roc_auc"]
    assert auc["best_baseline"] == "recency rule, 90 days" and auc["grade"] == "A"
    assert auc["delta"] == pytest.approx(0.04)
    assert auc["explanation"] == ("Churn model ranks customers better than the best baseline "
                                  "(recency rule, 90 days): ROC-AUC 0.810 vs 0.770.")
    assert r["churn.brier"]["best_baseline"] == "bg/nbd"  # lower wins
    assert r["churn.brier"]["grade"] == "A"  # 0.15 vs 0.16: 6% better
    assert r["purchases.mae"]["grade"] == "C"
    assert "less accurate" in r["purchases.mae"]["explanation"]
    assert r["value.normalized_gini"]["grade"] == "B"
    assert r["overall"]["grade"] == "C"
    assert r["overall"]["based_on"] == ["churn.roc_auc", "churn.brier", "purchases.mae",
                                        "value.normalized_gini"]


@pytest.mark.parametrize("key, worse", [("churn.pr_auc", 0.60), ("churn.brier", 0.21)])
def test_overall_grade_reads_pr_auc_and_brier_beside_auc_mae_and_gini(key, worse):
    """Ranking as well as the baseline is not enough: churners at the top of the list (PR-AUC)
    and probabilities a person reads (Brier) count toward the overall grade too."""
    ours = {"churn.roc_auc": 0.80, "churn.pr_auc": 0.70, "churn.brier": 0.20,
            "purchases.mae": 0.50, "value.normalized_gini": 0.60}
    base = {**ours, "churn.roc_auc": 0.79}
    assert ev.grade_report({"ours": ours, "b": base}, "ours", ["b"])["overall"]["grade"] == "B"
    r = ev.grade_report({"ours": {**ours, key: worse}, "b": base}, "ours", ["b"])
    assert r[key]["grade"] == "C"
    assert r["overall"]["grade"] == "C" and f"{key} C" in r["overall"]["explanation"]
    assert r["overall"]["based_on"] == ["churn.roc_auc", "churn.pr_auc", "churn.brier",
                                        "purchases.mae", "value.normalized_gini"]


def test_grade_report_overall_ignores_missing_and_nan():
    metrics = {"ours": {"roc_auc": float("nan"), "normalized_gini": 0.6},
               "rule": {"roc_auc": 0.7, "normalized_gini": 0.5}}
    r = ev.grade_report(metrics, "ours", ["rule"])
    assert r["churn.roc_auc"]["grade"] == "n/a"
    assert r["overall"]["grade"] == "A" and r["overall"]["based_on"] == ["value.normalized_gini"]
    with pytest.raises(ValueError, match="ambiguous"):
        ev.grade_report({"ours": {"mae": 1.0}, "b": {"mae": 2.0}}, "ours", ["b"])
    with pytest.raises(ValueError, match="baselines"):
        ev.grade_report(metrics, "ours", ["missing"])


# ------------------------------------------------------------------------------------- plots


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n = 400
    risk = rng.random(n)
    y = (rng.random(n) < 0.2 + 0.6 * risk).astype(int)
    return {
        "y": y,
        "good": np.clip(0.2 + 0.6 * risk + rng.normal(0, 0.05, n), 0, 1),
        "weak": rng.random(n),
        "freq": rng.poisson(2, n),
        "spend": rng.gamma(0.7, 100, n),
    }


def _saves(fig: Figure, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lift_gain_plot(data, tmp_path):
    fig = pl.lift_gain_plot(data["y"], {"good": data["good"], "weak": data["weak"]})[0].figure
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    gain, lift = fig.axes
    assert len(gain.lines) == 4  # 2 models + random + perfect
    assert len(lift.lines) == 3  # 2 models + reference at 1
    assert gain.get_title() == "Cumulative gain" and lift.get_title() == "Lift"
    assert [t.get_text() for t in gain.get_legend().get_texts()][0].startswith("good")
    _saves(fig, tmp_path, "gain")


def test_reliability_plot(data, tmp_path):
    fig = pl.reliability_plot(data["y"], {"good": data["good"], "weak": data["weak"]}).figure
    (ax,) = fig.axes
    assert len(ax.lines) == 3
    assert len(ax.lines[1].get_xdata()) == 10
    assert "Calibration" in ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    _saves(fig, tmp_path, "reliability")


def test_tracking_plot(tmp_path):
    idx = pd.date_range("2011-09-12", periods=8, freq="W-MON")
    actual = pd.Series(np.arange(8.0), idx)
    tables = {m: ev.tracking_table(actual, pd.Series(np.full(8, k), idx))
              for m, k in {"bg/nbd": 3.0, "xgboost": 3.5}.items()}
    fig = pl.tracking_plot(tables)[0].figure
    inc, cum = fig.axes
    assert len(inc.lines) == 3 and len(cum.lines) == 3
    assert "Cumulative" in cum.get_title()
    np.testing.assert_allclose(cum.lines[0].get_ydata(), np.cumsum(np.arange(8.0)))
    _saves(fig, tmp_path, "tracking")


def test_actual_vs_expected_plot(data, tmp_path):
    f = data["freq"]
    tables = {"bg/nbd": ev.actual_vs_expected_by_frequency(f, f * 0.5, f * 0.45),
              "pareto/nbd": ev.actual_vs_expected_by_frequency(f, f * 0.5, f * 0.55)}
    fig = pl.actual_vs_expected_plot(tables).figure
    (ax,) = fig.axes
    assert len(ax.lines) == 3
    assert len(ax.get_xticklabels()) == 8 and ax.get_xticklabels()[-1].get_text().startswith("7+")
    _saves(fig, tmp_path, "ave")


def test_decile_chart(data, tmp_path):
    s = data["spend"]
    tables = {"good": ev.decile_table(s, s + 10), "weak": ev.decile_table(s, data["weak"])}
    fig = pl.decile_chart(tables).figure
    (ax,) = fig.axes
    assert len(ax.patches) == 20 and len(ax.lines) == 2
    assert "decile" in ax.get_title()
    _saves(fig, tmp_path, "decile")


def test_interval_plot(tmp_path):
    actual = np.array([1.0, 5, 10, 0])
    fig = pl.interval_plot(actual, [0, 6, 10, 1], [1, 7, 11, 1.5], [2, 8, 12, 2]).figure
    (ax,) = fig.axes
    assert len(ax.lines) == 1 and len(ax.collections) == 3  # band + inside + outside
    assert "50.0%" in ax.get_title()
    assert ax.get_yscale() == "linear"
    _saves(fig, tmp_path, "interval")
    heavy = np.r_[np.ones(90), np.full(10, 1000.0)]
    fig = pl.interval_plot(heavy, heavy * 0.5, heavy, heavy * 2, max_points=50).figure
    assert fig.axes[0].get_yscale() == "symlog"
    assert len(fig.axes[0].lines[0].get_xdata()) == 50


def test_metrics_bar(tmp_path):
    metrics = {"ours": {"roc_auc": 0.8}, "rule": {"roc_auc": 0.7},
               "broken": {"roc_auc": float("nan")}, "other": {"brier": 0.1}}
    fig = pl.metrics_bar(metrics, "roc_auc").figure
    (ax,) = fig.axes
    assert len(ax.patches) == 2
    assert [p.get_height() for p in ax.patches] == [0.8, 0.7]
    assert "higher is better" in ax.get_title()
    assert "lower is better" in pl.metrics_bar(metrics, "churn.brier").figure.axes[0].get_title()
    _saves(fig, tmp_path, "bar")
