"""Training data: rolling-origin cutoffs that respect DESIGN.md's time rules, and their frames.

Every label window of a training cutoff ends on or before the cutoff it is validated or tested
on (train as_of + H <= validation as_of; validation as_of + H <= test as_of), so every number
reported is out of time. When history allows, the cutoff one year before the test as_of is
included so that the models see the same season.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features import engine
from features.errors import DataError

FEATURES: tuple[str, ...] = (
    "frequency", "recency", "T", "monetary_value", "days_since_last", "tenure_days",
    "orders_30d", "orders_90d", "orders_180d", "orders_365d",
    "spend_30d", "spend_90d", "spend_180d", "spend_365d",
    "total_orders", "total_spend", "avg_order_value", "basket_size", "distinct_products",
    "gap_mean", "gap_std", "overdue_ratio", "trend_90d", "return_rate",
    "r_score", "f_score", "m_score", "orders_next90_ly", "spend_next90_ly",
    "season_sin", "season_cos",
)
SEASON: tuple[str, ...] = ("season_sin", "season_cos")


@dataclass(frozen=True)
class Cutoffs:
    """as_of dates of one backtest: fit on `train`, select on `validation`, report on `test`."""

    train: tuple[dt.date, ...]
    validation: dt.date
    test: dt.date
    horizon_days: int
    notes: list[str] = field(default_factory=list)

    @property
    def final_train(self) -> tuple[dt.date, ...]:
        """Cutoffs of the model that is registered: train + validation (labels end by test)."""
        return tuple(sorted({*self.train, self.validation}))

    def as_dict(self) -> dict[str, object]:
        return {"train": [d.isoformat() for d in self.train],
                "validation": self.validation.isoformat(), "test": self.test.isoformat(),
                "horizon_days": self.horizon_days}


# A cutoff needs history behind it: one horizon, and never more than this.
MAX_MIN_HISTORY_DAYS = 120


def min_history_days(horizon_days: int) -> int:
    """Days of history a cutoff needs behind it: the horizon, at most MAX_MIN_HISTORY_DAYS
    (enough for recency, frequency and gap features to mean something)."""
    return min(horizon_days, MAX_MIN_HISTORY_DAYS)


def plan_cutoffs(
    data_start: dt.date,
    data_end: dt.date,
    horizon_days: int,
    *,
    test_as_of: dt.date | None = None,
    n_train: int = 3,
    step_days: int | None = None,
    min_history: int | None = None,
) -> Cutoffs:
    """Pick test, validation and training cutoffs inside [data_start + history, data_end - H].

    Training cutoffs sit every `step_days` (default H) from validation - H back, so no
    training label window overlaps validation's. When the history is too short for that
    (CDNOW's supervised form, a shop with a few months of data), they sit every `step_days`
    (default H/2, between 7 and 30 days) from validation back: their label windows then overlap
    validation's (selection is a little optimistic, said in `notes`), while every one still
    ends before the test as_of. One training cutoff is enough.

    Examples
    --------
    >>> import datetime as dt
    >>> c = plan_cutoffs(dt.date(2024, 1, 1), dt.date(2024, 4, 30), 28)
    >>> [d.isoformat() for d in c.train], c.validation.isoformat(), c.test.isoformat()
    (['2024-02-06'], '2024-03-05', '2024-04-02')
    """
    h = dt.timedelta(days=horizon_days)
    history = min_history if min_history is not None else min_history_days(horizon_days)
    test = test_as_of or (data_end - h)
    if test + h > data_end:
        raise DataError(f"test as_of {test}: its {horizon_days}-day label window ends after the "
                        f"data ({data_end})")
    earliest = data_start + dt.timedelta(days=history)
    validation = test - h
    if validation < earliest + dt.timedelta(days=1):
        need = history + 2 * horizon_days + 1
        raise DataError(
            f"not enough history for {horizon_days}-day labels: data {data_start}..{data_end} "
            f"leaves no training cutoff before validation {validation}; a cutoff needs "
            f"{history} days of history (the horizon, at most {MAX_MIN_HISTORY_DAYS}), so "
            f"training, validation and test need at least {need} days of data "
            f"(or a shorter --horizon)"
        )
    notes = []
    step = dt.timedelta(days=step_days or horizon_days)
    first = validation - h
    if first < earliest:
        step = dt.timedelta(days=step_days or min(30, max(7, horizon_days // 2)))
        first = max(validation - step, earliest)
        notes.append(f"training cutoffs every {step.days} days from validation: their labels "
                     "overlap validation's, not the test's")
    candidates = [first - step * i for i in range(n_train)]
    year_before = test - dt.timedelta(days=364)
    if year_before + h <= validation and year_before >= earliest:
        candidates.append(year_before)
        notes.append(f"includes {year_before}, the same season a year before the test as_of")
    train = tuple(sorted({c for c in candidates if c >= earliest}))
    return Cutoffs(train, validation, test, horizon_days, notes)


def add_season(frame: pd.DataFrame) -> pd.DataFrame:
    """Day of year of each row's as_of on the unit circle: retail is seasonal, and the same
    season a year earlier is among the training cutoffs only if the model can tell it apart."""
    day = pd.to_datetime(frame["as_of"]).dt.day_of_year.to_numpy(dtype="float64")
    angle = 2 * np.pi * day / 365.25
    return frame.assign(season_sin=np.sin(angle), season_cos=np.cos(angle))


def build_frames(
    transactions: pd.DataFrame,
    as_ofs: list[dt.date],
    horizon_days: int,
    *,
    data_end: dt.date | None = None,
    lookback_days: int = 365,
) -> dict[dt.date, pd.DataFrame]:
    """Feature + label frames per as_of, population only (a purchase in the lookback)."""
    frames = engine.feature_frames(transactions, as_ofs, horizon_days=horizon_days,
                                   lookback_days=lookback_days, data_end=data_end)
    return {as_of: add_season(frame) for as_of, frame in frames.items()}
