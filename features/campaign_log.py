"""The campaign log: every assignment the service makes and every event a campaign engine
reports back (sent, opened, converted, revenue), in SQLite by default or PostgreSQL by URL.

`campaign_frame` turns it into the canonical campaign log (one row per customer and campaign:
arm, offer, visit, converted, revenue) that uplift training reads.

Every event has a key, unique in the table, so a retried request never writes it twice: the
caller's `event_id` when it sends one, else a digest of what the event says (for `assigned`:
the campaign and the customer, since only a customer's first assignment to a campaign counts).
Old rows are removed with `prune` (`retention campaign-log prune --before DATE`); the log keeps
everything until then.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Literal

import pandas as pd
import sqlalchemy as sa

from features.errors import DataError

# What a campaign engine reports back; `assigned` rows are written by the service itself.
EngineEvent = Literal["sent", "opened", "converted"]
Event = Literal["assigned", EngineEvent]

metadata = sa.MetaData()
events = sa.Table(
    "campaign_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=False, index=True),
    sa.Column("campaign_id", sa.String(128), nullable=False, index=True),
    sa.Column("offer_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("channel", sa.String(32), nullable=False, server_default=""),
    sa.Column("arm", sa.String(32), nullable=False, server_default=""),
    sa.Column("revenue", sa.Float, nullable=False, server_default="0"),
    sa.Column("event_key", sa.String(64), nullable=True, unique=True),
)
# Columns an event row may carry besides the table's own: the caller's idempotency key.
EVENT_ID = "event_id"


def event_key(row: dict) -> str:
    """The row's unique key: its `event_id`, or a digest of the event's own fields (`at` as
    the caller gave it, so a retry without `at` matches the first try)."""
    if row.get(EVENT_ID):
        return "id:" + hashlib.sha256(str(row[EVENT_ID]).encode()).hexdigest()[:40]
    if row.get("event") == "assigned":
        fields = ["assigned", row.get("campaign_id"), row.get("customer_id")]
    else:
        fields = [row.get(k) for k in ("event", "customer_id", "campaign_id", "offer_id",
                                       "channel", "revenue")]
        fields.append(row["at"].isoformat() if isinstance(row.get("at"), dt.datetime) else None)
    return "d:" + hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()[:40]


class CampaignLog:
    """Append-only event table; the service writes `assigned`, `/feedback` the rest."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open the log at `url`; with `create=False` a SQLite log that does not exist is an
        error (a service must not start over with an empty log: caps and history are in it)."""
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            if not create and not path.exists():
                raise DataError(f"campaign log {path} not found: contact caps and campaign "
                                "history live there; check --home / $RETENTION_HOME, or start "
                                "with `retention serve`, which creates a new one")
            path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        metadata.create_all(self.engine)
        self._add_key_column()

    def _add_key_column(self) -> None:
        """Logs written before event keys existed get the (nullable, unique) column."""
        columns = {c["name"] for c in sa.inspect(self.engine).get_columns(events.name)}
        if "event_key" in columns:
            return
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {events.name} ADD COLUMN event_key VARCHAR(64)"))
            conn.execute(sa.text(f"CREATE UNIQUE INDEX IF NOT EXISTS ix_{events.name}_event_key "
                                 f"ON {events.name} (event_key)"))

    def append(self, rows: list[dict], received_at: dt.datetime | None = None) -> int:
        """Insert events (dicts with the table's columns, optionally `event_id`; `at` defaults
        to the time received). An event whose key is already in the log, or repeated in `rows`,
        is skipped. Returns how many were written (the rest were duplicates)."""
        now = received_at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        fresh: dict[str, dict] = {}
        for row in rows:
            key = event_key(row)
            if key not in fresh:
                fresh[key] = {"received_at": now, "at": now, "offer_id": "", "channel": "",
                              "arm": "", "revenue": 0.0, "event_key": key,
                              **{k: v for k, v in row.items() if v is not None and k != EVENT_ID}}
        if not fresh:
            return 0
        with self.engine.begin() as conn:
            if self.engine.dialect.name in ("postgresql", "sqlite"):
                written = conn.execute(self._insert_new(), list(fresh.values())).all()
                return len(written)
            seen = set(conn.execute(sa.select(events.c.event_key)
                                    .where(events.c.event_key.in_(list(fresh)))).scalars())
            new = [row for key, row in fresh.items() if key not in seen]
            if new:
                conn.execute(events.insert(), new)
            return len(new)

    def _insert_new(self) -> sa.Insert:
        """INSERT that skips keys already in the log (written before, or meanwhile by another
        replica) and returns the keys it wrote."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return (insert(events).on_conflict_do_nothing(index_elements=["event_key"])
                .returning(events.c.event_key))

    def prune(self, before: dt.datetime) -> int:
        """Delete events that happened before `before`; returns how many were deleted."""
        with self.engine.begin() as conn:
            return conn.execute(events.delete().where(events.c.at < before)).rowcount

    def contacts(self, customer_ids: list[str], since: dt.datetime) -> pd.DataFrame:
        """`sent` events of these customers since `since` (customer_id, offer_id, at)."""
        if not customer_ids:
            return pd.DataFrame(columns=["customer_id", "offer_id", "at"])
        query = (sa.select(events.c.customer_id, events.c.offer_id, events.c.at)
                 .where(events.c.event == "sent", events.c.at >= since,
                        events.c.customer_id.in_(customer_ids)))
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(query).fetchall(),
                                columns=["customer_id", "offer_id", "at"])

    def sent(self, since: dt.datetime, before: dt.datetime,
             customer_ids: list[str] | None = None) -> pd.DataFrame:
        """`sent` events with since <= at < before (customer_id, offer_id, channel, at), of
        these customers or of everyone: the contacts whose cost a window before as_of bore."""
        query = (sa.select(events.c.customer_id, events.c.offer_id, events.c.channel,
                           events.c.at)
                 .where(events.c.event == "sent", events.c.at >= since, events.c.at < before))
        if customer_ids is not None:
            query = query.where(events.c.customer_id.in_(customer_ids))
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(query).fetchall(),
                                columns=["customer_id", "offer_id", "channel", "at"])

    def frame(self) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return pd.read_sql(sa.select(events), conn)


def campaign_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Canonical campaign log from events: one row per (customer, campaign) that was assigned,
    with its arm and offer, visit (opened), converted and revenue (summed)."""
    cols = ["customer_id", "campaign_id", "offer_id", "sent_at", "arm", "visit", "converted",
            "revenue"]
    assigned = raw[raw["event"] == "assigned"].sort_values("at")
    assigned = assigned.drop_duplicates(["customer_id", "campaign_id"], keep="first")
    if assigned.empty:
        return pd.DataFrame(columns=cols)
    keys = ["customer_id", "campaign_id"]
    outcome = raw[raw["event"].isin(["opened", "converted"])]
    flags = (outcome.assign(visit=1.0, conv=(outcome["event"] == "converted").astype(float))
             .groupby(keys).agg(visit=("visit", "max"), converted=("conv", "max"),
                                revenue=("revenue", "sum")).reset_index())
    out = assigned.drop(columns=["revenue"]).merge(flags, on=keys, how="left").fillna(
        {"visit": 0.0, "converted": 0.0, "revenue": 0.0})
    return out.rename(columns={"at": "sent_at"})[cols].reset_index(drop=True)
