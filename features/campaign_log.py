"""The campaign log: every assignment the service makes and every event a campaign engine
reports back (sent, opened, converted, revenue), in SQLite by default or PostgreSQL by URL.

`campaign_frame` turns it into the canonical campaign log (one row per customer and campaign:
arm, offer, visit, converted, revenue) that uplift training reads.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import pandas as pd
import sqlalchemy as sa

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
)


class CampaignLog:
    """Append-only event table; the service writes `assigned`, `/feedback` the rest."""

    def __init__(self, url: str) -> None:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        metadata.create_all(self.engine)

    def append(self, rows: list[dict]) -> int:
        """Insert events (dicts with the table's columns); returns how many were written."""
        if not rows:
            return 0
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        clean = [{"received_at": now, "offer_id": "", "channel": "", "arm": "", "revenue": 0.0,
                  **{k: v for k, v in row.items() if v is not None}} for row in rows]
        with self.engine.begin() as conn:
            conn.execute(events.insert(), clean)
        return len(clean)

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
