"""Every estimator of the model library keeps scikit-learn's contract.

The (X, y) estimators run scikit-learn's own battery of checks. The others fit other inputs
(BTYD models: frequency, recency, T; uplift learners: X, treatment, y; recommenders: transaction
lines), so they run the generic checks that never call `fit`, and the rest of the contract is
checked here by hand: hyper-parameters are keyword-only and left alone by `fit`, learned state
ends in `_`, a clone is unfitted and learns the same, a pickle predicts the same, and every
prediction before `fit` raises NotFittedError.

The boosters' own promises follow: the hyper-parameters that used to be fixed inside `fit`,
arrays as well as DataFrames, and models pickled before a hyper-parameter existed.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (
    check_do_not_raise_errors_in_init_or_set_params,
    check_estimator_cloneable,
    check_estimator_repr,
    check_estimator_tags_renamed,
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
    check_valid_tag_types,
    parametrize_with_checks,
)

from training.models import (
    BetaGeoModel,
    BoostedModel,
    ChurnClassifier,
    ClassTransformation,
    GammaGammaModel,
    ItemRecommender,
    ParetoNBDModel,
    PopularityRecommender,
    PurchasesRegressor,
    RFMLogistic,
    SpendRegressor,
    TLearner,
    XLearner,
)
from training.models.boosted import TABLE_ROWS, CompiledForest

FAST = {"n_estimators": 10, "learning_rate": 0.3, "n_jobs": 1}
UPLIFT_FAST = {"n_estimators": 10, "max_depth": 2}


# ------------------------------------------------------- scikit-learn's checks, (X, y) estimators


@parametrize_with_checks([ChurnClassifier(**FAST), PurchasesRegressor(**FAST),
                          SpendRegressor(**FAST), RFMLogistic()])
def test_scikit_learn_checks(estimator: BaseEstimator, check: Callable[..., None],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    # scikit-learn runs its array-API check only when SciPy's array-API variable is set. For
    # estimators without array-API support it feeds NumPy arrays alone, which SciPy handles
    # the same way whether the variable is set or not.
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    check(estimator)


# ------------------------------------------------------- estimators that do not fit (X, y)


def _rfm() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    big_t = np.full(300, 39.0)
    published = BetaGeoModel.from_params({"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426})
    frequency, recency = published.sample(big_t, seed=0)
    return frequency, recency, big_t


def _spend() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frequency = rng.integers(1, 8, 300).astype(float)
    return frequency, rng.gamma(6.0 * frequency, 1 / (0.25 * rng.gamma(4.0, 1.0, 300)))


def _campaign() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x0": rng.integers(0, 2, 400), "x1": rng.normal(size=400)})
    arm = rng.choice(["control", "email"], 400)
    visit = rng.random(400) < 0.2 + 0.3 * (arm == "email") * X["x0"].to_numpy()
    return X, arm, visit.astype(float)


def _lines() -> pd.DataFrame:
    rows = [("a", "tea", 5), ("a", "cups", 5), ("b", "tea", 20), ("b", "cups", 8),
            ("c", "tea", 3), ("d", "jam", 40)]
    return pd.DataFrame({
        "customer_id": [r[0] for r in rows],
        "order_id": [f"{r[0]}{r[2]}" for r in rows],
        "timestamp": [pd.Timestamp("2024-02-01") - pd.Timedelta(days=r[2]) for r in rows],
        "product_id": [r[1] for r in rows],
    })


@dataclass(frozen=True)
class Case:
    """An estimator, the arguments of its `fit`, and its predict-like calls (name -> args);
    the first call is deterministic and compares two fits."""

    estimator: BaseEstimator
    fit_args: tuple[Any, ...]
    calls: dict[str, tuple[Any, ...]]

    @property
    def name(self) -> str:
        return type(self.estimator).__name__


RFM, SPEND, CAMPAIGN, LINES = _rfm(), _spend(), _campaign(), _lines()
BTYD_CALLS = {"p_alive": RFM, "expected_purchases": (30.0, *RFM), "log_likelihood": RFM,
              "expected_purchases_new": (30.0,), "sample": (RFM[2],)}
UPLIFT_CALLS = {"predict_uplift": CAMPAIGN[:1], "best_arm": CAMPAIGN[:1]}
RECOMMENDER_CALLS = {"recommend": (["a", "c", "new"],), "recommend_history": (["tea"],),
                     "items_bought": ("a",)}
CASES = [
    Case(BetaGeoModel(), RFM, BTYD_CALLS),
    Case(ParetoNBDModel(), RFM, BTYD_CALLS),
    Case(GammaGammaModel(), SPEND,
         {"expected_spend": SPEND, "spend_quantiles": SPEND, "log_likelihood": SPEND}),
    Case(TLearner(**UPLIFT_FAST), CAMPAIGN,
         {**UPLIFT_CALLS, "predict_outcomes": CAMPAIGN[:1]}),
    Case(XLearner(**UPLIFT_FAST), CAMPAIGN, UPLIFT_CALLS),
    Case(ClassTransformation(**UPLIFT_FAST), CAMPAIGN, UPLIFT_CALLS),
    Case(PopularityRecommender(), (LINES,), RECOMMENDER_CALLS),
    Case(ItemRecommender(min_support=1), (LINES,), RECOMMENDER_CALLS),
]
GENERIC_CHECKS = [
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_get_params_invariance,
    check_set_params,
    check_estimator_cloneable,
    check_estimator_repr,
    check_do_not_raise_errors_in_init_or_set_params,
    check_estimator_tags_renamed,
    check_valid_tag_types,
]
ALL_CLASSES = [ChurnClassifier, PurchasesRegressor, SpendRegressor, RFMLogistic, BoostedModel,
               *(type(case.estimator) for case in CASES)]


def _first(case: Case, model: BaseEstimator) -> Any:
    name, args = next(iter(case.calls.items()))
    return getattr(model, name)(*args)


def _assert_same(a: Any, b: Any) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("check", GENERIC_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_generic_scikit_learn_checks(case: Case, check: Callable[..., None]) -> None:
    check(case.name, clone(case.estimator))


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_hyper_parameters_are_keyword_only(cls: type[BaseEstimator]) -> None:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert params, cls
    assert all(p.kind is p.KEYWORD_ONLY for p in params), [p.name for p in params]
    with pytest.raises(TypeError, match="positional"):
        cls(params[0].default)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_prediction_before_fit_raises_not_fitted(case: Case) -> None:
    model = clone(case.estimator)
    for name, args in case.calls.items():
        with pytest.raises(NotFittedError, match="not fitted"):
            getattr(model, name)(*args)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fit_returns_self_leaves_hyper_parameters_and_learns_state_ending_in_underscore(
        case: Case) -> None:
    model = clone(case.estimator)
    before, params = set(vars(model)), joblib.hash(model.get_params())
    assert model.fit(*case.fit_args) is model
    assert joblib.hash(model.get_params()) == params
    learned = set(vars(model)) - before
    assert learned and all(a.endswith("_") for a in learned), sorted(learned)
    for name, args in case.calls.items():
        getattr(model, name)(*args)  # every call answers once fitted


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_clone_is_unfitted_and_learns_the_same_and_a_pickle_answers_the_same(
        case: Case) -> None:
    model = clone(case.estimator).fit(*case.fit_args)
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    assert not [a for a in vars(twin) if a.endswith("_")]
    _assert_same(_first(case, twin.fit(*case.fit_args)), _first(case, model))
    _assert_same(_first(case, pickle.loads(pickle.dumps(model))), _first(case, model))


# ------------------------------------------------------------------------------- the boosters


def _table(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Three numeric features (one with missing values) and a churn label tied to the first."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"recency": rng.exponential(60.0, n), "orders": rng.poisson(3.0, n),
                      "spend": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2.0, 50.0, n))})
    churned = (rng.random(n) < 1 / (1 + np.exp(-(X["recency"] - 60.0) / 20.0))).astype(int)
    return X, churned


BOOSTERS = [ChurnClassifier, PurchasesRegressor, SpendRegressor]


def _target(cls: type[BoostedModel], X: pd.DataFrame, churned: np.ndarray) -> np.ndarray:
    return churned if cls is ChurnClassifier else X["orders"].to_numpy() * (1 - churned)


def _predict(model: BaseEstimator, X: Any) -> np.ndarray:
    return model.predict_proba(X) if hasattr(model, "predict_proba") else model.predict(X)


def test_the_hyper_parameters_once_fixed_in_fit_keep_their_values() -> None:
    assert SpendRegressor().tweedie_variance_power == 1.3
    assert PurchasesRegressor().tweedie_variance_power == 1.5
    churn = ChurnClassifier()
    assert (churn.n_calibration_folds, churn.calibration_C) == (3, 1e6)


def test_tweedie_variance_power_reaches_xgboost_and_1_5_is_xgboosts_own_default() -> None:
    X, churned = _table()
    y = _target(PurchasesRegressor, X, churned)
    model = PurchasesRegressor(**FAST).fit(X, y)
    assert model.model_.get_params()["tweedie_variance_power"] == 1.5
    implicit = xgb.XGBRegressor(**{**model._xgb_params(), "tweedie_variance_power": None})
    np.testing.assert_array_equal(implicit.fit(X, y).predict(X), model.predict(X))
    other = PurchasesRegressor(**FAST, tweedie_variance_power=1.2).fit(X, y)
    assert other.model_.get_params()["tweedie_variance_power"] == 1.2
    assert not np.allclose(other.predict(X), model.predict(X))
    spend = SpendRegressor(**FAST).fit(X, y)
    assert spend.model_.get_params()["tweedie_variance_power"] == 1.3


def test_calibration_hyper_parameters_reach_the_calibration() -> None:
    X, churned = _table()
    model = ChurnClassifier(**FAST).fit(X, churned)
    assert model.calibrator_.C == 1e6
    assert ChurnClassifier(**FAST, calibration_C=0.01).fit(X, churned).calibrator_.C == 0.01
    two = ChurnClassifier(**FAST, n_calibration_folds=2).fit(X, churned)
    np.testing.assert_array_equal(two.model_.predict_proba(X), model.model_.predict_proba(X))
    assert two.calibrator_.coef_[0, 0] != model.calibrator_.coef_[0, 0]
    with pytest.raises(ValueError, match="n_calibration_folds: must be a whole number >= 2"):
        ChurnClassifier(n_calibration_folds=1).fit(X, churned)
    with pytest.raises(ValueError, match="groups: expected 300 values"):
        ChurnClassifier(**FAST).fit(X, churned, groups=np.arange(10))


@pytest.mark.parametrize("cls", BOOSTERS, ids=lambda c: c.__name__)
def test_arrays_and_frames_fit_the_same_model(cls: type[BoostedModel]) -> None:
    X, churned = _table()
    y = _target(cls, X, churned)
    on_frame = cls(**FAST).fit(X, y)
    on_array = cls(**FAST).fit(X.to_numpy(), y)
    assert list(on_frame.feature_names_in_) == ["recency", "orders", "spend"]
    assert not hasattr(on_array, "feature_names_in_") and on_array.n_features_in_ == 3
    np.testing.assert_array_equal(_predict(on_array, X.to_numpy()), _predict(on_frame, X))
    frame_reasons = on_frame.contributions(X.iloc[:5])
    array_reasons = on_array.contributions(X.iloc[:5].to_numpy())
    assert list(frame_reasons.columns) == ["recency", "orders", "spend", "bias"]
    assert list(array_reasons.columns) == ["x0", "x1", "x2", "bias"]
    assert frame_reasons.index.equals(X.index[:5])
    np.testing.assert_array_equal(array_reasons.to_numpy(), frame_reasons.to_numpy())
    with pytest.raises(ValueError, match="feature names should match"):
        on_frame.predict(X[["orders", "recency", "spend"]])


@pytest.mark.parametrize("cls", BOOSTERS, ids=lambda c: c.__name__)
def test_contributions_from_tables_are_xgboosts_treeshap(cls: type[BoostedModel]) -> None:
    """Past TABLE_ROWS rows contributions are read from per-tree tables (compiled sums):
    the same float32 numbers as XGBoost's own TreeSHAP, missing values included."""
    X, churned = _table(n=2 * TABLE_ROWS + 37, seed=3)
    model = cls(n_estimators=40, max_depth=4, learning_rate=0.3, n_jobs=1).fit(
        X, _target(cls, X, churned))
    ours = model.contributions(X).to_numpy()
    with xgb.config_context(nthread=1):
        want = model.model_.get_booster().predict(
            xgb.DMatrix(X.to_numpy(dtype="float32"), feature_names=list(X.columns)),
            pred_contribs=True)
    np.testing.assert_array_equal(ours, want)


@pytest.mark.parametrize("learning_rate", [0.3, 1.0])  # 1.0: margins far into the tails
@pytest.mark.parametrize("cls", BOOSTERS, ids=lambda c: c.__name__)
def test_big_batches_predict_what_small_ones_do(cls: type[BoostedModel],
                                                 learning_rate: float) -> None:
    """Once prepared, predictions past TABLE_ROWS rows come from the compiled forest:
    XGBoost's own float32 numbers (tree order sums, the objective's transform), so a row's
    prediction does not depend on its batch; missing values and values on the thresholds
    included."""
    X, churned = _table(n=4 * TABLE_ROWS + 11, seed=5)
    model = cls(n_estimators=60, max_depth=5, learning_rate=learning_rate, n_jobs=1).fit(
        X, _target(cls, X, churned))
    booster = model.model_.get_booster()
    forest = CompiledForest.build(booster)
    assert forest is not None and forest.depth == 5
    split = forest.threshold < np.inf
    for j, column in enumerate(X.columns):  # a third of the rows exactly on a threshold
        cuts = forest.threshold[split & (forest.feature == j)]
        X.loc[X.index[j::3], column] = np.resize(cuts, len(X.index[j::3])).astype("float64")
    X.loc[X.index[::5], "orders"] = np.nan
    with xgb.config_context(nthread=1):
        want = booster.inplace_predict(X.to_numpy(dtype="float32"))
    np.testing.assert_array_equal(forest.predict(X.to_numpy()), want)
    unprepared = _predict(model, X)  # XGBoost's: the forest is built by prepare_predictions
    assert "_forest" not in model.__dict__
    model.prepare_predictions()
    assert model.__dict__["_forest"][1] is not None  # the big batch below is the forest's
    small = np.concatenate([_predict(model, X.iloc[lo:lo + 100]) for lo in range(0, len(X), 100)])
    np.testing.assert_array_equal(_predict(model, X), small)
    np.testing.assert_array_equal(unprepared, small)


def test_forests_the_compiled_loop_cannot_read_are_xgboosts() -> None:
    """Deeper trees than CompiledForest.MAX_DEPTH: no forest, XGBoost predicts every batch."""
    X, churned = _table(n=2 * TABLE_ROWS, seed=6)
    deep = CompiledForest.MAX_DEPTH + 1
    model = PurchasesRegressor(n_estimators=5, max_depth=deep, min_child_weight=0.0,
                               learning_rate=0.5, n_jobs=1).fit(X, _target(PurchasesRegressor, X,
                                                                           churned))
    assert CompiledForest.build(model.model_.get_booster()) is None
    model.prepare_predictions()
    with xgb.config_context(nthread=1):
        want = model.model_.predict(X).astype("float64")
    np.testing.assert_array_equal(model.predict(X), want)


@pytest.mark.parametrize("cls", BOOSTERS, ids=lambda c: c.__name__)
def test_contributions_before_fit_raise_not_fitted(cls: type[BoostedModel]) -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        cls().contributions(np.zeros((2, 3)))


def test_churn_probabilities_are_two_columns_and_labels_follow_classes() -> None:
    X, churned = _table()
    model = ChurnClassifier(**FAST).fit(X, churned)
    proba = model.predict_proba(X)
    assert proba.shape == (300, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.classes_, [0, 1])
    np.testing.assert_array_equal(model.predict(X), (proba[:, 1] > 0.5).astype(int))
    named = ChurnClassifier(**FAST).fit(X, np.where(churned == 1, "lapsed", "active"))
    np.testing.assert_array_equal(named.classes_, ["active", "lapsed"])
    np.testing.assert_array_equal(named.predict_proba(X), proba)
    np.testing.assert_array_equal(named.predict(X), named.classes_[model.predict(X)])


def _pickled_before(model: BaseEstimator, *missing: str) -> BaseEstimator:
    """`model` as unpickling restores it from a state saved without the attributes `missing`."""
    state = dict(model.__getstate__())
    for name in missing:
        del state[name]
    restored = type(model).__new__(type(model))
    restored.__setstate__(state)
    return restored


@pytest.mark.parametrize(("cls", "new"), [
    (ChurnClassifier, ("n_calibration_folds", "calibration_C", "classes_")),
    (PurchasesRegressor, ("tweedie_variance_power",)),
    (SpendRegressor, ("tweedie_variance_power",)),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_a_booster_pickled_before_its_new_hyper_parameters_loads_with_their_defaults(
        cls: type[BoostedModel], new: tuple[str, ...]) -> None:
    X, churned = _table()
    model = cls(**FAST).fit(X, _target(cls, X, churned))
    old = _pickled_before(model, *new, "n_features_in_")
    assert old.get_params() == model.get_params()
    assert old.n_features_in_ == 3
    np.testing.assert_array_equal(_predict(old, X), _predict(model, X))
    if cls is ChurnClassifier:
        np.testing.assert_array_equal(old.classes_, [0, 1])
        np.testing.assert_array_equal(old.predict(X), model.predict(X))


def test_an_rfm_logistic_pickled_before_classes_were_recorded_still_predicts() -> None:
    X, churned = _table()
    model = RFMLogistic().fit(X.fillna(0.0).to_numpy(), churned)
    old = _pickled_before(model, "classes_", "n_features_in_")
    np.testing.assert_array_equal(old.classes_, [0, 1])
    assert old.n_features_in_ == 3
    np.testing.assert_array_equal(old.predict(X.fillna(0.0).to_numpy()),
                                  model.predict(X.fillna(0.0).to_numpy()))
