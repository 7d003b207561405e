"""Churn model selection: the rule, the rank blend, serving each candidate with its reasons,
and the time rule (the choice reads the validation cutoff, never the test cutoff)."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tests.test_training import synthetic_transactions
from training.candidates import (
    BG_MEAN,
    SELECTION,
    TOLERANCES,
    Target,
    blend_inputs,
    candidate,
    choose,
    churn_contributions,
    served,
)
from training.evaluate import Metric
from training.models import RFMLogistic
from training.models.blend import RankBlend
from training.registry.tracking import model_card
from training.train import TrainConfig, train

AUC, PR, BRIER = SELECTION[Target.CHURN]
END = dt.date(2024, 1, 1)


def churn(auc: float, pr: float, brier: float) -> dict[Metric, float]:
    return {AUC: auc, PR: pr, BRIER: brier}


# ------------------------------------------------------------------------------- the rule


def test_a_candidate_within_tolerance_everywhere_beats_one_that_wins_two_metrics_of_three():
    values = {"xgboost": churn(0.780, 0.700, 0.210),  # PR-AUC 0.02 below the best
              "rfm_logistic": churn(0.777, 0.720, 0.200)}
    choice = choose(values, SELECTION[Target.CHURN])
    assert choice.name == "rfm_logistic" and choice.eligible == ("rfm_logistic",)
    assert "only candidate within tolerance" in choice.reason


def test_the_rank_sum_decides_among_the_eligible_only():
    values = {"a": churn(0.800, 0.750, 0.300),  # ranks 1, 1, 4 = 6, but Brier far worse
              "b": churn(0.798, 0.746, 0.200),  # 2, 3, 1 = 6
              "c": churn(0.797, 0.748, 0.201),  # 3, 2, 2 = 7
              "d": churn(0.700, 0.600, 0.250)}  # 4, 4, 3 = 11
    choice = choose(values, SELECTION[Target.CHURN])
    assert choice.eligible == ("b", "c")
    assert choice.rank_sums == {"a": 6.0, "b": 6.0, "c": 7.0, "d": 11.0}
    assert choice.name == "b", "a comes first and ties b's rank sum, but is not eligible"


def test_without_an_eligible_candidate_the_lowest_rank_sum_of_all_wins():
    values = {"xgboost": churn(0.800, 0.700, 0.220),  # 1, 2, 3 = 6
              "rfm_logistic": churn(0.780, 0.720, 0.210),  # 3, 1, 2 = 6
              "blend": churn(0.790, 0.690, 0.200)}  # 2, 3, 1 = 6
    choice = choose(values, SELECTION[Target.CHURN])
    assert choice.eligible == ()
    assert choice.name == "xgboost", "equal rank sums go to the earlier entry of the table"
    assert "no candidate is within tolerance" in choice.reason


def test_tolerances_are_absolute_for_a_score_and_relative_for_an_error():
    assert TOLERANCES[AUC] == TOLERANCES[PR] == 0.005 and TOLERANCES[BRIER] == 0.01
    best = churn(0.800, 0.700, 0.2000)
    for near, eligible in ((churn(0.7951, 0.6951, 0.2019), True),
                           (churn(0.7949, 0.7000, 0.2000), False),
                           (churn(0.8000, 0.6949, 0.2000), False),
                           (churn(0.8000, 0.7000, 0.2021), False)):
        choice = choose({"best": best, "near": near}, SELECTION[Target.CHURN])
        assert ("near" in choice.eligible) is eligible, near


def test_a_nan_metric_ranks_last_and_is_never_within_tolerance():
    values = {"xgboost": churn(math.nan, 0.70, 0.20), "rfm_logistic": churn(0.70, 0.697, 0.20)}
    choice = choose(values, SELECTION[Target.CHURN])
    assert choice.name == "rfm_logistic" and choice.eligible == ("rfm_logistic",)
    only_nan = {"xgboost": churn(math.nan, 0.70, 0.201), "b": churn(math.nan, 0.697, 0.20)}
    assert choose(only_nan, SELECTION[Target.CHURN]).eligible == ("xgboost", "b")


def test_one_metric_means_the_best_value_ties_to_the_first():
    (mae,) = SELECTION[Target.PURCHASES]
    values = {"xgboost": {mae: 0.52}, "bg_nbd": {mae: 0.50}, "pareto_nbd": {mae: 0.50}}
    choice = choose(values, SELECTION[Target.PURCHASES])
    assert choice.name == "bg_nbd"
    assert choice.reason.startswith("bg_nbd: the best purchases.mae")


# ---------------------------------------------------------------------------- the blend


def noisy_views(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two scores that see the same risk through independent noise, and the labels."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * risk))).astype(int)
    views = np.column_stack([risk + rng.normal(size=n), np.exp(risk + rng.normal(size=n))])
    return views, y


def test_the_rank_blend_ranks_better_than_either_model_and_is_calibrated():
    x, y = noisy_views(4000, seed=1)
    held_x, held_y = noisy_views(4000, seed=2)
    blend = RankBlend().fit(x, y)
    p = blend.predict_proba(held_x)[:, 1]
    single = [roc_auc_score(held_y, held_x[:, j]) for j in range(2)]
    assert roc_auc_score(held_y, p) > max(single) + 0.01
    assert abs(p.mean() - held_y.mean()) < 0.02
    assert abs(blend.predict_proba(x)[:, 1].mean() - y.mean()) < 1e-3


def test_the_rank_blend_is_increasing_in_each_score_and_clamped_outside_its_range():
    x, y = noisy_views(1000, seed=3)
    blend = RankBlend(n_knots=50).fit(x, y)
    lo, hi = x.min(axis=0), x.max(axis=0)
    grid = np.linspace(lo[0], hi[0], 200)
    p = blend.predict_proba(np.column_stack([grid, np.full(200, np.median(x[:, 1]))]))[:, 1]
    assert np.all(np.diff(p) > 0), "never ties customers a model tells apart"
    ranks = blend.percentiles([[lo[0] - 5, hi[1] + 5], [lo[0], hi[1]]])
    np.testing.assert_allclose(ranks, [[0.0, 1.0], [0.0, 1.0]])


def test_the_rank_blend_survives_a_constant_score_and_refuses_one_class():
    x, y = noisy_views(500, seed=4)
    x[:, 1] = 3.0
    p = RankBlend().fit(x, y).predict_proba(x)[:, 1]
    assert roc_auc_score(y, p) == pytest.approx(roc_auc_score(y, x[:, 0]))
    with pytest.raises(ValueError, match="needs two"):
        RankBlend().fit(x, np.zeros(len(x)))


def test_rfm_contributions_add_up_to_the_log_odds():
    x, y = noisy_views(300, seed=5)
    x = np.column_stack([x, np.abs(x[:, 0]) * 10])
    model = RFMLogistic().fit(x, y)
    contrib = model.contributions(x)
    assert list(contrib.columns) == ["x0", "x1", "x2", "bias"]
    p = model.predict_proba(x)[:, 1]
    np.testing.assert_allclose(contrib.sum(axis=1), np.log(p / (1 - p)), rtol=1e-9, atol=1e-9)
    named = RFMLogistic().fit(pd.DataFrame(x, columns=["r", "f", "m"]), y)
    assert list(named.contributions(pd.DataFrame(x, columns=["r", "f", "m"])).columns) == [
        "r", "f", "m", "bias"]


# ------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    return synthetic_transactions(1200, seed=11)


@pytest.fixture(scope="module")
def result(transactions):
    return train(transactions, TrainConfig(n_estimators=40), data_end=END)


def test_every_churn_candidate_is_measured_on_validation_and_the_rule_picks_the_served_one(
        result):
    values = result.selection["churn"]
    assert list(values) == ["xgboost", "rfm_logistic", "blend", "xgboost_bg_mean", "bg_nbd"]
    assert all(set(v) == set(SELECTION[Target.CHURN]) for v in values.values())
    choice = result.choices["churn"]
    assert choice == choose(values, SELECTION[Target.CHURN])
    assert result.scorer.churn_choice == choice.name
    assert (result.scorer.blend is not None) == (choice.name == "blend")
    table = result.tables["selection"].loc["churn"]
    assert table["validation_as_of"].eq(result.cutoffs.validation.isoformat()).all()
    assert table.index[table["chosen"]].tolist() == [choice.name]


def test_the_choice_never_reads_the_test_window(transactions, result):
    """Remove every purchase from the test cutoff on: what selection saw is unchanged."""
    test_start = pd.Timestamp(result.cutoffs.test, tz=transactions["timestamp"].dt.tz)
    before = transactions[transactions["timestamp"] < test_start]
    again = train(before, TrainConfig(n_estimators=40), data_end=END)
    assert again.cutoffs.validation == result.cutoffs.validation
    assert again.selection == result.selection
    assert again.choices == result.choices


def test_the_forecast_mean_is_halfway_between_the_booster_and_bg_nbd(result):
    x = result.scorer.stacked(result.test[result.scorer.input_columns].head(200))
    booster, bg, mean = (candidate(Target.CHURN, name).predict(result.scorer, x)
                         for name in ("xgboost", "bg_nbd", BG_MEAN))
    np.testing.assert_array_equal(mean, 0.5 * (booster + bg))
    assert np.all((np.minimum(booster, bg) <= mean) & (mean <= np.maximum(booster, bg)))


def test_each_churn_candidate_serves_its_scores_with_reasons(result):
    rows = result.test[result.scorer.input_columns].head(60)
    x = result.scorer.stacked(rows)
    y = result.test["churned"].astype(int).to_numpy()
    blend = result.scorer.blend or RankBlend().fit(
        blend_inputs(result.scorer.churn, result.scorer.rfm,
                     result.scorer.stacked(result.test[result.scorer.input_columns])), y)
    for c in served(Target.CHURN):
        scorer = replace(result.scorer, churn_choice=c.name, blend=blend)
        scores = scorer.score(rows)
        np.testing.assert_allclose(scores["churn_probability"], c.predict(scorer, x))
        assert scores["churn_probability"].between(0, 1).all()
        assert (scores["churn_model"] == c.name).all()
        riskiest = scores.sort_values("churn_probability").iloc[-1]
        assert riskiest["reasons_raising"], c.name
        assert (scores["reasons_raising"] + scores["reasons_lowering"]).str.len().gt(0).all()


def test_rfm_logistic_reasons_are_its_own_coefficients_in_words(result):
    scorer = replace(result.scorer, churn_choice="rfm_logistic")
    rows = result.test[scorer.input_columns].head(40)
    x = scorer.stacked(rows)
    contrib = churn_contributions(scorer, "rfm_logistic", x)
    assert list(contrib.columns) == ["days_since_last", "orders_365d", "spend_365d", "bias"]
    p = candidate(Target.CHURN, "rfm_logistic").predict(scorer, x)
    np.testing.assert_allclose(contrib.sum(axis=1), np.log(p / (1 - p)), rtol=1e-6)
    words = re.compile(r"no purchase for \d+ days(, [\d.]+x the usual gap)?"
                       r"|\d+ orders in the last 365 days|[\d,]+ spent in the last 365 days")
    scores = scorer.score(rows)
    for column in ("reasons_raising", "reasons_lowering"):
        for text in scores[column]:
            assert all(words.fullmatch(t) for t in text.split("; ") if t), text
    # the booster's SHAP would name other features (e.g. the BTYD estimates) too
    booster = churn_contributions(scorer, "xgboost", x)
    assert len(booster.columns) > len(contrib.columns)


def test_the_model_card_says_which_churn_model_serves_and_why(result):
    card = model_card(result, {"source": "synthetic", "digest": "abc", "rows": 1})
    line = next(t for t in card.splitlines() if t.startswith("- churn model"))
    assert result.cutoffs.validation.isoformat() in line
    assert line.endswith(result.choices["churn"].reason)
    assert "churn.pr_auc" in line and "churn.brier" in line
    assert "| PR-AUC |" in card and "| Brier score |" in card
    assert "churn.pr_auc" in result.grades["overall"]["based_on"]
