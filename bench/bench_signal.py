"""Which new churn and purchases signal pays, on every benchmarked dataset, out of time.

For each dataset of bench_accuracy's supervised protocols (Online Retail II, CDNOW) the
training job's cutoffs and feature frames are built once; each feature family's columns are
then computed point in time (only lines before each as_of) and added to the model's columns.
The churn booster (calibrated) and the purchases booster are fitted on the training cutoffs
and scored on the validation cutoff (where a family is judged) and, refitted on training +
validation, on the test cutoff (reported, never used to decide). Training-row variants (more
cutoffs, booster settings, monotone constraints) are measured the same way. Early stopping
picks each booster's number of trees on the validation cutoff (its validation scores are
therefore optimistic) and refits on training + validation with that many trees for the test;
a second form stops the purchases booster on its validation MAE, the graded metric.

A family is kept when, on the validation cutoff of every dataset that has its inputs, churn
ROC-AUC and PR-AUC do not fall and at least one of them, or purchases MAE, improves.

    python bench/bench_signal.py            # writes the `signal` section of RESULTS.md
    python bench/bench_signal.py --quick    # CDNOW sample only, to a temp file
    python bench/bench_signal.py --only monotone "early stopping"   # those variants and the
                                            # current columns: the `signal-only` section
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import xgboost as xgb
from results_file import write_section

from features.config import load_source_config
from features.validate import load
from training import evaluate as ev
from training.candidates import LABELS, Target
from training.components import COMPONENT_FEATURES, component_features, fit_components
from training.data import FEATURES, build_frames, plan_cutoffs
from training.models.churn import ChurnClassifier
from training.models.purchases import PurchasesRegressor
from training.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "configs" / "sources"
DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Protocol:
    name: str
    source: str
    test_as_of: dt.date
    horizon: int


PROTOCOLS = (
    Protocol("Online Retail II", "online_retail_ii", dt.date(2011, 9, 10), 90),
    Protocol("CDNOW supervised", "cdnow", dt.date(1998, 1, 1), 181),
)
QUICK = (Protocol("CDNOW sample", "cdnow_sample", dt.date(1998, 1, 1), 181),)

Family = Callable[[pd.DataFrame, dt.date], pd.DataFrame]


def _before(tx: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    return tx[tx["timestamp"] < pd.Timestamp(as_of)]


def _purchase_days(tx: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """One row per customer and purchase day before as_of, with days before as_of."""
    h = _before(tx, as_of)
    h = h[~h["is_return"]]
    day = h["timestamp"].dt.normalize()
    d = pd.DataFrame({"customer_id": h["customer_id"].to_numpy(), "day": day.to_numpy(),
                      "amount": h["amount"].to_numpy()})
    d = d.groupby(["customer_id", "day"], as_index=False)["amount"].sum()
    d["ago"] = (pd.Timestamp(as_of) - d["day"]).dt.days
    return d


def weekly(tx: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Regularity over the last 52 weeks: active weeks, their spread, the longest gap."""
    d = _purchase_days(tx, as_of)
    d = d[d["ago"] <= 364]
    d["week"] = (d["ago"] - 1) // 7
    g = d.groupby("customer_id")
    weeks = g["week"]
    out = pd.DataFrame({
        "active_weeks_52": weeks.nunique(),
        "active_weeks_13": g.apply(lambda x: x.loc[x["week"] < 13, "week"].nunique(),
                                   include_groups=False),
        "week_spread": weeks.std(),
    })
    # Longest gap between purchase days in the window (edges count: from the window start to
    # the first purchase is not a gap; from the last purchase to as_of is days_since_last).
    s = d.sort_values(["customer_id", "ago"])
    gap = s.groupby("customer_id")["ago"].diff()
    out["max_gap_365"] = gap.groupby(s["customer_id"]).max()
    out["active_weeks_ratio"] = out["active_weeks_13"] / out["active_weeks_52"].clip(lower=1)
    return out.reset_index()


def calendar(tx: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Weekday and hour habits: concentration on one weekday, spread of hours."""
    h = _before(tx, as_of)
    h = h[~h["is_return"]].drop_duplicates(["customer_id", "order_id"])
    wd = h["timestamp"].dt.weekday
    hour = h["timestamp"].dt.hour + h["timestamp"].dt.minute / 60
    f = pd.DataFrame({"customer_id": h["customer_id"].to_numpy(), "wd": wd.to_numpy(),
                      "hour": hour.to_numpy()})
    g = f.groupby("customer_id")
    top = f.groupby(["customer_id", "wd"]).size().groupby(level=0).max()
    out = pd.DataFrame({"weekday_share": top / g.size()})
    if (f["hour"] != 0).any():  # sources with dates only carry no hour
        out["hour_std"] = g["hour"].std()
    return out.reset_index()


def returns(tx: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Returns in the last 90 and 365 days: lines, value share."""
    h = _before(tx, as_of)
    ago = (pd.Timestamp(as_of) - h["timestamp"]).dt.days
    rows = []
    for w in (90, 365):
        r = h[ago < w]
        g = r.groupby("customer_id")
        ret = r["amount"].where(r["is_return"], 0.0).abs().groupby(r["customer_id"]).sum()
        sales = r["amount"].where(~r["is_return"], 0.0).groupby(r["customer_id"]).sum()
        rows.append(pd.DataFrame({
            f"return_lines_{w}d": r["is_return"].groupby(r["customer_id"]).sum(),
            f"return_share_{w}d": ret / (ret + sales).where(ret + sales > 0),
        }))
        del g
    return pd.concat(rows, axis=1).reset_index(names="customer_id")


def products(tx: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Product behaviour: breadth now vs a year ago, top-product spend share, repeat-product
    share of the last 90 days, staples overdue (the most overdue product bought on 3+ days)."""
    h = _before(tx, as_of)
    h = h[~h["is_return"]]
    if h["product_id"].nunique() <= 1:  # no product ids in the source
        return pd.DataFrame({"customer_id": pd.Series(dtype="string")})
    ago = (pd.Timestamp(as_of) - h["timestamp"]).dt.days.to_numpy()
    cid = h["customer_id"].to_numpy()
    pid = h["product_id"].to_numpy()
    f = pd.DataFrame({"customer_id": cid, "product_id": pid, "ago": ago,
                      "amount": h["amount"].to_numpy()})
    recent = f[f["ago"] < 90]
    year_ago = f[(f["ago"] >= 365) & (f["ago"] < 455)]
    out = pd.DataFrame({
        "products_90d": recent.groupby("customer_id")["product_id"].nunique(),
        "products_90d_ly": year_ago.groupby("customer_id")["product_id"].nunique(),
    })
    spend = f.groupby(["customer_id", "product_id"])["amount"].sum()
    out["top_product_share"] = (spend.groupby(level=0).max()
                                / spend.groupby(level=0).sum().where(lambda s: s > 0))
    first = f.groupby(["customer_id", "product_id"])["ago"].max().rename("first_ago")
    r = recent.drop_duplicates(["customer_id", "product_id"]).join(first, on=["customer_id",
                                                                                "product_id"])
    r["repeat"] = r["first_ago"] >= 90
    out["repeat_product_share_90d"] = r.groupby("customer_id")["repeat"].mean()
    days = f.drop_duplicates(["customer_id", "product_id", "ago"])
    g = days.groupby(["customer_id", "product_id"])["ago"]
    n, last, first_day = g.size(), g.min(), g.max()
    staples = n >= 3
    cycle = ((first_day - last) / (n - 1))[staples]
    overdue = (last[staples] / cycle.clip(lower=1)).groupby(level=0).max()
    out["staples_overdue"] = overdue
    out["n_staples"] = staples.groupby(level=0).sum()
    out = out.fillna({"products_90d": 0, "products_90d_ly": 0, "n_staples": 0})
    out["breadth_vs_ly"] = out["products_90d"] - out["products_90d_ly"]
    return out.reset_index(names="customer_id")


def country(tx: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """A static covariate: the customer's most recent country (one-hot of the frequent ones,
    the rest and unseen ones as 'other')."""
    if "Country" not in tx:
        return pd.DataFrame({"customer_id": pd.Series(dtype="string")})
    h = _before(tx, as_of).sort_values("timestamp")
    last = h.groupby("customer_id")["Country"].last()
    top = ["United Kingdom", "Germany", "France", "EIRE"]
    out = pd.DataFrame({f"country_{c.split()[0].lower()}": (last == c).astype(float)
                        for c in top})
    return out.reset_index(names="customer_id")


FAMILIES: dict[str, Family] = {"weekly histogram": weekly, "weekday/hour": calendar,
                               "returns": returns, "products": products,
                               "customer attributes (country)": country}


# Booster settings tried against TrainConfig's (600 trees, depth 3, learning rate 0.02).
GRID: dict[str, dict[str, object]] = {
    "booster depth 4": {"max_depth": 4},
    "booster min_child_weight 25": {"min_child_weight": 25.0},
    "booster colsample 0.5": {"colsample_bytree": 0.5},
}


# Directions known for churn (+1: more churn as the column grows, -1: less), other columns
# held fixed. Only recent-activity counts, the time since the last purchase and the BTYD
# forecasts of the horizon itself: lifetime counts and spend are left free (a heavy buyer who
# stopped long ago is a likely churner), as are tenure, order values and seasonality.
CHURN_MONOTONE: dict[str, int] = {
    "days_since_last": 1, "overdue_ratio": 1, "r_score": -1,
    "orders_30d": -1, "orders_90d": -1, "orders_180d": -1, "orders_365d": -1, "f_score": -1,
    "bg_p_alive": -1, "pnbd_p_alive": -1, "bg_expected": -1, "pnbd_expected": -1,
    "bg_p_zero": 1,
}
PURCHASES_MONOTONE = {name: -sign for name, sign in CHURN_MONOTONE.items()}
EARLY_STOPPING_ROUNDS = 50


class _Monotone:
    """XGBoost monotone constraints by column name (`monotone`), the other columns free."""

    monotone: dict[str, int] = {}

    def _xgb_params(self) -> dict[str, object]:
        names = getattr(self, "feature_names_in_", ())  # set by the fit before XGBoost's
        signs = tuple(self.monotone.get(str(n), 0) for n in names)
        return {**super()._xgb_params(), "monotone_constraints": signs}  # type: ignore[misc]


class MonotoneChurn(_Monotone, ChurnClassifier):
    monotone = CHURN_MONOTONE


class MonotonePurchases(_Monotone, PurchasesRegressor):
    monotone = PURCHASES_MONOTONE


@dataclass
class Frames:
    train: list[pd.DataFrame]
    validation: pd.DataFrame
    test: pd.DataFrame


def frames_for(p: Protocol, tx: pd.DataFrame, *, step_days: int | None = None,
               n_train: int = 3) -> Frames:
    ts = tx["timestamp"]
    start = ts.min().date()
    end = (ts.max().normalize() + DAY).date()
    c = plan_cutoffs(start, end, p.horizon, test_as_of=p.test_as_of, n_train=n_train,
                     step_days=step_days)
    frames = build_frames(tx, [*c.train, c.validation, c.test], p.horizon, data_end=end)
    stacked = {d: component_features(f, fit_components(f), p.horizon) for d, f in frames.items()}
    return Frames([stacked[d] for d in c.train], stacked[c.validation], stacked[c.test])


def with_family(fr: pd.DataFrame, tx: pd.DataFrame, family: Family) -> tuple[pd.DataFrame,
                                                                              list[str]]:
    as_of = fr["as_of"].iloc[0]
    extra = family(tx, as_of)
    cols = [c for c in extra.columns if c != "customer_id"]
    extra["customer_id"] = extra["customer_id"].astype(fr["customer_id"].dtype)
    return fr.merge(extra, on="customer_id", how="left"), cols


def booster_kw(booster: dict[str, object] | None = None) -> dict[str, object]:
    """TrainConfig's booster settings, overridden by `booster`."""
    cfg = TrainConfig()
    kw = dict(n_estimators=cfg.n_estimators, max_depth=cfg.max_depth,
              learning_rate=cfg.learning_rate, random_state=cfg.seed)
    return {**kw, **(booster or {})}


@dataclass(frozen=True)
class Models:
    """The two booster classes and each one's settings over TrainConfig's."""

    churn: type[ChurnClassifier] = ChurnClassifier
    purchases: type[PurchasesRegressor] = PurchasesRegressor
    churn_booster: dict[str, object] | None = None
    purchases_booster: dict[str, object] | None = None


def fit_score(train: pd.DataFrame, target: pd.DataFrame, cols: list[str],
              booster: dict[str, object] | None = None, models: Models = Models()
              ) -> dict[str, float]:
    y = train[LABELS[Target.CHURN]].astype(int)
    churn = models.churn(**booster_kw({**(booster or {}), **(models.churn_booster or {})})).fit(
        train[cols], y, groups=train["customer_id"].astype(str))
    purchases = models.purchases(
        **booster_kw({**(booster or {}), **(models.purchases_booster or {})})).fit(
        train[cols], train[LABELS[Target.PURCHASES]])
    p = churn.predict_proba(target[cols])[:, 1]
    m = ev.churn_metrics(target[LABELS[Target.CHURN]].astype(int), p)
    mae = ev.purchase_metrics(target[LABELS[Target.PURCHASES]],
                              purchases.predict(target[cols]))["mae"]
    return {"roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"], "brier": m["brier"], "mae": mae}


def evaluate(fr: Frames, cols: list[str], booster: dict[str, object] | None = None,
             models: Models = Models()) -> tuple[dict[str, float], dict[str, float]]:
    train = pd.concat(fr.train, ignore_index=True)
    val = fit_score(train, fr.validation, cols, booster, models)
    final = pd.concat([*fr.train, fr.validation], ignore_index=True)
    test = fit_score(final, fr.test, cols, booster, models)
    return val, test


def _stopped_trees(fr: Frames, cols: list[str], model: type, estimator: type, target: Target,
                   rounds: int, **params: object) -> int:
    """Trees of `model`'s booster (TrainConfig's settings, `params` on top) at its best
    validation score, fitted on the training cutoffs and stopped after `rounds` trees without
    a gain."""
    train = pd.concat(fr.train, ignore_index=True)
    label = LABELS[target]
    fitted = estimator(**{**model(**booster_kw())._xgb_params(), **params},
                       early_stopping_rounds=rounds).fit(
        train[cols].astype("float64"), train[label].astype(float),
        eval_set=[(fr.validation[cols].astype("float64"), fr.validation[label].astype(float))],
        verbose=False)
    return fitted.best_iteration + 1


def best_trees(fr: Frames, cols: list[str], rounds: int = EARLY_STOPPING_ROUNDS
               ) -> tuple[int, int]:
    """Trees (of TrainConfig's maximum) of the churn and purchases boosters at their best
    validation loss (XGBoost's metric of each objective: log loss, Tweedie negative
    log-likelihood)."""
    return (_stopped_trees(fr, cols, ChurnClassifier, xgb.XGBClassifier, Target.CHURN, rounds),
            _stopped_trees(fr, cols, PurchasesRegressor, xgb.XGBRegressor, Target.PURCHASES,
                           rounds))


def mae_trees(fr: Frames, cols: list[str], rounds: int = EARLY_STOPPING_ROUNDS) -> int:
    """Trees (of TrainConfig's maximum) of the purchases booster at its best validation MAE
    (the graded metric, not its Tweedie likelihood)."""
    return _stopped_trees(fr, cols, PurchasesRegressor, xgb.XGBRegressor, Target.PURCHASES,
                          rounds, eval_metric="mae")


def pays(base: dict[str, float], new: dict[str, float]) -> bool:
    """No headline falls (ROC-AUC, PR-AUC by more than 1e-4; Brier, MAE by more than 0.5%)
    and one of them gains (0.001 in ROC-AUC or PR-AUC; 0.5% in Brier or MAE)."""
    steady = (new["roc_auc"] >= base["roc_auc"] - 1e-4 and new["pr_auc"] >= base["pr_auc"] - 1e-4
              and new["brier"] <= base["brier"] * 1.005 and new["mae"] <= base["mae"] * 1.005)
    better = (new["roc_auc"] > base["roc_auc"] + 0.001 or new["pr_auc"] > base["pr_auc"] + 0.001
              or new["brier"] < base["brier"] * 0.995 or new["mae"] < base["mae"] * 0.995)
    return steady and better


def verdict(paid: list[bool], datasets: int) -> str:
    """Kept only when it pays on every dataset of the run, and on more than one."""
    said = f"pays on {sum(paid)} of the {len(paid)} datasets with its inputs"
    if len(paid) < min(2, datasets):
        return f"{said}: not kept (it cannot be judged on a second dataset)"
    return f"{said}: {'kept' if all(paid) else 'dropped'}"


def row(name: str, val: dict[str, float], test: dict[str, float], base_val: dict[str, float],
        base_test: dict[str, float]) -> str:
    def cell(m: dict[str, float], b: dict[str, float], k: str) -> str:
        return f"{m[k]:.4f} ({m[k] - b[k]:+.4f})"
    keys = ("roc_auc", "pr_auc", "brier", "mae")
    return (f"| {name} | " + " | ".join(cell(val, base_val, k) for k in keys) + " | "
            + " | ".join(cell(test, base_test, k) for k in keys) + " |")


CUTOFFS = (("cutoffs every 14 days (12)", 14, 12), ("cutoffs every 30 days (9)", 30, 9))
MONOTONE = "monotone constraints"
EARLY_STOPPING = "early stopping"
MAE_STOPPING = "purchases stopped on validation MAE"
VARIANTS = (*FAMILIES, *(label for label, _, _ in CUTOFFS), *GRID, MONOTONE, EARLY_STOPPING,
            MAE_STOPPING)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="run only the variants whose name contains one of these (any case), "
                         f"(section signal-only); variants: {', '.join(VARIANTS)}")
    args = ap.parse_args()
    only = [n.lower() for n in args.only or ()]
    unknown = [n for n in only if not any(n in v.lower() for v in VARIANTS)]
    if unknown:
        ap.error(f"--only: no variant named like {', '.join(unknown)} "
                 f"(variants: {', '.join(VARIANTS)})")

    def run(label: str) -> bool:
        return not only or any(n in label.lower() for n in only)

    warnings.filterwarnings("ignore")
    protocols = QUICK if args.quick else PROTOCOLS
    base_cols = [*FEATURES, *COMPONENT_FEATURES]
    lines = ["Validation decides (training cutoffs → validation cutoff); test is reported "
             "(training + validation → test). Differences against the current columns of the "
             "same run in brackets.", ""]
    verdicts: dict[str, list[bool]] = {}
    for p in protocols:
        start = time.perf_counter()
        tx = load(load_source_config(SOURCES / f"{p.source}.yaml")).accepted
        fr = frames_for(p, tx)
        base_val, base_test = evaluate(fr, base_cols)
        lines += [f"### {p.name} (test as_of {p.test_as_of}, {p.horizon} days)", "",
                  "| variant | val ROC-AUC | val PR-AUC | val Brier | val MAE | test ROC-AUC | "
                  "test PR-AUC | test Brier | test MAE |", "|---|" + "---:|" * 8,
                  row("current columns", base_val, base_test, base_val, base_test)]
        print(lines[-1], flush=True)

        def record(label: str, val: dict[str, float], test: dict[str, float],
                   shown: str | None = None, out: list[str] = lines,
                   base: tuple[dict[str, float], dict[str, float]] = (base_val, base_test)
                   ) -> None:
            verdicts.setdefault(label, []).append(pays(base[0], val))
            out.append(row(shown or label, val, test, *base))
            print(out[-1], flush=True)

        for name, family in FAMILIES.items():
            if not run(name):
                continue
            parts = [with_family(f, tx, family) for f in [*fr.train, fr.validation, fr.test]]
            cols = parts[0][1]
            if not cols:
                lines.append(f"| {name} | no inputs in this dataset |" + " |" * 7)
                continue
            if parts[0][0][cols].nunique().max() <= 1:
                lines.append(f"| {name} | constant on this dataset |" + " |" * 7)
                continue
            ext = Frames([x for x, _ in parts[:-2]], parts[-2][0], parts[-1][0])
            record(name, *evaluate(ext, [*base_cols, *cols]), f"+ {name} ({', '.join(cols)})")
        for label, step, n in CUTOFFS:
            if run(label):
                record(label, *evaluate(frames_for(p, tx, step_days=step, n_train=n), base_cols))
        for label, kw in GRID.items():
            if run(label):
                record(label, *evaluate(fr, base_cols, kw))
        if run(MONOTONE):
            record(MONOTONE, *evaluate(fr, base_cols, models=Models(MonotoneChurn,
                                                                    MonotonePurchases)))
        if run(EARLY_STOPPING):
            churn_trees, purchases_trees = best_trees(fr, base_cols)
            models = Models(churn_booster={"n_estimators": churn_trees},
                            purchases_booster={"n_estimators": purchases_trees})
            record(EARLY_STOPPING, *evaluate(fr, base_cols, models=models),
                   f"{EARLY_STOPPING} ({EARLY_STOPPING_ROUNDS} rounds on validation: churn "
                   f"{churn_trees}, purchases {purchases_trees} of {booster_kw()['n_estimators']}"
                   " trees)")
        if run(MAE_STOPPING):
            trees = mae_trees(fr, base_cols)
            record(MAE_STOPPING, *evaluate(fr, base_cols, models=Models(
                purchases_booster={"n_estimators": trees})),
                f"{MAE_STOPPING} ({EARLY_STOPPING_ROUNDS} rounds: {trees} of "
                f"{booster_kw()['n_estimators']} trees)")
        lines += ["", f"({time.perf_counter() - start:.0f} s)", ""]
    lines += ["### Verdict (validation, every dataset with the inputs)", ""]
    lines += [f"- {name}: {verdict(v, len(protocols))}" for name, v in verdicts.items()]
    if run(MONOTONE):
        signs = ", ".join(f"{k} {v:+d}" for k, v in CHURN_MONOTONE.items())
        lines += ["", f"Monotone constraints (churn; purchases the opposite): {signs}."]
    text = "\n".join(lines)
    print(text)
    if args.quick:
        out = Path(tempfile.mkdtemp()) / "RESULTS.md"
        write_section("signal", text, path=out)
        print(f"(quick run written to {out})")
    elif only:  # a run of some variants beside its own baseline row: a section of its own
        write_section("signal-only", f"`bench_signal.py --only {' '.join(args.only)}`\n\n"
                      + text)
    else:
        write_section("signal", text)


if __name__ == "__main__":
    main()
