"""Validation without silent loss: every input row is accepted or quarantined with a reason.

Checks run in a fixed order and the first failing check names the row's reason, so the counts
per reason add up: rows_in == accepted + quarantined, always.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from dataclasses import dataclass, field

import ibis
import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from features.config import NUMERIC, ROW_NUMBER, Arithmetic, SourceConfig
from features.contract import ARMS, CONSENT_PREFIX, SCHEMAS
from features.errors import DataError
from features.pointintime import MONEY
from features.sources import read_source

# Reasons, in the order they are checked.
REASONS: tuple[str, ...] = (
    "missing_customer_id",
    "missing_order_id",
    "missing_campaign_id",
    "unparsable_timestamp",
    "implausible_timestamp",
    "after_extraction_date",
    "future_timestamp",
    "non_product",
    "unparsable_number",
    "decimal_comma",
    "non_finite_price",
    "non_positive_price",
    "amount_out_of_range",
    "unknown_arm",
    "duplicate_customer_id",
    "duplicate_line",
)

TIMESTAMPS = ("timestamp", "signup_at", "sent_at")
# A UTC offset (or Z) after a time of day: such a value is aware, any other is local time.
_OFFSET = re.compile(r"[T\s]\d{1,2}(?::?\d{2}){0,2}(?:[.,]\d+)?"  # time of day
                     r"\s*(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)
# Values pandas skips when it guesses a column's timestamp format from its first value.
_NO_VALUE = frozenset({"", "nat", "nan"})
# Numbers written with a decimal comma (`12,50`, `1.234,50`) or grouped by points (`1.234`).
DECIMAL_COMMA = r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+"
_POINT_GROUPED = r"[+-]?\d{1,3}(?:\.\d{3})+(?:,\d+)?"
DECIMAL_COMMA_HINT = "looks like decimal commas: set decimal: ','"
# Line amounts are summed exactly as this decimal type: larger ones cannot be a line's revenue.
_MONEY = ibis.dtype(MONEY)
_MONEY_DIGITS = _MONEY.precision - _MONEY.scale
_TRUE = {"1", "1.0", "true", "t", "yes", "y"}
_UNSET = object()  # no first value given: take the column's own


@dataclass
class ValidationResult:
    """Accepted canonical rows, quarantined raw rows with reasons, and the counts."""

    table: str
    source: str
    rows_in: int
    accepted: pd.DataFrame
    quarantine: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_quarantined(self) -> int:
        return int(sum(self.counts.values()))

    def summary(self) -> dict[str, object]:
        return {
            "source": self.source,
            "table": self.table,
            "rows_in": self.rows_in,
            "accepted": len(self.accepted),
            "quarantined": self.n_quarantined,
            "reasons": dict(self.counts),
        }


class _Reasons:
    """First-failing-check bookkeeping over a frame's rows."""

    def __init__(self, n: int) -> None:
        self.reason = np.full(n, None, dtype=object)

    def mark(self, mask: pd.Series | np.ndarray, reason: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        self.reason[mask & (self.reason == None)] = reason  # noqa: E711

    @property
    def ok(self) -> np.ndarray:
        return self.reason == None  # noqa: E711


def load(cfg: SourceConfig, now: dt.datetime | None = None) -> ValidationResult:
    """Read a configured source and validate it (the one entry point the CLI uses)."""
    return validate(read_source(cfg), cfg, now=now)


def validate(
    raw: pd.DataFrame, cfg: SourceConfig, now: dt.datetime | None = None
) -> ValidationResult:
    """Map a raw frame onto the canonical table of `cfg.table` and quarantine bad rows."""
    raw = raw.reset_index(drop=True)
    canonical, reason = check_rows(raw, cfg, now)
    ok = reason == None  # noqa: E711
    accepted = canonical[ok].reset_index(drop=True)
    quarantine = raw.loc[~ok].astype("string")
    quarantine.insert(0, "reason", reason[~ok].astype(str))
    quarantine.insert(0, "row", np.flatnonzero(~ok) + 1)
    quarantine = quarantine.reset_index(drop=True)
    counts = {r: int(c) for r, c in quarantine["reason"].value_counts().items()}
    counts = {r: counts[r] for r in REASONS if r in counts}
    result = ValidationResult(cfg.table, cfg.location, len(raw), accepted, quarantine, counts)
    assert result.rows_in == len(result.accepted) + result.n_quarantined
    return result


def check_rows(
    raw: pd.DataFrame,
    cfg: SourceConfig,
    now: dt.datetime | None = None,
    *,
    whole: bool = True,
    first_values: dict[str, str | None] | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The canonical frame of every row of `raw` (0..n-1) and each row's reason (None if
    accepted).

    `whole=False` checks one batch of a larger source (an engine validating in parallel): the
    checks that need every row (a majority of decimal commas, duplicate ids and lines, ids
    from the row number) are left to the caller, and `first_values` gives each text timestamp
    column's first value in the whole source, from which a non-ISO format is inferred.
    """
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    n = len(raw)
    reasons = _Reasons(n)
    out: dict[str, pd.Series] = {}

    for canon, src in cfg.columns.items():
        if src == ROW_NUMBER:
            out[canon] = pd.Series(
                [f"{cfg.id_prefix}{i}" for i in range(1, n + 1)], dtype="string"
            )
        else:
            out[canon] = raw[src]
    for canon, value in cfg.constants.items():
        out[canon] = pd.Series([value] * n)
    for canon, mapping in cfg.value_map.items():
        if canon in out:
            col = out[canon].astype("string").str.strip()
            out[canon] = col.map(lambda v, m=mapping: m.get(v, v) if v is not pd.NA else v)

    if "customer_id" in out:
        out["customer_id"] = _ids(out["customer_id"])
        reasons.mark(out["customer_id"].isna(), "missing_customer_id")
    if cfg.table == "transactions" and "order_id" in out:
        out["order_id"] = _ids(out["order_id"])
        reasons.mark(out["order_id"].isna(), "missing_order_id")
    if cfg.table == "campaign_log":
        out["campaign_id"] = _ids(out["campaign_id"])
        reasons.mark(out["campaign_id"].isna(), "missing_campaign_id")

    for name in TIMESTAMPS:
        if name in out:
            first = first_values.get(name) if first_values is not None else _UNSET
            parsed, bad = _timestamps(out[name], cfg, first)
            reasons.mark(bad, "unparsable_timestamp")
            implausible = (parsed < cfg.min_timestamp) | (parsed > cfg.max_timestamp)
            reasons.mark(implausible, "implausible_timestamp")
            if name == "timestamp":
                if cfg.extracted_at is not None:
                    reasons.mark(parsed > _naive_utc(cfg.extracted_at), "after_extraction_date")
                reasons.mark(parsed > now, "future_timestamp")
            out[name] = parsed

    if cfg.table == "transactions" and cfg.non_product_codes and "product_id" in out:
        codes = set(cfg.non_product_codes)
        reasons.mark(out["product_id"].astype("string").str.strip().isin(codes), "non_product")

    for name in NUMERIC:
        if name in out:
            text = out[name]
            out[name], bad, comma = _numbers(text, cfg.decimal)
            if whole and comma.sum() * 2 > n:
                raise decimal_comma_error(cfg, name, text[comma].iloc[0])
            reasons.mark(comma, "decimal_comma")
            reasons.mark(bad, "unparsable_number")
    for canon, expr in cfg.derive.items():
        out[canon] = _derive(Arithmetic.parse(expr), out, n)
        reasons.mark(out[canon].isna(), "unparsable_number")

    if cfg.table == "transactions":
        _transactions(out, cfg, reasons)
    elif cfg.table == "customers":
        if whole:
            reasons.mark(
                out["customer_id"].duplicated(keep="first") & pd.Series(reasons.ok),
                "duplicate_customer_id",
            )
    else:
        arm = out["arm"].astype("string").str.strip().str.lower()
        out["arm"] = arm
        reasons.mark(~arm.isin(ARMS).fillna(False), "unknown_arm")

    if whole and checks_duplicate_lines(cfg):
        reasons.mark(raw.duplicated(keep="first").to_numpy(), "duplicate_line")
    return _canonical(out, cfg, raw), reasons.reason


def decimal_comma_error(cfg: SourceConfig, name: str, example: object) -> DataError:
    """The error for a numeric column mostly written with decimal commas."""
    return DataError(f"{cfg.location}: column {cfg.columns.get(name, name)!r} ({name}) "
                     f"{DECIMAL_COMMA_HINT} (e.g. {example!r})")


def checks_duplicate_lines(cfg: SourceConfig) -> bool:
    """Whether a repeated source line is quarantined (the second and later copies)."""
    return cfg.duplicates == "quarantine" and ROW_NUMBER not in cfg.columns.values()


def _transactions(out: dict[str, pd.Series], cfg: SourceConfig, reasons: _Reasons) -> None:
    amount = out["amount"]
    if "quantity" in out:
        qty = out["quantity"]
        is_return = qty < 0
    else:
        qty = pd.Series(np.where(amount < 0, -1.0, 1.0))
        is_return = amount < 0
    if cfg.return_order_prefix and "order_id" in out:
        prefixed = out["order_id"].str.startswith(cfg.return_order_prefix).fillna(False)
        is_return = is_return | prefixed.astype(bool)
    is_return = is_return.fillna(False).astype(bool)
    price = out.get("price", amount)
    values = price.to_numpy(dtype="float64", na_value=np.nan)
    finite = np.isfinite(values)
    sale = ~is_return.to_numpy()
    reasons.mark(sale & ~finite, "non_finite_price")
    bad = values < 0 if cfg.allow_zero_price else values <= 0
    reasons.mark(sale & finite & bad, "non_positive_price")
    amounts = amount.to_numpy(dtype="float64", na_value=np.nan)
    reasons.mark(~np.isfinite(amounts), "non_finite_price")
    reasons.mark(np.abs(np.round(amounts, _MONEY.scale)) >= 10.0 ** _MONEY_DIGITS,
                 "amount_out_of_range")
    out["amount"] = amount.where(~is_return, -amount.abs())
    out["quantity"] = qty.where(~is_return, -qty.abs())
    derived = cfg.line_cost(out["amount"], out.get("category"))
    if derived is not None:
        out["cost"] = derived
    if "cost" in out:  # signed like amount: a returned line's goods come back
        out["cost"] = out["cost"].where(~is_return, -out["cost"].abs())
        costs = out["cost"].to_numpy(dtype="float64", na_value=np.nan)
        reasons.mark(np.abs(np.round(costs, _MONEY.scale)) >= 10.0 ** _MONEY_DIGITS,
                     "amount_out_of_range")
    out["is_return"] = is_return


def _canonical(out: dict[str, pd.Series], cfg: SourceConfig, raw: pd.DataFrame) -> pd.DataFrame:
    schema = SCHEMAS[cfg.table]
    n = len(raw)
    frame = pd.DataFrame(index=raw.index)
    for name, dtype in schema.items():
        if name in out:
            frame[name] = out[name].to_numpy() if dtype != "string" else out[name].astype("string")
        elif cfg.table == "transactions" and name == "order_id":
            day = out["timestamp"].dt.strftime("%Y-%m-%d")
            frame[name] = (out["customer_id"] + "@" + day).astype("string")
        elif cfg.table == "transactions" and name == "product_id":
            frame[name] = pd.Series(["unknown"] * n, dtype="string")
        elif name in ("visit", "converted", "revenue", "cost"):
            if name != "cost":
                frame[name] = np.zeros(n) if name == "revenue" else np.full(n, np.nan)
        elif cfg.table != "transactions" and name in ("signup_at", "sent_at"):
            frame[name] = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us]")
        elif cfg.table == "campaign_log" and name == "offer_id":
            frame[name] = pd.Series([pd.NA] * n, dtype="string")
    for name, dtype in schema.items():
        if name in frame and dtype == "float64":
            frame[name] = frame[name].astype("float64")
    if cfg.table == "customers":
        for name, series in out.items():
            if name.startswith(CONSENT_PREFIX):
                text = series.astype("string").str.strip().str.lower()
                frame[name] = text.isin(_TRUE).fillna(False).astype(bool).to_numpy()
    for name in cfg.keep:
        frame[name] = raw[name].to_numpy()
    return frame


def _ids(col: pd.Series) -> pd.Series:
    """Ids as trimmed strings; blanks are missing; Excel's `13085.0` becomes `13085`."""
    s = col.astype("string").str.strip()
    s = s.str.replace(r"^(\d+)\.0$", r"\1", regex=True)
    return s.mask(s == "")


def _timestamps(col: pd.Series, cfg: SourceConfig, first: object = _UNSET
                ) -> tuple[pd.Series, np.ndarray]:
    """Naive UTC timestamps, and the mask of values that do not parse.

    Values with an offset (or `Z`) are converted to UTC; values without one are local time in
    `cfg.timezone`. With `timestamp_format` every value is read in it; without, ISO-8601 is read
    in any mix (offsets, `Z`, dates only), and other values as pandas reads a column without a
    format (the format of its first value, or `first` when given), so a column in one non-ISO
    format still reads.
    """
    if pd.api.types.is_datetime64_any_dtype(col):
        parsed = pd.Series(col)
        if parsed.dt.tz is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        elif cfg.timezone != "UTC":
            parsed = _to_utc(parsed, cfg.timezone)
        parsed = parsed.astype("datetime64[us]")
        return parsed, parsed.isna().to_numpy()
    text = col.astype("string").str.strip()
    fmt = cfg.timestamp_format
    if fmt:
        utc = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    else:
        utc = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
        rest = (utc.isna() & (text != "")).fillna(False).to_numpy(dtype=bool)
        if rest.any():
            utc[rest] = _in_inferred_format(text, rest, first)
    parsed = utc.dt.tz_localize(None).astype("datetime64[us]")
    if cfg.timezone != "UTC":
        if fmt:
            local = np.full(len(text), "%z" not in fmt and "%Z" not in fmt)
        else:
            local = ~text.str.contains(_OFFSET).fillna(False).to_numpy(dtype=bool)
        parsed[local] = _to_utc(parsed[local], cfg.timezone)
    return parsed, parsed.isna().to_numpy()


def _in_inferred_format(text: pd.Series, rows: np.ndarray, first: object = _UNSET
                        ) -> pd.Series:
    """`rows` of `text` read as pandas reads a column without a format: in the format it guesses
    from the column's first value (`first` when given), or value by value when it cannot guess
    one."""
    if first is _UNSET:
        first = first_value(text)
    fmt = guess_datetime_format(first) if first is not None else None
    with warnings.catch_warnings():  # dateutil's warnings on odd values: those rows are quarantined
        warnings.simplefilter("ignore", UserWarning)
        return pd.to_datetime(text[rows], format=fmt or "mixed", errors="coerce", utc=True)


def first_value(text: pd.Series) -> str | None:
    """The value of a text timestamp column whose format pandas infers for the column."""
    return next((v for v in text if v is not pd.NA and v.lower() not in _NO_VALUE), None)


def _to_utc(naive: pd.Series, tz: str) -> pd.Series:
    local = naive.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    return local.dt.tz_convert("UTC").dt.tz_localize(None)


def _numbers(col: pd.Series, decimal: str) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Numbers, the mask of values that are not numbers, and of those written `12,50`.

    With `decimal` ",", `1.234,50` reads 1234.5 and a value with a lone point is not a number.
    """
    none = np.zeros(len(col), dtype=bool)
    if pd.api.types.is_bool_dtype(col):
        return col.astype("float64"), none, none
    if pd.api.types.is_numeric_dtype(col):
        nums = col.astype("float64")
        return nums, nums.isna().to_numpy(), none
    text = col.astype("string").str.strip()
    if decimal == ",":
        grouped = text.str.fullmatch(_POINT_GROUPED).fillna(False)
        text = text.mask(grouped, text.str.replace(".", "", regex=False))
        text = text.mask(text.str.contains(".", regex=False).fillna(False), pd.NA)
        text = text.str.replace(",", ".", regex=False)
        comma = none
    else:
        comma = text.str.fullmatch(DECIMAL_COMMA).fillna(False).to_numpy(dtype=bool)
    nums = pd.to_numeric(text, errors="coerce").astype("float64")
    return nums, nums.isna().to_numpy(), comma


def _derive(expr: Arithmetic, out: dict[str, pd.Series], n: int) -> pd.Series:
    """A `derive` column from the numeric ones (a constant expression fills every row)."""
    result = expr.evaluate({k: v for k, v in out.items() if k in NUMERIC})
    if np.ndim(result) == 0:
        return pd.Series(np.full(n, float(result)))
    return pd.Series(result, dtype="float64")


def _naive_utc(ts: dt.datetime) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo else t
