"""`retention train uplift`: a campaign log (any source with arms and outcomes, or the log that
`/feedback` writes) joined to the customers' features as of the campaign, evaluated on a held-out
half, refitted on everything and registered as `uplift` for `/recommend`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from features.engine import partitions, read_features
from features.errors import DataError
from training.models.uplift.base import CONTROL, UpliftLearner
from training.models.uplift.xlearner import XLearner
from training.uplift.data import CampaignFit, arm_labels, fit_from_campaign_log
from training.uplift.evaluate import uplift_metrics


@dataclass
class UpliftRun:
    fit: CampaignFit  # refitted on every row: what is served
    metrics: dict[str, float]  # per arm, on the held-out half of a fit on the other half
    as_of: dt.date
    test: pd.DataFrame  # held-out rows: arm, outcome, one uplift column per arm


def read_campaign_log(where: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """A canonical campaign log from a source config (YAML/TOML), validated with its quarantine
    counts by reason, or from a campaign-log database URL (what `/feedback` writes:
    sqlite:///... or postgresql://...; nothing to quarantine there)."""
    if "://" in where:
        from features.campaign_log import CampaignLog, campaign_frame

        return campaign_frame(CampaignLog(where).frame()), {}
    from features.config import load_source_config
    from features.validate import load

    cfg = load_source_config(Path(where))
    if cfg.table != "campaign_log":
        raise DataError(f"{where}: a {cfg.table} table, expected campaign_log")
    result = load(cfg)
    return result.accepted, dict(result.counts)


def features_at(features_dir: Path, log: pd.DataFrame) -> tuple[dt.date, pd.DataFrame]:
    """The feature partition of the latest as_of on or before the campaign's first send, so
    nothing the campaign caused leaks into its features."""
    sent = pd.to_datetime(log["sent_at"], errors="coerce").min()
    if pd.isna(sent):
        raise DataError("campaign log: no readable sent_at")
    before = [d for d in partitions(Path(features_dir)) if d <= sent.date()]
    if not before:
        raise DataError(f"{features_dir}: no feature partition on or before the campaign's first "
                        f"send ({sent.date()}); build one with `retention features build`")
    return before[-1], read_features(Path(features_dir), before[-1])


def train_uplift(log: pd.DataFrame, features: pd.DataFrame, as_of: dt.date, outcome: str, *,
                 learner: UpliftLearner | None = None, campaign_id: str | None = None,
                 random_state: int = 42) -> UpliftRun:
    """Fit on half the log, evaluate uplift@k / Qini / AUUC on the other half, then refit all."""
    learner = learner or XLearner(n_estimators=150, max_depth=2, learning_rate=0.05)
    if campaign_id is not None:
        log = log[log["campaign_id"].astype(str) == campaign_id]
    log = log[log["customer_id"].astype(str).isin(features["customer_id"].astype(str))]
    if len(log) < 50:
        raise DataError(f"campaign log: only {len(log)} rows with features; need at least 50")
    arms = arm_labels(log, CONTROL)
    train_idx, test_idx = train_test_split(np.arange(len(log)), test_size=0.5,
                                           random_state=random_state, stratify=arms)
    half = fit_from_campaign_log(log.iloc[train_idx], features, outcome, learner=learner)
    test_log = log.iloc[test_idx]
    x_test = features.set_index(features["customer_id"].astype(str)).loc[
        test_log["customer_id"].astype(str), half.features]
    uplift = half.learner.predict_uplift(x_test.reset_index(drop=True))
    test = pd.DataFrame({"arm": arms.iloc[test_idx].to_numpy(),
                         "y": pd.to_numeric(test_log[outcome], errors="coerce").to_numpy()})
    test = pd.concat([test, uplift.add_prefix("uplift_")], axis=1)
    metrics: dict[str, float] = {}
    for arm in half.arms:
        rows = test[test["arm"].isin([arm, CONTROL])]
        treated = (rows["arm"] == arm).to_numpy(dtype=int)
        m = uplift_metrics(rows["y"], rows[f"uplift_{arm}"], treated)
        metrics.update({f"{arm}.{k}": v for k, v in m.items()})
    full = fit_from_campaign_log(log, features, outcome, learner=learner)
    return UpliftRun(fit=full, metrics=metrics, as_of=as_of, test=test)
