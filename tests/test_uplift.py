"""Uplift learners and metrics: hand-computed metrics, the estimator contract, one clear error
per bad input, recovery of the synthetic retailer's persuadable customers, the notebook."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from xgboost import XGBRegressor

from features import engine
from features.config import SourceConfig
from features.synthetic import SyntheticConfig, generate
from features.validate import validate
from tests.conftest import ROOT
from training.models.uplift import ClassTransformation, TLearner, UpliftInputError, XLearner
from training.uplift import arm_labels, fit_from_campaign_log, plots
from training.uplift import evaluate as ev

LEARNERS = (TLearner, XLearner, ClassTransformation)
FAST = {"n_estimators": 30, "max_depth": 2, "learning_rate": 0.2}

# A tiny test set in predicted-uplift order (no ties): 4 treated, 4 control.
U = np.array([0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
T = np.array([1, 1, 0, 1, 0, 0, 1, 0])
Y = np.array([1, 1, 0, 0, 1, 0, 0, 0])


# ------------------------------------------------------------------------- metrics by hand


def test_uplift_at_k_by_hand():
    # top 4 = rows 0-3: treated y 1, 1, 0 -> 2/3; control y 0 -> 0
    assert ev.uplift_at_k(Y, U, T, 0.5) == pytest.approx(2 / 3)
    # everyone: treated 2/4 - control 1/4
    assert ev.uplift_at_k(Y, U, T, 1.0) == pytest.approx(0.25)
    # top 2 are both treated: no control to compare with
    assert np.isnan(ev.uplift_at_k(Y, U, T, 0.25))
    # the order is by uplift, not by row: shuffling rows changes nothing
    p = np.random.default_rng(0).permutation(8)
    assert ev.uplift_at_k(Y[p], U[p], T[p], 0.5) == pytest.approx(2 / 3)
    table = ev.uplift_at_ks(Y, U, T, ks=(0.5, 1.0))
    assert table.loc[0.5, ["n", "n_treated", "n_control"]].tolist() == [4, 3, 1]


def test_qini_curve_and_coefficient_by_hand():
    x, q = ev.qini_curve(Y, U, T)
    # Y_T - Y_C * N_T / N_C after each customer; e.g. n=5: 2 - 1 * 3/2 = 0.5
    np.testing.assert_allclose(x, np.arange(9))
    np.testing.assert_allclose(q, [0, 1, 2, 2, 2, 0.5, 1, 2 / 3, 1])
    # perfect (treated responders first, control responder last; ties grouped)
    xp, qp = ev.perfect_qini_curve(Y, T)
    np.testing.assert_allclose(xp, [0, 2, 7, 8])
    np.testing.assert_allclose(qp, [0, 2, 2, 1])
    # areas (trapezoids): actual 29/3, perfect 13.5, random (0,0)-(8,1) 4
    assert ev.qini_auc_score(Y, U, T) == pytest.approx((29 / 3 - 4) / (13.5 - 4))


def test_uplift_curve_and_auuc_by_hand():
    x, v = ev.uplift_curve(Y, U, T)
    # (Y_T/N_T - Y_C/N_C) * n; n=4: (2/3 - 0) * 4 = 8/3; n=8: (1/2 - 1/4) * 8 = 2
    assert v[4] == pytest.approx(8 / 3)
    assert v[8] == pytest.approx(2.0)
    xp, vp = ev.perfect_uplift_curve(Y, T)
    np.testing.assert_allclose(vp, [0, 2, 5, 3.5, 2])
    actual = np.trapezoid(v, x) - 8.0  # random: the line to (8, 2), area 8
    assert ev.uplift_auc_score(Y, U, T) == pytest.approx(actual / (np.trapezoid(vp, xp) - 8.0))
    assert np.isnan(ev.uplift_auc_score(Y * 2.5, U, T))  # AUUC needs a 0/1 outcome


def test_ties_do_not_change_the_qini_coefficient():
    u = np.array([1, 1, 1, 0.5, 0.5, 0.5, 0, 0.0])
    p = np.array([2, 0, 1, 5, 3, 4, 7, 6])  # reorders rows within each tie only
    assert ev.qini_auc_score(Y, u, T) == pytest.approx(ev.qini_auc_score(Y[p], u[p], T[p]))
    x, _ = ev.qini_curve(Y, u, T)
    np.testing.assert_allclose(x, [0, 3, 6, 8])


def test_a_perfect_and_a_reversed_ranking():
    perfect = Y * T - Y * (1 - T)
    assert ev.qini_auc_score(Y, perfect, T) == pytest.approx(1.0)
    assert ev.qini_auc_score(Y, -perfect, T) < 0


def test_uplift_by_bins_adds_up():
    table = ev.uplift_by_bins(Y, U, T, bins=2)
    assert table[["n_treated", "n_control"]].to_numpy().sum() == 8
    assert table.loc[1, "uplift"] == pytest.approx(2 / 3 - 0)
    assert table.loc[2, "uplift"] == pytest.approx(0 - 1 / 3)


def test_policy_value_by_hand():
    y = np.array([1.0, 0, 1, 1])
    arm = np.array(["a", "control", "control", "a"])
    # shares 1/2 each: terms 1*2, 0, -1*2, 1*2 -> 2 = 4 * (mean_a 1 - mean_control 1/2)
    assert ev.policy_value(y, arm, "a")[0] == pytest.approx(2.0)
    # contacting only customer 0 and 1: 2 + 0
    assert ev.policy_value(y, arm, ["a", "a", "control", "control"])[0] == pytest.approx(2.0)
    curve = ev.budget_curve(y, arm, score=[4, 3, 2, 1], assigned="a", budgets=(0, 0.5, 0.75, 1))
    assert curve["incremental"].tolist() == pytest.approx([0, 2, 0, 2])
    assert curve["n_contacted"].tolist() == [0, 2, 3, 4]
    with pytest.raises(UpliftInputError, match="never occur"):
        ev.policy_value(y, arm, "b")


def test_compare_policies_references():
    rng = np.random.default_rng(1)
    n = 400
    arm = rng.choice(["control", "a"], n)
    y = (rng.random(n) < np.where(arm == "a", 0.3, 0.2)).astype(float)
    uplift = pd.DataFrame({"a": rng.random(n)})
    cp = ev.compare_policies(y, arm, uplift, {"risk": rng.random(n)}, "a")
    v = cp.set_index(["policy", "budget"])["incremental"]
    everyone = n * (y[arm == "a"].mean() - y[arm == "control"].mean())
    assert v["everyone", 0.3] == pytest.approx(everyone)
    assert v["uplift", 1.0] == pytest.approx(everyone)  # contacting all = everyone
    assert v["random", 0.3] == pytest.approx(0.3 * everyone)
    assert set(cp["policy"]) == {"uplift", "risk", "random", "everyone"}


def test_metric_inputs_are_checked():
    with pytest.raises(UpliftInputError, match="lengths differ"):
        ev.uplift_at_k(Y, U[:5], T)
    with pytest.raises(UpliftInputError, match="treatment: expected 0/1"):
        ev.qini_auc_score(Y, U, T * 2)
    with pytest.raises(UpliftInputError, match="k: 0 is not"):
        ev.uplift_at_k(Y, U, T, 0)


# ------------------------------------------------------------------- learners: the contract


def toy(n: int = 2000, seed: int = 0, arms: tuple[str, ...] = ("control", "email")):
    """x0 in {0, 1}; every treatment arm raises P(visit) by 0.3 where x0 = 1, not elsewhere."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x0": rng.integers(0, 2, n).astype(float), "x1": rng.normal(size=n)},
                     index=pd.RangeIndex(100, 100 + n))
    arm = rng.choice(arms, n)
    p = 0.2 + 0.3 * (arm != "control") * X["x0"].to_numpy()
    return X, arm, (rng.random(n) < p).astype(float)


@pytest.mark.parametrize("cls", LEARNERS)
def test_estimator_contract(cls):
    X, arm, y = toy()
    model = cls(**FAST)
    assert not [k for k in vars(model) if k.endswith("_")]
    with pytest.raises(NotFittedError):
        model.predict_uplift(X)
    params = model.get_params()
    assert params["control"] == "control" and params["max_depth"] == 2
    twin = clone(model)
    assert twin.get_params() == params
    assert model.fit(X, arm, y) is model
    assert model.treatment_arms_ == ("email",)
    assert model.outcome_kind_ == "binary"
    assert list(model.feature_names_in_) == ["x0", "x1"]
    u = model.predict_uplift(X)
    assert list(u.columns) == ["email"] and u.index.equals(X.index)
    # deterministic, and a clone learns the same
    np.testing.assert_allclose(twin.fit(X, arm, y).predict_uplift(X), u)
    # extra columns are ignored, columns are taken by name
    shuffled = X[["x1", "x0"]].assign(extra=1.0)
    np.testing.assert_allclose(model.predict_uplift(shuffled), u)
    # the effect lives where x0 = 1
    assert u["email"][X.x0 == 1].mean() > u["email"][X.x0 == 0].mean() + 0.15


@pytest.mark.parametrize("cls", LEARNERS)
def test_several_treatments_and_a_named_control(cls):
    X, arm, y = toy(3000, arms=("none", "mail", "sms"))
    model = cls(control="none", **FAST).fit(X, arm, y)
    u = model.predict_uplift(X)
    assert list(u.columns) == ["mail", "sms"]
    assert model.arm_counts_.keys() == {"none", "mail", "sms"}
    best = model.best_arm(X)
    assert set(best["arm"]) <= {"mail", "sms"}
    np.testing.assert_allclose(best["uplift"], u.max(axis=1))


@pytest.mark.parametrize("cls", LEARNERS)
def test_continuous_outcome_uses_regressors(cls):
    X, arm, y = toy(seed=3)
    spend = y * np.random.default_rng(3).gamma(2.0, 30.0, len(y))
    model = cls(**FAST).fit(X, arm, spend)
    assert model.outcome_kind_ == "continuous"
    assert any(isinstance(m, XGBRegressor) for m in model.models_.values())
    u = model.predict_uplift(X)["email"]
    assert u[X.x0 == 1].mean() > u[X.x0 == 0].mean()


def test_xlearner_propensity_options():
    X, arm, y = toy(seed=4)
    design = XLearner(**FAST).fit(X, arm, y).predict_uplift(X)
    known = XLearner(propensity={"control": 0.5, "email": 0.5}, **FAST).fit(X, arm, y)
    estimated = XLearner(propensity="estimate", **FAST).fit(X, arm, y)
    assert np.corrcoef(design["email"], known.predict_uplift(X)["email"])[0, 1] > 0.99
    assert np.corrcoef(design["email"], estimated.predict_uplift(X)["email"])[0, 1] > 0.95
    with pytest.raises(UpliftInputError, match="propensity"):
        XLearner(propensity="guess").fit(X, arm, y)
    with pytest.raises(UpliftInputError, match="no probability for arms"):
        XLearner(propensity={"email": 0.5}).fit(X, arm, y)


def test_an_arm_without_any_response_still_fits():
    X, arm, y = toy(seed=5)
    y = np.where(arm == "control", 0.0, y)
    for cls in LEARNERS:
        u = cls(**FAST).fit(X, arm, y).predict_uplift(X)
        assert np.isfinite(u.to_numpy()).all()


# --------------------------------------------------------------------- bad input, one error


def _bad_inputs():
    X, arm, y = toy(50)
    return [
        ("mismatched treatment", (X, arm[:-1], y), {}, "treatment: length 49 does not match"),
        ("mismatched outcome", (X, arm, y[:-2]), {}, "y: length 48 does not match"),
        ("unknown control", (X, arm, y), {"control": "holdout"},
         "control arm 'holdout' not found"),
        ("single arm", (X, np.full(50, "control"), y), {}, "only one arm"),
        ("non-numeric feature", (X.assign(tier="gold"), arm, y), {}, "not numeric"),
        ("missing outcome", (X, arm, np.r_[np.nan, y[1:]]), {}, "NaN or infinite"),
        ("missing arm", (X, np.r_[[None], arm[1:]], y), {}, "missing arm names"),
        ("binary outcome not 0/1", (X, arm, y * 3), {"outcome": "binary"}, "needs 0/1"),
        ("unknown outcome kind", (X, arm, y), {"outcome": "count"}, "not one of"),
        ("infinite feature", (X.assign(x1=np.inf), arm, y), {}, "infinite values"),
        ("empty", (X.iloc[:0], arm[:0], y[:0]), {}, "no rows"),
    ]


@pytest.mark.parametrize(("case", "args", "params", "message"), _bad_inputs(),
                         ids=[c[0] for c in _bad_inputs()])
def test_bad_input_gives_one_clear_error(case, args, params, message):
    with pytest.raises(UpliftInputError, match=message) as info:
        TLearner(**FAST, **params).fit(*args)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_predict_needs_the_fitted_columns():
    X, arm, y = toy(200)
    model = TLearner(**FAST).fit(X, arm, y)
    with pytest.raises(UpliftInputError, match=r"missing feature columns \['x1'\]"):
        model.predict_uplift(X[["x0"]])
    with pytest.raises(UpliftInputError, match="1 columns, the learner was fitted on 2"):
        model.predict_uplift(X[["x0"]].to_numpy())


# ------------------------------------------------------------------ from a campaign log


def test_arm_labels_name_treated_rows_by_offer():
    log = pd.DataFrame({"arm": ["treatment", "control", "Treatment", "treatment"],
                        "offer_id": ["mens-email", "none", "womens-email", ""]})
    assert arm_labels(log).tolist() == ["mens-email", "control", "womens-email", "treatment"]
    with pytest.raises(UpliftInputError, match="treatment/control"):
        arm_labels(log.assign(arm=["treatment", "holdout", "control", "control"]))


def test_fit_from_campaign_log_joins_and_counts():
    X, arm, y = toy(600, arms=("control", "offer-a", "offer-b"))
    ids = [f"c{i}" for i in range(600)]
    log = pd.DataFrame({"customer_id": ids, "campaign_id": "k1",
                        "offer_id": np.where(arm == "control", "", arm),
                        "arm": np.where(arm == "control", "control", "treatment"),
                        "visit": y})
    log.loc[5, "visit"] = np.nan
    features = X.reset_index(drop=True).assign(customer_id=ids, churned=True,
                                               rfm_segment="champions").iloc[10:]
    fit = fit_from_campaign_log(log, features, "visit", learner=XLearner(**FAST))
    assert fit.arms == ("offer-a", "offer-b")
    assert fit.features == ["x0", "x1"]  # labels and text columns are not features
    assert fit.n_without_features == 10 and fit.n_without_outcome == 0
    assert fit.n_rows == 590 and sum(fit.arm_counts.values()) == 590
    log.loc[50, "visit"] = np.nan
    assert fit_from_campaign_log(log, features, "visit").n_without_outcome == 1
    with pytest.raises(UpliftInputError, match="missing column 'revenue'"):
        fit_from_campaign_log(log, features, "revenue")
    with pytest.raises(UpliftInputError, match="more than one row for customer"):
        fit_from_campaign_log(log, pd.concat([features, features.iloc[:1]]), "visit")


# ------------------------------------------------------- the synthetic retailer's campaign


@pytest.fixture(scope="module")
def synthetic_campaign():
    """4,000 customers (seed 0): the campaign log and each customer's features as of the
    campaign date (only purchases before it), split in half by customer."""
    data = generate(SyntheticConfig(n_customers=4000, seed=0))
    cfg = SourceConfig(name="synthetic", format="parquet", path="unused.parquet",
                       columns={c: c for c in ("customer_id", "order_id", "timestamp",
                                               "product_id", "quantity", "price")},
                       derive={"amount": "quantity * price"})
    tx = validate(data.transactions, cfg).accepted
    con = engine.connect()
    tables = engine.prepare(con, tx, data_end=data.config.end)
    features = con.to_pandas(engine.feature_table(tables, data.config.campaign_date, None))
    log = data.campaign_log
    ids = log["customer_id"].astype(str).unique()
    test_ids = set(np.random.default_rng(0).choice(ids, len(ids) // 2, replace=False))
    return data, features, log, test_ids


# Held-out AUC of the uplift score vs "truly persuadable" at seed 0 (seeds 0-4 in brackets),
# measured when this test was written: converted T 0.805 (0.81-0.93), X 0.828 (0.83-0.92);
# visit T 0.780 (0.69-0.80), X 0.763 (0.76-0.85).
@pytest.mark.parametrize(("cls", "outcome", "threshold"), [
    (TLearner, "converted", 0.72), (XLearner, "converted", 0.72),
    (TLearner, "visit", 0.68), (XLearner, "visit", 0.68),
])
def test_learned_uplift_ranks_the_persuadable_first(synthetic_campaign, cls, outcome, threshold):
    data, features, log, test_ids = synthetic_campaign
    train_log = log[~log["customer_id"].astype(str).isin(test_ids)]
    fit = fit_from_campaign_log(train_log, features, outcome, learner=cls())
    assert fit.n_without_features == 0  # every randomised customer had bought before
    held_out = features[features["customer_id"].astype(str).isin(test_ids)]
    u = fit.learner.predict_uplift(held_out[fit.features])[fit.arms[0]]
    truth = data.truth.set_index("customer_id").loc[held_out["customer_id"].astype(str)]
    assert truth["persuadable"].mean() > 0.1
    assert roc_auc_score(truth["persuadable"], u) >= threshold


# --------------------------------------------------------------------------------- plots


def test_plots_render(tmp_path):
    X, arm, y = toy(800, arms=("control", "a", "b"))
    u = TLearner(**FAST).fit(X, arm, y).predict_uplift(X)
    rows = np.isin(arm, ["control", "a"])
    t = (arm[rows] == "a").astype(float)
    figs = [
        plots.qini_plot(y[rows], t, {"T": u["a"][rows], "random": np.zeros(rows.sum())}),
        plots.uplift_by_decile_plot({"T": ev.uplift_by_bins(y[rows], u["a"][rows], t)}),
        plots.policy_budget_plot(ev.compare_policies(y, arm, u, {"x1": X["x1"]}, "a"), "visits"),
    ]
    for i, fig in enumerate(figs):
        fig.savefig(tmp_path / f"{i}.png")
        assert (tmp_path / f"{i}.png").stat().st_size > 5000


# ------------------------------------------------------------------------------ notebook


@pytest.mark.datasets
def test_uplift_notebook_executes(datasets, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "uplift_hillstrom.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4
