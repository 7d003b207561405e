"""The training job: cutoffs → features and labels → components → models → out-of-time evaluation.

Stage 1 fits every model on the training cutoffs and chooses, per target, among our XGBoost
model and its components on the validation cutoff (`training.candidates.choose`; churn weighs
ROC-AUC, PR-AUC and Brier together, so the served forecast is not worse there than its best
component beyond a small tolerance). Stage 2 refits on training + validation cutoffs; that is the
registered model, and the test cutoff, whose label window nobody has seen, grades it against the
baselines in the same run.

The BTYD components, like the stacked features the models learned from, are fitted at the as_of
being scored: at each cutoff in training, at the test cutoff in the evaluation, and at the data's
end in the registered model (the as_of the service scores).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from sklearn.model_selection import GroupKFold

from training import evaluate as ev
from training.candidates import (
    BLEND,
    LABELS,
    OURS,
    SELECTION,
    Choice,
    Target,
    baseline_names,
    baselines,
    blend_inputs,
    choose,
    rfm_matrix,
    served,
)
from training.components import COMPONENT_FEATURES, Components, component_features, fit_components
from training.data import FEATURES, Cutoffs, build_frames, plan_cutoffs
from training.models import (
    ChurnClassifier,
    PurchasesRegressor,
    RankBlend,
    RFMLogistic,
    SpendRegressor,
    clv,
)
from training.scorer import CustomerScorer

CHURN_BASELINES = baseline_names(Target.CHURN)
VALUE_BASELINES = baseline_names(Target.SPEND)


class TrainConfig(BaseModel):
    """Settings of one training run (a YAML file or CLI options)."""

    model_config = ConfigDict(extra="forbid")

    horizon_days: int = 90
    test_as_of: dt.date | None = None
    n_train_cutoffs: int = 3
    # Days between training cutoffs (default: the horizon). Monthly cutoffs (30, with 9 of them)
    # gave Online Retail a better churn AUC and MAE but a worse Christmas aggregate and interval
    # coverage (bench/RESULTS.md notes the run); the default keeps the seasonal balance.
    train_step_days: int | None = None
    lookback_days: int = 365
    clv_horizon_days: int = 365
    discount_rate: float = 0.10
    interval_target: float = 0.80
    n_estimators: int = 600
    max_depth: int = 3
    learning_rate: float = 0.02
    seed: int = 0


class Stages:
    """Wall time of each stage of a job: `stages(key, text)` ends the running stage, starts
    `key` and reports `text` through `step` (a progress line)."""

    def __init__(self, step: Callable[[str], None] = lambda _: None) -> None:
        self.step = step
        self.seconds: dict[str, float] = {}
        self._running: tuple[str, float] | None = None

    def __call__(self, key: str, text: str) -> None:
        self.close()
        self._running = (key, time.perf_counter())
        self.step(text)

    def close(self) -> dict[str, float]:
        """End the running stage; every stage's seconds so far."""
        if self._running is not None:
            key, start = self._running
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
            self._running = None
        return self.seconds


@dataclass
class TrainResult:
    """The registered scorer and everything the run reports about it."""

    scorer: CustomerScorer
    cutoffs: Cutoffs
    metrics: dict[str, dict[str, float]]
    grades: ev.GradeReport
    selection: dict[str, dict[str, dict[str, float]]]  # target -> candidate -> metric -> value
    test: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    churn_scores: dict[str, np.ndarray] = field(default_factory=dict)
    component_params: dict[str, float] = field(default_factory=dict)
    test_components: Components | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    choices: dict[str, Choice] = field(default_factory=dict)  # per target, with the reason


def _xgb(cfg: TrainConfig) -> dict[str, object]:
    return dict(n_estimators=cfg.n_estimators, max_depth=cfg.max_depth,
                learning_rate=cfg.learning_rate, random_state=cfg.seed)


@dataclass
class _Models:
    """The models fitted on one set of cutoffs (what a candidate predicts with)."""

    churn: ChurnClassifier
    purchases: PurchasesRegressor
    spend: SpendRegressor
    rfm: RFMLogistic
    blend: RankBlend | None = None


# Folds of the out-of-fold scores the rank blend is calibrated on (by customer); each fold's
# booster calibrates itself on this many folds too.
BLEND_FOLDS = 2


def _fit_models(frame: pd.DataFrame, cfg: TrainConfig, columns: list[str], *,
                blend: bool) -> _Models:
    x = frame[columns]
    churned = frame[LABELS[Target.CHURN]].astype(int)
    groups = frame["customer_id"].astype(str)
    models = _Models(
        churn=ChurnClassifier(**_xgb(cfg)).fit(x, churned, groups=groups),
        purchases=PurchasesRegressor(**_xgb(cfg)).fit(x, frame[LABELS[Target.PURCHASES]]),
        spend=SpendRegressor(**_xgb(cfg)).fit(x, frame[LABELS[Target.SPEND]]),
        rfm=RFMLogistic().fit(rfm_matrix(frame), churned),
    )
    if blend:
        models.blend = _fit_blend(frame, x, churned, groups.to_numpy(), cfg, models)
    return models


def _fit_blend(frame: pd.DataFrame, x: pd.DataFrame, churned: pd.Series, groups: np.ndarray,
               cfg: TrainConfig, models: _Models) -> RankBlend:
    """The rank blend of the churn booster and the RFM logistic regression, calibrated on
    their out-of-fold scores (folds by customer), as the booster calibrates itself: it learns
    how the pair ranks customers neither model learned from. With a fold of one class (tiny
    data) it calibrates on the models' in-sample scores instead."""
    y = churned.to_numpy()
    scores = np.full((len(frame), 2), np.nan)
    n_splits = min(BLEND_FOLDS, len(np.unique(groups)))
    splits = list(GroupKFold(n_splits=n_splits).split(x, y, groups)) if n_splits >= 2 else []
    if splits and all(len(np.unique(y[train])) == 2 for train, _ in splits):
        for train, held in splits:
            churn = ChurnClassifier(**_xgb(cfg), n_calibration_folds=BLEND_FOLDS).fit(
                x.iloc[train], y[train], groups=groups[train])
            rfm = RFMLogistic().fit(rfm_matrix(frame.iloc[train]), y[train])
            scores[held] = blend_inputs(churn, rfm, frame.iloc[held])
    else:
        scores = blend_inputs(models.churn, models.rfm, frame)
    return RankBlend().fit(scores, y)


def train(
    transactions: pd.DataFrame,
    cfg: TrainConfig,
    *,
    data_end: dt.date | None = None,
    step: Callable[[str], None] = lambda _: None,
) -> TrainResult:
    """Run the whole job on canonical (validated) transactions."""
    ts = transactions["timestamp"]
    data_start = ts.min().date()
    data_end = data_end or (ts.max().normalize() + pd.Timedelta(days=1)).date()
    cutoffs = plan_cutoffs(data_start, data_end, cfg.horizon_days, test_as_of=cfg.test_as_of,
                           n_train=cfg.n_train_cutoffs, step_days=cfg.train_step_days)
    stages = Stages(step)
    stages("features", f"features for {len(cutoffs.train) + 2} cutoffs and the data end")
    frames = build_frames(transactions,
                          [*cutoffs.train, cutoffs.validation, cutoffs.test, data_end],
                          cfg.horizon_days, data_end=data_end, lookback_days=cfg.lookback_days)
    latest = frames.pop(data_end)
    stages("btyd", "BTYD components per cutoff")
    comps: dict[dt.date, Components] = {d: fit_components(f) for d, f in frames.items()}
    served_comps = fit_components(latest)
    stacked = {d: component_features(f, comps[d], cfg.horizon_days) for d, f in frames.items()}
    columns = [*FEATURES, *COMPONENT_FEATURES]

    stages("fit_select", "stage 1: fit on training cutoffs, choose on validation")
    train_df = pd.concat([stacked[d] for d in cutoffs.train], ignore_index=True)
    stage1 = _fit_models(train_df, cfg, columns, blend=True)
    val = stacked[cutoffs.validation]
    selection = _select(val, stage1)
    chosen = {target: choose(selection[str(target)], metrics)
              for target, metrics in SELECTION.items()}
    choices = {target: c.name for target, c in chosen.items()}
    centre = _predict(stage1, Target.SPEND, choices[Target.SPEND], val)
    draws = comps[cutoffs.validation].simulate_spends(val, (cfg.horizon_days,),
                                                      seed=cfg.seed)[0]
    levels = clv.calibrate_levels(draws, centre, val["spend"].to_numpy(), cfg.interval_target)

    stages("refit", "stage 2: refit on training + validation cutoffs")
    final_df = pd.concat([stacked[d] for d in cutoffs.final_train], ignore_index=True)
    final = _fit_models(final_df, cfg, columns, blend=choices[Target.CHURN] == BLEND)
    scorer = CustomerScorer(
        features=list(FEATURES), components=served_comps, churn=final.churn,
        purchases=final.purchases, spend=final.spend, rfm=final.rfm, blend=final.blend,
        horizon_days=cfg.horizon_days, churn_choice=choices[Target.CHURN],
        purchases_choice=choices[Target.PURCHASES], spend_choice=choices[Target.SPEND],
        interval_levels=levels, clv_horizon_days=cfg.clv_horizon_days,
        discount_rate=cfg.discount_rate,
        metadata={"cutoffs": cutoffs.as_dict(), "data_end": data_end.isoformat(),
                  "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
    )

    stages("evaluate", "out-of-time evaluation on the test cutoff")
    test = frames[cutoffs.test]
    scores = scorer.with_components(comps[cutoffs.test]).score(test, reasons=False)
    own = stacked[cutoffs.test]
    threshold, _ = ev.best_recency_rule(final_df["days_since_last"], final_df["churned"])
    metrics, tables, churn_scores = _evaluate(test, own, scores, final, threshold)
    tables.update(_tracking(transactions, test, comps[cutoffs.test], cutoffs.test,
                            cfg.horizon_days, scores["expected_purchases"].sum()))
    grades = ev.grade_report(metrics, OURS, [*CHURN_BASELINES, *VALUE_BASELINES],
                             margins=(0.02, 0.005))
    tables["selection"] = _selection_table(selection, choices, cutoffs.validation)
    evaluated = test.assign(**{f"score_{c}": scores[c] for c in scores.columns
                               if c not in ("customer_id", "as_of")})
    params = {f"test_{k}": v for k, v in comps[cutoffs.test].params().items()}
    params.update({f"served_{k}": v for k, v in served_comps.params().items()})
    metrics[OURS]["recency_rule_days"] = threshold
    return TrainResult(scorer, cutoffs, metrics, grades, selection, evaluated, tables,
                       churn_scores, params, comps[cutoffs.test], dict(stages.close()),
                       {str(target): c for target, c in chosen.items()})


def _tracking(transactions: pd.DataFrame, test: pd.DataFrame, comp: Components,
              as_of: dt.date, horizon_days: int, ours_total: float) -> dict[str, pd.DataFrame]:
    """Weekly purchase days of the test population in the label window, actual vs expected.

    BTYD curves come from E[X(t)] at week ends; ours spreads its horizon total like BG/NBD.
    """
    start = pd.Timestamp(as_of)
    end = start + pd.Timedelta(days=horizon_days)
    tx = transactions[(transactions["timestamp"] >= start) & (transactions["timestamp"] < end)
                      & ~transactions["is_return"]
                      & transactions["customer_id"].isin(set(test["customer_id"]))]
    days = tx.assign(day=tx["timestamp"].dt.floor("D"))[["customer_id", "day"]].drop_duplicates()
    week = ((days["day"] - start).dt.days // 7).to_numpy()
    weeks = np.arange(int(np.ceil(horizon_days / 7)))
    actual = pd.Series(np.bincount(week, minlength=len(weeks))[: len(weeks)], index=weeks)
    f, r, t = (test[c].to_numpy(dtype="float64") for c in ("frequency", "recency", "T"))
    ends = np.minimum((weeks + 1) * 7.0, horizon_days)
    curves = {}
    for name, model in (("bg_nbd", comp.bg), ("pareto_nbd", comp.pnbd)):
        cum = np.array([model.expected_purchases(e, f, r, t).sum() for e in ends])
        curves[name] = np.diff(cum, prepend=0.0)
    bg_total = curves["bg_nbd"].sum()
    curves[OURS] = curves["bg_nbd"] * (ours_total / bg_total if bg_total > 0 else 0.0)
    return {f"tracking_{k}": ev.tracking_table(actual, pd.Series(v, index=weeks))
            for k, v in curves.items()}


def _predict(models: _Models, target: Target, name: str, x: pd.DataFrame) -> np.ndarray:
    return next(c for c in served(target) if c.name == name).predict(models, x)


def _select(val: pd.DataFrame, models: _Models) -> dict[str, dict[str, dict[str, float]]]:
    """Each servable candidate's selection metrics on the validation cutoff, per target."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for target, metrics in SELECTION.items():
        actual = val[LABELS[target]].astype(float)
        out[str(target)] = {}
        for c in served(target):
            predicted = c.predict(models, val)
            out[str(target)][c.name] = {m: ev.metric_value(m, actual, predicted)
                                        for m in metrics}
    return out


def _selection_table(selection: dict[str, dict[str, dict[str, float]]],
                     choices: dict[Target, str], as_of: dt.date) -> pd.DataFrame:
    """One row per (target, candidate): its validation metrics and whether it serves."""
    rows = [{"target": target, "candidate": name, "validation_as_of": as_of.isoformat(),
             **{str(m): v for m, v in values.items()},
             "chosen": choices[Target(target)] == name}
            for target, candidates in selection.items() for name, values in candidates.items()]
    return pd.DataFrame(rows).set_index(["target", "candidate"])


def _evaluate(test: pd.DataFrame, own: pd.DataFrame, scores: pd.DataFrame, models: _Models,
              threshold: float) -> tuple[dict, dict[str, pd.DataFrame], dict[str, np.ndarray]]:
    """Our scores and every baseline's on the test cutoff, in one metrics dict.

    `own` is the test frame stacked with components fitted at the test cutoff itself."""
    y = test[LABELS[Target.CHURN]].astype(int).to_numpy()
    n = test[LABELS[Target.PURCHASES]].to_numpy(dtype="float64")
    spend = test[LABELS[Target.SPEND]].to_numpy(dtype="float64")

    def scored(target: Target, column: str) -> dict[str, np.ndarray]:
        return {OURS: scores[column].to_numpy(),
                **{c.baseline: c.predict(models, own) for c in baselines(target)}}

    churn_scores = scored(Target.CHURN, "churn_probability")
    counts = scored(Target.PURCHASES, "expected_purchases")
    values = scored(Target.SPEND, "expected_spend")
    metrics: dict[str, dict[str, float]] = {}
    for name, p in churn_scores.items():
        m = ev.churn_metrics(y, p)
        metrics.setdefault(name, {}).update({f"churn.{k}": v for k, v in m.items()})
    rule = ev.recency_rule(test["days_since_last"], threshold)
    metrics["recency_rule"]["churn.brier"] = float(np.mean((rule - y) ** 2))
    metrics["recency_rule"]["churn.ece"] = float("nan")
    for name, e in counts.items():
        m = ev.purchase_metrics(n, e)
        metrics.setdefault(name, {}).update({f"purchases.{k}": v for k, v in m.items()})
    for name, v in values.items():
        extra = ({"lower": scores["spend_p10"], "upper": scores["spend_p90"]} if name == OURS
                 else {})
        m = ev.value_metrics(spend, v, **extra)
        metrics.setdefault(name, {}).update({f"value.{k}": val for k, val in m.items()})
    freq = test["frequency"].to_numpy()
    tables = {
        f"actual_vs_expected_{k}": ev.actual_vs_expected_by_frequency(freq, n, e)
        for k, e in counts.items()
    }
    tables.update({f"deciles_{k}": ev.decile_table(spend, v) for k, v in values.items()})
    tables.update({f"gain_{k}": ev.gain_curve(y, p) for k, p in churn_scores.items()})
    tables.update({f"reliability_{k}": ev.reliability_table(y, p)
                   for k, p in churn_scores.items() if k != "recency_rule"})
    return metrics, tables, churn_scores
