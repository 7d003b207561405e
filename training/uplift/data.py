"""From a canonical campaign log to training rows: arm names, features, the fitted learner.

A canonical campaign log (DESIGN.md) has `customer_id, campaign_id, offer_id, sent_at, arm,
visit, converted, revenue`, with `arm` either "treatment" or "control". A learner needs one arm
name per row, so treated rows are named by their `offer_id` (the offer sent; "treatment" when
the log has none) and control rows by the control arm's name: one log with several offers
trains one learner with one uplift column per offer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone
from xgboost import XGBClassifier

from features.contract import PROFIT_COLUMNS
from training.models.uplift.base import CONTROL, UpliftInputError, UpliftLearner
from training.models.uplift.tlearner import TLearner

OUTCOMES: tuple[str, ...] = ("visit", "converted", "revenue")
# Feature-table columns that are labels (observed after as_of) or bookkeeping, never features.
NOT_FEATURES: frozenset[str] = frozenset({
    "customer_id", "as_of", "in_population", "horizon_days", "label_complete", "churned",
    "n_purchases", "spend", "days_to_next", "next_observed", *PROFIT_COLUMNS,
})
# Hillstrom's customer attributes as carried by configs/sources/hillstrom.yaml (`keep`).
HILLSTROM_NUMERIC: tuple[str, ...] = ("recency", "history", "mens", "womens", "newbie")
HILLSTROM_CATEGORICAL: tuple[str, ...] = ("zip_code", "channel")


@dataclass
class CampaignFit:
    """A learner fitted on a campaign log joined to feature rows, and what went into it.

    `arms` are the treatment arms covered (offer ids), `features` the columns used;
    `n_without_features` log rows had no feature row for their customer and
    `n_without_outcome` no value of the outcome: both were left out and are counted here.
    """

    learner: UpliftLearner
    arms: tuple[str, ...]
    control: str
    outcome: str
    features: list[str]
    n_rows: int
    arm_counts: dict[str, int] = field(default_factory=dict)
    n_without_features: int = 0
    n_without_outcome: int = 0


def arm_labels(log: pd.DataFrame, control: str = CONTROL) -> pd.Series:
    """One arm name per log row: the offer id for treated rows, `control` for control rows."""
    missing = [c for c in ("arm",) if c not in log.columns]
    if missing:
        raise UpliftInputError(f"campaign log: missing column {missing[0]!r}")
    arm = log["arm"].astype("string").str.strip().str.lower()
    bad = ~arm.isin(["treatment", "control"]).fillna(False)
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise UpliftInputError(f"campaign log: column 'arm' must be treatment/control, got "
                               f"{log['arm'].iloc[i]!r} at row {i}")
    offer = (log["offer_id"].astype("string").str.strip() if "offer_id" in log.columns
             else pd.Series(pd.NA, index=log.index, dtype="string"))
    offer = offer.mask(offer == "").fillna("treatment")
    labels = offer.where(arm == "treatment", control).astype(str)
    clash = (arm == "treatment") & (labels == control)
    if clash.any():
        raise UpliftInputError(f"campaign log: offer id {control!r} on treated rows is the "
                               "control arm's name; pass another control=")
    return pd.Series(labels.to_numpy(dtype=object), index=log.index, name="arm")


def log_features(log: pd.DataFrame, numeric: Sequence[str] = HILLSTROM_NUMERIC,
                 categorical: Sequence[str] = HILLSTROM_CATEGORICAL) -> pd.DataFrame:
    """Customer attributes carried in the log itself (a source config's `keep` columns) as
    numeric features: `numeric` parsed as numbers, `categorical` one-hot (`name_value`)."""
    missing = [c for c in (*numeric, *categorical) if c not in log.columns]
    if missing:
        raise UpliftInputError(f"campaign log: missing feature columns {missing}")
    out = pd.DataFrame(index=log.index)
    for c in numeric:
        values = pd.to_numeric(log[c].astype("string").str.strip(), errors="coerce")
        if values.isna().any():
            i = int(np.argmax(values.isna().to_numpy()))
            raise UpliftInputError(f"campaign log: column {c!r} is not a number at row {i}: "
                                   f"{log[c].iloc[i]!r}")
        out[c] = values.astype(np.float64)
    for c in categorical:
        dummies = pd.get_dummies(log[c].astype("string").str.strip(), prefix=c, dtype=np.float64)
        out[dummies.columns] = dummies
    return out


def fit_from_campaign_log(
    log: pd.DataFrame,
    features: pd.DataFrame,
    outcome: str,
    *,
    learner: UpliftLearner | None = None,
    control: str = CONTROL,
    campaign_id: str | None = None,
    feature_columns: Sequence[str] | None = None,
) -> CampaignFit:
    """Join a campaign log to one feature row per customer and fit an uplift learner.

    `features`: `customer_id` plus feature columns (by default every numeric or boolean column
    except label and bookkeeping columns, `NOT_FEATURES`): the customers' features as of the
    campaign date, so nothing the campaign caused leaks in. `outcome`: a numeric log column
    (visit, converted, revenue). `learner` (default a `TLearner`) is cloned, its `control`
    set to `control`. `campaign_id` keeps one campaign of a longer log.
    """
    for name, frame, cols in (("campaign log", log, ("customer_id", "arm", outcome)),
                              ("features", features, ("customer_id",))):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise UpliftInputError(f"{name}: missing column {missing[0]!r}")
    if campaign_id is not None:
        log = log[log["campaign_id"].astype(str) == campaign_id]
        if log.empty:
            raise UpliftInputError(f"campaign log: no rows of campaign {campaign_id!r}")
    ids = features["customer_id"].astype(str)
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].iloc[0]
        raise UpliftInputError(f"features: more than one row for customer {dup!r}")
    if feature_columns is None:
        feature_columns = [c for c in features.columns if c not in NOT_FEATURES and (
            pd.api.types.is_numeric_dtype(features[c]) or pd.api.types.is_bool_dtype(features[c]))]
    cols = list(feature_columns)
    if not cols:
        raise UpliftInputError("features: no numeric feature columns")
    arms = arm_labels(log, control)
    y = pd.to_numeric(log[outcome], errors="coerce")
    table = features.set_index(ids)[cols]
    key = log["customer_id"].astype(str)
    has_row = key.isin(table.index).to_numpy()
    has_y = y.notna().to_numpy()
    keep = has_row & has_y
    if not keep.any():
        raise UpliftInputError(f"campaign log: no row has both a feature row and a value of "
                               f"{outcome!r}")
    X = table.loc[key[keep]].reset_index(drop=True)
    model = clone(learner) if learner is not None else TLearner()
    model.set_params(control=control)
    model.fit(X, arms[keep].to_numpy(), y[keep].to_numpy(dtype=np.float64))
    return CampaignFit(learner=model, arms=model.treatment_arms_, control=control,
                       outcome=outcome, features=cols, n_rows=int(keep.sum()),
                       arm_counts=dict(model.arm_counts_),
                       n_without_features=int((~has_row).sum()),
                       n_without_outcome=int((has_row & ~has_y).sum()))


def no_response_risk(X_fit: pd.DataFrame, arm_fit: np.ndarray, y_fit: np.ndarray,
                     X_score: pd.DataFrame, control: str = CONTROL,
                     random_state: int = 0) -> np.ndarray:
    """A churn-style risk score: P(no response) learned on the control arm only (customers
    left alone), the ranking a retention team would use without uplift. For baselines."""
    rows = np.asarray(arm_fit) == control
    model = XGBClassifier(n_estimators=200, max_depth=3, learning_rate=0.05,
                          tree_method="hist", n_jobs=1, random_state=random_state, verbosity=0)
    model.fit(X_fit[rows], (np.asarray(y_fit)[rows] <= 0).astype(int))
    return model.predict_proba(X_score[X_fit.columns])[:, 1]
