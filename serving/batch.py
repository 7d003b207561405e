"""Scoring a whole feature snapshot: every score plus what a retention team filters on.

Used by the service (at start and on every reload) and by `retention score` (the risk list to
Parquet, CSV or PostgreSQL).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from features.csv_safe import write_csv
from features.errors import DataError
from serving.config import RiskBands
from serving.profit import in_margin_terms, value_basis
from training.scorer import CustomerScorer

CARRIED = ("rfm_segment", "value_tier", "days_since_last", "avg_order_value", "gross_margin",
           "margin_rate", "value_basis")


def risk_percentile(at_or_below: np.ndarray, population: int) -> np.ndarray:
    """Percent of the population whose churn probability is at or below each row's, to 0.1."""
    return np.round(100.0 * at_or_below / max(population, 1), 1)


def enrich(scores: pd.DataFrame, features: pd.DataFrame, bands: RiskBands,
           population: np.ndarray | None = None) -> pd.DataFrame:
    """Add risk band and percentile (against `population`'s sorted churn probabilities, the
    scored rows themselves by default), segment, tier, the expected next purchase date, and the
    value fields in margin terms where the features know the margin (`serving.profit`)."""
    return ranked(row_fields(scores, features, bands), population)


def row_fields(scores: pd.DataFrame, features: pd.DataFrame, bands: RiskBands) -> pd.DataFrame:
    """`enrich`'s fields that each row has alone (all but the risk percentile, left empty)."""
    out = in_margin_terms(scores, features)
    churn = out["churn_probability"].to_numpy(dtype="float64")
    out["risk_percentile"] = np.nan
    out["risk_band"] = np.where(churn >= bands.high, "high",
                                np.where(churn >= bands.medium, "medium", "low")).astype(object)
    for col in CARRIED:
        out[col] = features[col].to_numpy() if col in features else None
    out["value_basis"] = value_basis(features)
    expected = out["expected_purchases"].to_numpy(dtype="float64")
    horizon = out["horizon_days"].to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        wait = np.where(expected > 0, horizon * math.log(2) / expected, np.inf)
    as_of = pd.to_datetime(out["as_of"], errors="coerce")
    nxt = as_of + pd.to_timedelta(np.where(wait <= 365, np.ceil(wait), np.nan), unit="D")
    out["expected_next_purchase"] = nxt.dt.strftime("%Y-%m-%d").where(nxt.notna(), None)
    return out


def ranked(rows: pd.DataFrame, population: np.ndarray | None = None) -> pd.DataFrame:
    """`row_fields`' rows with their risk percentile against `population` (sorted churn
    probabilities; the rows themselves by default)."""
    churn = rows["churn_probability"].to_numpy(dtype="float64")
    if population is None:
        at_or_below = _at_or_below(churn)
        size = len(churn)
    else:
        at_or_below = np.searchsorted(population, churn, side="right")
        size = len(population)
    rows["risk_percentile"] = risk_percentile(at_or_below, size)
    return rows


def _at_or_below(values: np.ndarray) -> np.ndarray:
    """How many of `values` are at or below each one (NaNs last, as `np.sort` puts them):
    `np.searchsorted(np.sort(values), values, side="right")` from one sort."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    nan = np.isnan(ordered)
    differ = (ordered[1:] != ordered[:-1]) & ~(nan[1:] & nan[:-1])
    ends = np.flatnonzero(np.r_[differ, True])  # the last of each run of equal values
    counts = np.empty(len(values), dtype=np.int64)
    counts[order] = np.repeat(ends + 1, np.diff(np.r_[-1, ends]))
    return counts


def score_population(scorer: CustomerScorer, features: pd.DataFrame, bands: RiskBands, *,
                     chunk: int = 50_000, reasons: bool = True,
                     progress: Callable[[int], None] | None = None,
                     workers: int | None = None) -> pd.DataFrame:
    """Score every row of a snapshot in chunks (bounded memory), then rank the population.

    Chunks are scored `workers` at a time on threads (default: up to 2, at most the cores):
    the heavy parts (simulation, trees, TreeSHAP tables) run in compiled loops, numpy and
    XGBoost outside the GIL, each thread with one XGBoost thread; what they all read once is
    built on a thread of its own meanwhile. Results do not depend on `workers`.
    """
    if features.empty:
        raise DataError("feature snapshot is empty: nothing to score")
    features = features.reset_index(drop=True)
    parts = [features.iloc[lo:lo + chunk] for lo in range(0, len(features), chunk)]
    workers = min(len(parts), workers or min(2, os.cpu_count() or 1))
    if workers <= 1:
        if len(parts) > 1:
            scorer.prepare(reasons=reasons)
        scored = []
        for part in parts:
            scored.append(row_fields(scorer.score(part, reasons=reasons), part, bands))
            if progress:
                progress(len(part))
        return ranked(pd.concat(scored, ignore_index=True))

    def one(part: pd.DataFrame) -> pd.DataFrame:
        with xgb.config_context(nthread=1):
            return row_fields(scorer.score(part, reasons=reasons), part, bands)

    with (ThreadPoolExecutor(1, thread_name_prefix="prepare") as side,
          ThreadPoolExecutor(workers, thread_name_prefix="score") as pool):
        # what the first chunks would each wait for is built beside them, not before them
        prepared = side.submit(scorer.prepare, reasons=reasons)
        futures = [pool.submit(one, part) for part in parts]
        scored = []
        for part, future in zip(parts, futures, strict=True):
            scored.append(future.result())
            if progress:
                progress(len(part))
        prepared.result()
    return ranked(pd.concat(scored, ignore_index=True))


def write_scores(scores: pd.DataFrame, out: str, table: str = "customer_scores") -> str:
    """Write to .parquet, .csv or a PostgreSQL URL (table replaced); returns where.
    A CSV is meant for spreadsheets: text that would start a formula is quoted (csv_safe)."""
    if out.startswith(("postgresql://", "postgres://")):
        import sqlalchemy as sa

        url = "postgresql+psycopg://" + out.split("://", 1)[1]
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            scores.to_sql(table, conn, if_exists="replace", index=False, chunksize=50_000,
                          method="multi")
        return f"{out} table {table}"
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        scores.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        write_csv(scores, path)
    else:
        raise DataError(f"{out}: --out must end in .parquet or .csv, or be a postgresql:// URL")
    return str(path)
