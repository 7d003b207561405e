"""The console's data beyond the served scores: the transactions (CRM metrics, a customer's
spend history) and the campaign log (campaign results, a customer's contacts).

Transactions are read once through the source config (`features.validate.load`: the same
rows the features were built from) and kept sorted by customer, so one customer's history is
a binary search away. Figures over all transactions are computed once per period kind.
Campaign results are recomputed at most once a minute, since the live log grows.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from features.campaign_log import CampaignLog, campaign_frame, events
from features.config import load_source_config
from features.errors import DataError
from features.validate import load
from serving.console.crm import Period, campaign_results, cohort_retention, crm_metrics

log = logging.getLogger("retention.console")
CAMPAIGN_TTL_SECONDS = 60.0
CONFIG_SUFFIXES = (".yaml", ".yml", ".toml")


def read_transactions(config: Path) -> tuple[pd.DataFrame, dt.datetime | None]:
    """Canonical transactions of a source config, and the source's extraction time."""
    cfg = load_source_config(config)
    if cfg.table != "transactions":
        raise DataError(f"{config}: a {cfg.table} table, expected transactions")
    result = load(cfg)
    return result.accepted, cfg.extracted_at


def read_campaign_log(where: str | Path) -> pd.DataFrame:
    """A canonical campaign log from a source config (.yaml/.yml/.toml: a past campaign's
    table) or a SQLAlchemy URL (the service's event log, folded by `campaign_frame`)."""
    text = str(where)
    if text.endswith(CONFIG_SUFFIXES):
        cfg = load_source_config(text)
        if cfg.table != "campaign_log":
            raise DataError(f"{text}: a {cfg.table} table, expected campaign_log")
        return load(cfg).accepted
    return campaign_frame(CampaignLog(text).frame())


class Once:
    """A value computed on first use (thread-safe), optionally for at most `ttl` seconds."""

    def __init__(self, make: Callable[[], object], ttl: float | None = None) -> None:
        self.make, self.ttl = make, ttl
        self._lock = threading.Lock()
        self._value: object = None
        self._at: float | None = None

    def get(self) -> object:
        with self._lock:
            stale = self._at is None or (self.ttl is not None
                                         and time.monotonic() - self._at > self.ttl)
            if stale:
                self._value = self.make()
                self._at = time.monotonic()
            return self._value


class ConsoleData:
    """Transactions and campaign logs behind the CRM page and the customer page."""

    def __init__(self, transactions: Path | None, campaign_log: str | None,
                 campaign_history: Path | None) -> None:
        self.transactions_config = transactions
        self.campaign_log_url = campaign_log
        self.campaign_history = campaign_history
        self._tx = Once(self._load_transactions)
        self._metrics: dict[str, Once] = {}
        self._campaigns = Once(self._campaign_results, ttl=CAMPAIGN_TTL_SECONDS)
        self._history = Once(self._history_frame)
        self._log: CampaignLog | None = None

    # ---------------------------------------------------------------- transactions
    @property
    def has_transactions(self) -> bool:
        return self.transactions_config is not None

    def _load_transactions(self) -> dict:
        if self.transactions_config is None:
            return {"frame": None, "data_end": None}
        started = time.perf_counter()
        tx, end = read_transactions(self.transactions_config)
        tx = tx.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)
        ids = tx["customer_id"].astype(str).to_numpy()
        log.info("console: %d transactions read in %.1fs", len(tx),
                 time.perf_counter() - started)
        return {"frame": tx, "ids": ids, "data_end": end}

    def transactions(self) -> pd.DataFrame | None:
        return self._tx.get()["frame"]

    def crm(self, period: Period) -> dict | None:
        """The CRM metrics table and the cohort matrix for `period`, computed once each."""
        if period not in self._metrics:
            self._metrics[period] = Once(lambda: self._crm(period))
        return self._metrics[period].get()

    def _crm(self, period: Period) -> dict | None:
        loaded = self._tx.get()
        tx = loaded["frame"]
        if tx is None:
            return None
        return {"metrics": crm_metrics(tx, period, data_end=loaded["data_end"]),
                "cohorts": cohort_retention(tx, period, max_age=12 if period == "month" else 8)}

    def spend_history(self, customer_id: str, as_of: str, months: int = 24) -> pd.Series | None:
        """Net spend per calendar month of one customer, the `months` months before as_of
        (empty months are 0)."""
        loaded = self._tx.get()
        tx = loaded["frame"]
        if tx is None:
            return None
        ids = loaded["ids"]
        lo, hi = np.searchsorted(ids, customer_id, "left"), np.searchsorted(ids, customer_id,
                                                                           "right")
        rows = tx.iloc[lo:hi]
        end = pd.Period(pd.Timestamp(as_of) - pd.Timedelta(days=1), freq="M")
        months_index = pd.period_range(end - (months - 1), end, freq="M")
        if rows.empty:
            return pd.Series(0.0, index=months_index)
        rows = rows[rows["timestamp"] < pd.Timestamp(as_of)]
        by_month = rows.groupby(pd.PeriodIndex(rows["timestamp"], freq="M"))["amount"].sum()
        return by_month.reindex(months_index, fill_value=0.0)

    # ---------------------------------------------------------------- campaign log
    @property
    def log(self) -> CampaignLog | None:
        """The service's campaign log (opened on first use), None when there is none."""
        if self.campaign_log_url and self._log is None:
            self._log = CampaignLog(self.campaign_log_url)
        return self._log

    def _history_frame(self) -> pd.DataFrame | None:
        if self.campaign_history is None:
            return None
        return read_campaign_log(self.campaign_history)

    def _campaign_results(self) -> pd.DataFrame:
        parts = []
        history = self._history.get()
        if history is not None:
            parts.append(history)
        if self.log is not None:
            parts.append(read_campaign_log(self.campaign_log_url))
        parts = [p for p in parts if not p.empty]
        if not parts:
            return campaign_results(pd.DataFrame())
        return campaign_results(pd.concat(parts, ignore_index=True))

    def campaigns(self) -> pd.DataFrame:
        """Campaign results (see `crm.campaign_results`) of the history and the live log."""
        return self._campaigns.get()

    def contacts(self, customer_id: str, limit: int = 20) -> list[dict]:
        """The customer's most recent campaign events, newest first: the live log's events
        and the past campaigns' assignments with their outcomes."""
        out: list[dict] = []
        history = self._history.get()
        if history is not None and not history.empty:
            rows = history[history["customer_id"].astype(str) == customer_id]
            for r in rows.itertuples(index=False):
                outcome = ("converted" if getattr(r, "converted", 0) else
                           "visited" if getattr(r, "visit", 0) else "no response")
                out.append({"at": pd.Timestamp(r.sent_at) if pd.notna(r.sent_at) else None,
                            "campaign_id": r.campaign_id, "offer_id": r.offer_id or "",
                            "event": f"{r.arm} ({outcome})", "channel": "",
                            "revenue": float(getattr(r, "revenue", 0.0) or 0.0)})
        live = self.log
        if live is not None:
            query = (sa.select(events.c.at, events.c.campaign_id, events.c.offer_id,
                               events.c.event, events.c.arm, events.c.channel, events.c.revenue)
                     .where(events.c.customer_id == customer_id)
                     .order_by(events.c.at.desc()).limit(limit))
            with live.engine.connect() as conn:
                for r in conn.execute(query):
                    event = f"{r.event} ({r.arm})" if r.event == "assigned" and r.arm else r.event
                    out.append({"at": pd.Timestamp(r.at), "campaign_id": r.campaign_id,
                                "offer_id": r.offer_id, "event": event, "channel": r.channel,
                                "revenue": float(r.revenue or 0.0)})
        out.sort(key=lambda e: e["at"] or pd.Timestamp.min, reverse=True)
        return out[:limit]
