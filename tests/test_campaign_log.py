"""The campaign log: every event once (retries and repeats never duplicate), on SQLite and a
real PostgreSQL; logs from before event keys are upgraded in place; old rows are pruned."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
import sqlalchemy as sa

from features.campaign_log import CampaignLog, campaign_frame

AT = dt.datetime(2024, 1, 5, 10, 0)


def sent(customer: str, **extra) -> dict:
    return {"event": "sent", "customer_id": customer, "campaign_id": "winter",
            "offer_id": "winback", "channel": "email", **extra}


@pytest.fixture(params=["sqlite", "postgres"])
def log(request, tmp_path):
    if request.param == "sqlite":
        return CampaignLog(f"sqlite:///{tmp_path / 'log.db'}")
    url = request.getfixturevalue("pg_url")
    schema_free = CampaignLog(url)
    with schema_free.engine.begin() as conn:  # a clean table per test
        conn.execute(sa.text("DELETE FROM campaign_events"))
    return schema_free


def test_a_retried_request_never_duplicates(log):
    batch = [sent("c1", at=AT), sent("c2"), sent("c1", at=AT)]  # c1 twice in one call
    assert log.append(batch) == 2
    assert log.append(batch) == 0  # the client retries the whole call
    assert len(log.frame()) == 2


def test_event_ids_tell_repeated_events_apart(log):
    first = sent("c1", event="converted", revenue=20.0, event_id="order-1")
    second = sent("c1", event="converted", revenue=20.0, event_id="order-2")
    assert log.append([first, second]) == 2
    assert log.append([second]) == 0
    frame = campaign_frame(log.frame())  # no assignment yet: nothing to learn from
    assert frame.empty


def test_a_customer_is_assigned_to_a_campaign_once(log):
    row = {"event": "assigned", "customer_id": "c1", "campaign_id": "winter", "arm": "treatment",
           "offer_id": "winback", "at": AT}
    assert log.append([row]) == 1
    assert log.append([{**row, "at": AT + dt.timedelta(hours=1), "offer_id": "other"}]) == 0
    assert log.append([{**row, "campaign_id": "spring"}]) == 1


def test_concurrent_writers_of_the_same_events_write_them_once(log):
    other = CampaignLog(str(log.engine.url.render_as_string(hide_password=False)).replace(
        "postgresql+psycopg://", "postgresql://"))
    batch = [sent(f"c{i}", at=AT, event_id=str(uuid.uuid5(uuid.NAMESPACE_OID, str(i))))
             for i in range(200)]
    written = []
    threads = [threading.Thread(target=lambda w=w: written.append(w.append(batch)))
               for w in (log, other, log, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(written) == 200
    assert len(log.frame()) == 200


def test_a_log_from_before_event_keys_is_upgraded(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE campaign_events (id INTEGER PRIMARY KEY, received_at DATETIME NOT NULL,"
            " at DATETIME NOT NULL, event VARCHAR(16) NOT NULL, customer_id VARCHAR(128) NOT NULL,"
            " campaign_id VARCHAR(128) NOT NULL, offer_id VARCHAR(128) NOT NULL DEFAULT '',"
            " channel VARCHAR(32) NOT NULL DEFAULT '', arm VARCHAR(32) NOT NULL DEFAULT '',"
            " revenue FLOAT NOT NULL DEFAULT 0)"))
        conn.execute(sa.text(
            "INSERT INTO campaign_events (received_at, at, event, customer_id, campaign_id)"
            " VALUES ('2024-01-01', '2024-01-01', 'sent', 'c0', 'w')"))
    log = CampaignLog(url)
    assert log.append([sent("c1", at=AT)]) == 1
    assert log.append([sent("c1", at=AT)]) == 0
    assert sorted(log.frame()["customer_id"]) == ["c0", "c1"]


def test_prune_removes_only_older_events(log):
    log.append([sent("old", at=AT - dt.timedelta(days=400)), sent("new", at=AT)])
    assert log.prune(AT - dt.timedelta(days=365)) == 1
    assert log.frame()["customer_id"].tolist() == ["new"]


def test_the_cli_prunes_the_log_in_the_home(tmp_path):
    import subprocess
    import sys

    from features.home import campaign_log_url

    log = CampaignLog(campaign_log_url(tmp_path))
    log.append([sent("old", at=AT - dt.timedelta(days=400)), sent("new", at=AT)])
    done = subprocess.run([sys.executable, "-m", "serving.cli", "campaign-log", "prune",
                           "--before", "2023-06-01", "--home", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "deleted 1 events" in done.stdout
    assert log.frame()["customer_id"].tolist() == ["new"]
