"""Training job on the synthetic retailer: time rules, selection, scores, reasons."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.config import SourceConfig
from features.errors import DataError
from features.synthetic import SyntheticConfig, generate
from features.validate import validate
from training.candidates import SELECTION, Target, choose
from training.components import fit_components
from training.data import build_frames, plan_cutoffs
from training.reasons import explain
from training.train import CHURN_BASELINES, OURS, TrainConfig, train

H = 90


def synthetic_transactions(n: int, seed: int) -> pd.DataFrame:
    data = generate(SyntheticConfig(n_customers=n, seed=seed))
    cfg = SourceConfig(name="synthetic", format="parquet", path="unused.parquet",
                       columns={c: c for c in ("customer_id", "order_id", "timestamp",
                                               "product_id", "quantity", "price")},
                       derive={"amount": "quantity * price"})
    return validate(data.transactions, cfg).accepted


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    return synthetic_transactions(3000, seed=5)


@pytest.fixture(scope="module")
def result(transactions):
    return train(transactions, TrainConfig(horizon_days=H, n_estimators=120),
                 data_end=dt.date(2024, 1, 1))


def test_retraining_on_the_same_data_gives_the_same_model(transactions, result):
    again = train(transactions, TrainConfig(horizon_days=H, n_estimators=120),
                  data_end=dt.date(2024, 1, 1))
    assert again.component_params == result.component_params
    first, second = (r.scorer.score(result.test, reasons=False) for r in (result, again))
    pd.testing.assert_frame_equal(first, second, check_exact=True)


def test_btyd_components_are_fitted_at_the_as_of_being_scored(transactions, result):
    """The stacked features were learned from components fitted at each cutoff: the evaluation
    refits them at the test cutoff and the registered model at the data end, not one horizon
    or two stale."""
    end = dt.date(2024, 1, 1)
    frames = build_frames(transactions, [result.cutoffs.test, end], H, data_end=end)
    at_test, at_end = (fit_components(frames[d]).params() for d in (result.cutoffs.test, end))
    assert result.test_components.params() == at_test
    assert result.scorer.components.params() == at_end
    assert at_test != at_end
    evaluated = result.scorer.with_components(result.test_components).score(
        result.test, reasons=False)
    np.testing.assert_array_equal(result.test["score_churn_probability"],
                                  evaluated["churn_probability"])
    np.testing.assert_array_equal(result.test["score_p_alive"], evaluated["p_alive"])
    stale = result.scorer.score(result.test, reasons=False)
    assert not np.array_equal(stale["p_alive"], evaluated["p_alive"])


def test_a_snapshot_after_training_gets_components_fitted_at_its_own_as_of(transactions, result):
    end = dt.date(2024, 1, 1)
    later = dt.date(2023, 12, 1)
    frames = build_frames(transactions, [later, end], H, data_end=end)
    scorer = result.scorer
    assert scorer.for_population(frames[end]) is scorer, "the data end it was registered at"
    refreshed = scorer.for_population(frames[later])
    assert refreshed.components.params() == fit_components(frames[later]).params()
    assert refreshed.churn is scorer.churn
    assert scorer.for_population(frames[later].head(100)) is scorer, "too few to refit"
    mixed = pd.concat([frames[later], frames[end]], ignore_index=True)
    assert scorer.for_population(mixed) is scorer


def test_cutoffs_keep_every_label_window_before_the_next_cutoff():
    c = plan_cutoffs(dt.date(2021, 1, 1), dt.date(2024, 1, 1), H)
    h = dt.timedelta(days=H)
    assert c.test + h <= dt.date(2024, 1, 1)
    assert c.validation + h <= c.test
    assert all(d + h <= c.validation for d in c.train)
    assert c.test - dt.timedelta(days=364) in c.train, "same season a year earlier"


def test_cutoffs_refuse_too_little_history():
    with pytest.raises(DataError, match="not enough history"):
        plan_cutoffs(dt.date(2023, 6, 1), dt.date(2024, 1, 1), H)


def test_short_history_packs_training_cutoffs_but_keeps_the_test_out_of_time():
    c = plan_cutoffs(dt.date(1997, 1, 1), dt.date(1998, 7, 1), 181,
                     test_as_of=dt.date(1998, 1, 1))
    assert c.validation == dt.date(1997, 7, 4)
    assert c.train and all(d + dt.timedelta(days=181) <= c.test for d in c.final_train)
    assert any("overlap" in n for n in c.notes)


def test_selection_picks_the_best_component_on_validation(result):
    for target, values in result.selection.items():
        chosen = getattr(result.scorer, f"{target}_choice")
        assert result.choices[target].name == chosen, target
        assert chosen == choose(values, SELECTION[Target(target)]).name, target
        if len(SELECTION[Target(target)]) == 1:
            (metric,) = SELECTION[Target(target)]
            best = (max if metric.higher_is_better else min)(v[metric] for v in values.values())
            assert values[chosen][metric] == best, target


def test_every_spend_component_can_be_selected_and_served(result):
    assert set(result.selection["spend"]) == {"xgboost", "bg_gg", "pnbd_gg"}
    x = result.scorer.stacked(result.test)
    for choice, count in (("bg_gg", "bg_expected"), ("pnbd_gg", "pnbd_expected")):
        served = replace(result.scorer, spend_choice=choice).expected_spend(x)
        np.testing.assert_allclose(served, x[count] * x["gg_spend"])


def test_every_baseline_is_evaluated_in_the_same_run(result):
    for name in (OURS, *CHURN_BASELINES):
        assert 0.5 < result.metrics[name]["churn.roc_auc"] <= 1.0, name
    for name in ("bg_nbd", "pareto_nbd"):
        assert result.metrics[name]["purchases.mae"] > 0
    assert {"churn.roc_auc", "purchases.mae", "value.normalized_gini"} <= set(
        k for k in result.grades if k != "overall")
    assert result.grades["overall"]["grade"] in {"A", "B", "C"}


def test_model_beats_the_recency_rule_on_synthetic_data(result):
    ours = result.metrics[OURS]["churn.roc_auc"]
    assert ours > result.metrics["recency_rule"]["churn.roc_auc"]


def test_scores_are_consistent(result):
    test = result.test
    p = test["score_churn_probability"]
    assert p.between(0, 1).all()
    assert (test["score_spend_p10"] <= test["score_spend_p50"] + 1e-9).all()
    assert (test["score_spend_p50"] <= test["score_spend_p90"] + 1e-9).all()
    assert (test["score_clv_p10"] <= test["score_clv_p90"] + 1e-9).all()
    np.testing.assert_allclose(test["score_value_at_risk"], p * test["score_clv"])
    cover = result.metrics[OURS]["value.interval_coverage"]
    assert 0.6 < cover < 0.95


def test_scorer_gives_reasons_in_words(result):
    rows = result.test.head(20)
    scores = result.scorer.score(rows[result.scorer.input_columns])
    risky = scores.sort_values("churn_probability").iloc[-1]
    assert risky["reasons_raising"]
    assert set(scores.columns) >= {"churn_probability", "clv_p50", "value_at_risk"}


def test_reasons_read_like_an_agent_would_say_them():
    contrib = pd.DataFrame({"days_since_last": [1.2], "frequency": [-0.4], "overdue_ratio": [0.8],
                            "bias": [0.0]})
    features = pd.DataFrame({"days_since_last": [94], "overdue_ratio": [3.13], "frequency": [6]})
    why = explain(contrib, features)[0]
    assert why["raising"] == ["no purchase for 94 days, 3.1x the usual gap"]
    assert why["lowering"] == ["6 repeat purchase days so far"]


def test_the_alive_estimate_is_worded_for_the_side_it_pushes():
    contrib = pd.DataFrame({"bg_p_alive": [0.3, -0.5], "bg_p_zero": [0.4, 0.1],
                            "frequency": [-0.2, 0.2], "bias": [0.0, 0.0]})
    features = pd.DataFrame({"bg_p_alive": [0.92, 0.97], "bg_p_zero": [0.35, 0.2],
                             "frequency": [2, 1]})
    risky, safe = explain(contrib, features)
    assert risky["raising"] == ["35% chance of no purchase by the usual pattern"]
    assert safe["lowering"] == ["estimated 97% chance still active"]
    assert explain(contrib[["bg_p_alive", "bias"]], features[["bg_p_alive"]])[0]["raising"] == [
        "estimated 92% chance still active"]  # no P(no purchase) column to word it with


def test_the_job_times_each_of_its_stages(result):
    assert list(result.stage_seconds) == ["features", "btyd", "fit_select", "refit", "evaluate"]
    assert all(seconds > 0 for seconds in result.stage_seconds.values())
