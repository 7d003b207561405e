"""The BentoML service over real HTTP: a synthetic retailer trained and registered by the CLI,
served by `bentoml serve`, then every endpoint, its errors, control groups, contact caps, a hot
reload under load, the Redis store, and schemathesis against the service's OpenAPI document."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from features.campaign_log import CampaignLog, campaign_frame
from serving.offers import load_catalogue
from tests.conftest import BIN, END, KEY, ROOT, Deployment, clean_env, run, schemathesis

WHAT_IF = {"customer_id": "what-if", "frequency": 4, "recency": 200, "T": 300,
           "monetary_value": 60, "days_since_last": 100, "tenure_days": 300, "total_orders": 5,
           "total_spend": 300, "avg_order_value": 60}  # the README's example row


def known_ids(dep, n: int) -> list[str]:
    return dep.snapshot["customer_id"].head(n).tolist()


def test_score_answers_known_ids_and_marks_unknown_ones(dep):
    ids = known_ids(dep, 3)
    r = dep.post("/score", {"customer_ids": [*ids, "no-such-customer"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "1" and body["as_of"] == END
    results = body["results"]
    assert [x["customer_id"] for x in results] == [*ids, "no-such-customer"]
    for x in results[:3]:
        assert x["status"] == "ok"
        assert 0 <= x["churn_probability"] <= 1 and 0 <= x["risk_percentile"] <= 100
        assert x["risk_band"] in ("low", "medium", "high")
        assert x["clv_p10"] <= x["clv_p50"] <= x["clv_p90"]
        assert x["value_at_risk"] == pytest.approx(x["churn_probability"] * x["clv"], rel=1e-4)
        assert x["rfm_segment"] and x["value_tier"]
        assert x["reasons_raising"] or x["reasons_lowering"]
    assert results[3]["status"] == "unknown_customer" and results[3]["churn_probability"] is None


def test_api_key_is_required_except_for_health(dep):
    body = {"customer_ids": known_ids(dep, 1)}
    assert httpx.post(f"{dep.url}/score", json=body).status_code == 401
    wrong = httpx.post(f"{dep.url}/score", json=body, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
    for path in ("/healthz", "/readyz", "/livez"):
        assert httpx.get(f"{dep.url}{path}").status_code == 200


@pytest.mark.parametrize(("path", "body", "status", "says"), [
    ("/score", {"customer_ids": []}, 422, "customer_ids"),
    ("/score", {"customer_ids": "c1"}, 422, "customer_ids"),
    ("/score", {"ids": ["c1"]}, 422, "customer_ids"),
    ("/score", {"customer_ids": [" "]}, 422, "customer_ids.0"),
    ("/score", {"customer_ids": ["c"] * 1001}, 422, "customer_ids"),
    ("/recommend", {"customer_ids": ["c1"], "channel": "fax"}, 422, "channel"),
    ("/recommend", {"customer_ids": ["c1"], "k": -1}, 422, "k"),
    ("/risk_list", {"top_n": 0}, 422, "top_n"),
    ("/feedback", {"events": [{"event": "sent", "customer_id": "c1", "campaign_id": "x",
                               "revenue": -5}]}, 422, "revenue"),
    ("/feedback", {"events": [{"event": "sent", "customer_id": "c1", "campaign_id": "x",
                               "at": "2999-01-01T00:00:00"}]}, 422, "future"),
    ("/feedback", {"events": [{"event": "bought", "customer_id": "c1", "campaign_id": "x"}]},
     422, "event"),
    ("/score_features", {"rows": [{"customer_id": "n", "frequency": 1, "recency": 50, "T": 10,
                                   "monetary_value": 5, "days_since_last": 1, "tenure_days": 10,
                                   "total_orders": 2, "total_spend": 9,
                                   "avg_order_value": 4.5}]}, 422, "recency"),
    ("/feedback", {"events": [{"event": "sent", "customer_id": "c1", "campaign_id": "x",
                               "at": "0001-01-01T00:00:00+14:00"}]}, 422, "before 2000"),
    ("/feedback", {"events": [{"event": "sent", "customer_id": "c1", "campaign_id": "x",
                               "at": "9999-12-31T23:59:59-14:00"}]}, 422, "future"),
    ("/feedback", {"events": [{"event": "sent", "customer_id": "c\x00", "campaign_id": "x"}]},
     422, "events.0.customer_id"),
    ("/risk_list", {"top_n": True}, 422, "top_n"),
    ("/score_features", {"rows": [{**WHAT_IF, "frequency": 100_000, "recency": 0, "T": 0,
                                   "tenure_days": 1}]}, 422, "frequency"),
    ("/score_features", {"rows": [{**WHAT_IF, "frequency": 250}]}, 422, "frequency (250) "
                                                                         "exceeds recency"),
    ("/score_features", {"rows": [{**WHAT_IF, "days_since_last": 40}]}, 422, "days_since_last"),
    ("/score_features", {"rows": [{**WHAT_IF, "orders_30d": 2, "orders_90d": 1}]}, 422,
     "orders_30d"),
    ("/score_features", {"rows": [{**WHAT_IF, "orders_90d": 1}]}, 422, "orders_90d (1) must be 0"),
    ("/score_features", {"rows": [{**WHAT_IF, "as_of": "0001-01-01"}]}, 422, "as_of"),
])
def test_bad_requests_get_a_4xx_with_a_one_line_message(dep, path, body, status, says):
    r = dep.post(path, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert says in error and "\n" not in error


@pytest.mark.parametrize(("path", "raw", "says"), [
    ("/feedback", '{"events": [{"event": "sent", "customer_id": "c1", "campaign_id": "x", '
                  '"revenue": NaN}]}', "revenue"),
    ("/risk_list", '{"filters": {"min_clv": Infinity}}', "min_clv"),
    ("/risk_list", '{"filters": {"min_value_at_risk": -Infinity}}', "min_value_at_risk"),
])
def test_nan_and_infinity_literals_are_refused(dep, path, raw, says):
    r = dep.client.post(path, content=raw.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert says in r.json()["error"] and "finite" in r.json()["error"]


def test_malformed_oversized_and_non_json_bodies(dep):
    r = dep.client.post("/score", content=b"{not json", headers={"Content-Type":
                                                                  "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["error"]
    big = json.dumps({"customer_ids": ["x" * 120] * 20_000}).encode()
    r = dep.client.post("/score", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = dep.client.post("/score", content=b"customer_ids=c1",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415


def feature_payload(dep, cid: str) -> dict:
    from serving.schemas import FeatureRow

    row = dep.snapshot.set_index("customer_id").loc[cid]
    return {"customer_id": cid, "as_of": END,
            **{k: (None if pd.isna(row[k]) else row[k].item() if hasattr(row[k], "item")
                   else row[k]) for k in FeatureRow.model_fields if k in row.index}}


def test_score_features_gives_the_same_scores_as_the_store(dep):
    cid = known_ids(dep, 5)[4]
    what_if = dep.post("/score_features", {"rows": [feature_payload(dep, cid)]})
    assert what_if.status_code == 200, what_if.text
    stored = dep.post("/score", {"customer_ids": [cid]}).json()["results"][0]
    got = what_if.json()["results"][0]
    for key in ("churn_probability", "p_alive", "expected_purchases", "risk_percentile"):
        assert got[key] == pytest.approx(stored[key], rel=1e-6), key
    assert (got["risk_band"], got["rfm_segment"]) == (stored["risk_band"], stored["rfm_segment"])
    assert got["value_tier"] == stored["value_tier"] is not None


def test_concurrent_score_features_batched_answer_as_if_alone(dep):
    from concurrent.futures import ThreadPoolExecutor

    ids = known_ids(dep, 200)[-16:]
    alone = {}
    for cid in ids:
        r = dep.post("/score_features", {"rows": [feature_payload(dep, cid)]})
        assert r.status_code == 200, r.text
        alone[cid] = r.json()

    def call(cid: str) -> tuple[str, dict]:
        with httpx.Client(base_url=dep.url, headers={"X-API-Key": KEY}, timeout=60) as c:
            return cid, c.post("/score_features",
                               json={"rows": [feature_payload(dep, cid)]}).json()

    with ThreadPoolExecutor(8) as pool:
        together = dict(pool.map(call, ids))
    for cid in ids:
        a, b = alone[cid]["results"][0], together[cid]["results"][0]
        for key in ("churn_probability", "expected_purchases", "clv", "clv_p10", "clv_p90"):
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-9), (cid, key)


def test_risk_list_is_ranked_by_value_at_risk_and_filtered(dep):
    r = dep.post("/risk_list", {"top_n": 20, "filters": {"bands": ["high", "medium"]}})
    assert r.status_code == 200, r.text
    body = r.json()
    values = [x["value_at_risk"] for x in body["results"]]
    assert values == sorted(values, reverse=True) and len(values) == min(20, body["matched"])
    assert {x["risk_band"] for x in body["results"]} <= {"high", "medium"}
    everyone = dep.post("/risk_list", {"top_n": 10_000}).json()
    assert everyone["matched"] == len(dep.snapshot) > body["matched"]
    csv = dep.post("/risk_list.csv", {"top_n": 20, "filters": {"bands": ["high", "medium"]}})
    lines = csv.text.strip().splitlines()
    assert lines[0].startswith("customer_id,")
    assert [line.split(",")[0] for line in lines[1:]] == [x["customer_id"]
                                                          for x in body["results"]]


def control_arms(campaign: str, ids: list[str]) -> dict[str, bool]:
    """The hold-out computed in a fresh interpreter (another hash seed): what a restart sees."""
    code = ("import json,sys; from serving.offers import in_control; "
            "ids=json.loads(sys.argv[2]); "
            "print(json.dumps({i: in_control(sys.argv[1], i, 0.10) for i in ids}))")
    out = subprocess.run([sys.executable, "-c", code, campaign, json.dumps(ids)],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    return json.loads(out.stdout)


def test_control_group_is_stable_across_calls_and_restarts(dep):
    ids = known_ids(dep, 300)
    first = dep.post("/recommend", {"customer_ids": ids, "campaign_id": "spring", "k": 0}).json()
    again = dep.post("/recommend", {"customer_ids": ids, "campaign_id": "spring", "k": 0}).json()
    arms = {x["customer_id"]: x["status"] == "control" for x in first["results"]}
    assert arms == {x["customer_id"]: x["status"] == "control" for x in again["results"]}
    assert arms == control_arms("spring", ids)
    share = sum(arms.values()) / len(arms)
    assert 0.05 < share < 0.15, share
    other = dep.post("/recommend", {"customer_ids": ids, "campaign_id": "autumn", "k": 0}).json()
    assert arms != {x["customer_id"]: x["status"] == "control" for x in other["results"]}
    for x in first["results"]:
        if x["status"] == "control":
            assert x["offers"] == [] and x["products"] == [] and x["arm"] == "control"


def test_offers_respect_consent_and_rank_by_net_value(dep):
    ids = known_ids(dep, 400)
    consent = dep.customers.set_index("customer_id")
    body = dep.post("/recommend", {"customer_ids": ids, "campaign_id": "consent", "k": 3}).json()
    assert body["catalogue_version"] == load_catalogue(ROOT / "configs/offers/demo.yaml").version
    offered = 0
    for x in body["results"]:
        for offer in x["offers"]:
            assert bool(consent.loc[x["customer_id"], f"consent_{offer['channel']}"])
            assert offer["source"] == ("uplift" if offer["offer_id"] == "winback-10"
                                       else "prior")
            assert offer["net_value"] == pytest.approx(
                offer["expected_incremental_value"] - offer["expected_cost"], abs=1e-3)
        nets = [o["net_value"] for o in x["offers"]]
        assert nets == sorted(nets, reverse=True)
        offered += bool(x["offers"])
        if x["status"] == "no_consent":
            assert not consent.loc[x["customer_id"], ["consent_email", "consent_sms",
                                                      "consent_push"]].any()
    assert offered > 0
    sms = dep.post("/recommend", {"customer_ids": ids, "campaign_id": "consent",
                                  "channel": "sms"}).json()
    for x in sms["results"]:
        assert all(o["channel"] == "sms" for o in x["offers"])
        if x["offers"]:
            assert bool(consent.loc[x["customer_id"], "consent_sms"])


def test_products_exclude_what_was_bought_and_unknowns_get_popular_ones(dep):
    meta = dep.client.post("/metadata", json={}).json()
    assert meta["recommender"] is True
    ids = known_ids(dep, 50)
    body = dep.post("/recommend", {"customer_ids": [*ids, "brand-new"], "k": 5,
                                   "campaign_id": "products"}).json()
    bought = dep.transactions.groupby("customer_id")["product_id"].agg(set)
    repeatable = set(load_catalogue(ROOT / "configs/offers/demo.yaml").repeatable_products)
    with_products = 0
    for x in body["results"][:-1]:
        if x["status"] == "control":
            continue
        items = [p["product_id"] for p in x["products"]]
        assert len(items) <= 5 and len(set(items)) == len(items)
        assert not (set(items) & (bought.get(x["customer_id"], set()) - repeatable))
        with_products += bool(items)
    assert with_products > 0
    new = body["results"][-1]
    assert new["status"] == "unknown_customer" and len(new["products"]) == 5
    assert all("popular" in p["reason"] for p in new["products"])


def ago(**delta: float) -> str:
    """An ISO time this long before now (UTC)."""
    return (dt.datetime.now(dt.UTC) - dt.timedelta(**delta)).isoformat()


def test_feedback_feeds_the_campaign_log_and_contact_caps(dep):
    ids = known_ids(dep, 400)
    body = dep.post("/recommend", {"customer_ids": ids, "campaign_id": "caps", "k": 0}).json()
    target = next(x for x in body["results"] if x["status"] == "ok")
    cid, offer = target["customer_id"], target["offers"][0]
    events = [{"event": "sent", "customer_id": cid, "campaign_id": "caps",  # two contacts
               "offer_id": offer["offer_id"], "channel": offer["channel"], "at": at}
              for at in (ago(hours=30), ago(hours=2))]
    events += [{"event": "converted", "customer_id": cid, "campaign_id": "caps",
                "offer_id": offer["offer_id"], "revenue": 42.5}]
    r = dep.post("/feedback", {"events": events})
    assert r.status_code == 200 and r.json() == {"written": 3}
    after = dep.post("/recommend", {"customer_ids": [cid], "campaign_id": "caps"}).json()
    assert after["results"][0]["status"] == "contact_capped"
    log = campaign_frame(CampaignLog(f"sqlite:///{dep.home / 'log.db'}").frame())
    mine = log[(log["campaign_id"] == "caps")].set_index("customer_id")
    assert set(mine.index) >= set(ids)
    assert mine.loc[cid, "arm"] == "treatment" and mine.loc[cid, "revenue"] == 42.5
    assert mine.loc[cid, "converted"] == 1.0 and mine.loc[cid, "offer_id"] == offer["offer_id"]
    assert set(mine["arm"]) == {"treatment", "control"}


def test_uplift_model_drives_the_offers_it_covers(dep):
    meta = dep.client.post("/metadata", json={}).json()
    assert meta["uplift_version"] == "1" and meta["uplift_offers"] == ["winback-10"]
    lapsed = dep.snapshot.loc[dep.snapshot["days_since_last"] >= 90, "customer_id"].tolist()
    body = dep.post("/recommend", {"customer_ids": lapsed[:500], "campaign_id": "uplift",
                                   "k": 0}).json()
    winback = [o for x in body["results"] for o in x["offers"] if o["offer_id"] == "winback-10"]
    assert winback, "no lapsed customer got the uplift-driven win-back offer"
    lifts = {round(o["p_response_with_contact"] - o["p_response_without_contact"], 6)
             for o in winback}
    assert all(o["source"] == "uplift" and "(uplift)" in o["reason"] for o in winback)
    assert len(lifts) > 1, "the effect should vary by customer, not be the prior's constant"


def test_feedback_log_closes_the_loop_into_uplift_training(dep):
    import numpy as np

    ids = known_ids(dep, 1000)
    body = dep.post("/recommend", {"customer_ids": ids, "campaign_id": "loop", "k": 0}).json()
    rng = np.random.default_rng(0)
    events = []
    for x in body["results"]:
        if x["arm"] is None:
            continue
        treated = x["arm"] == "treatment"
        if treated:
            events.append({"event": "sent", "customer_id": x["customer_id"],
                           "campaign_id": "loop", "offer_id": "", "channel": "email"})
        if rng.random() < (0.3 if treated else 0.1):
            events.append({"event": "converted", "customer_id": x["customer_id"],
                           "campaign_id": "loop", "revenue": 20.0})
    for lo in range(0, len(events), 500):
        assert dep.post("/feedback", {"events": events[lo:lo + 500]}).status_code == 200
    out = run("train", "uplift", "--campaign-log", f"sqlite:///{dep.home / 'log.db'}",
              "--campaign-id", "loop", "--features", str(dep.home / "snapshot"),
              "--tracking-uri", dep.tracking, cwd=dep.home)
    assert "registered uplift v2 as challenger" in out.replace("\n", " ")


def test_hot_reload_under_load_fails_no_request(dep):
    import mlflow

    from training import registry

    registry.configure(dep.tracking)
    scorer = registry.load_champion().unwrap_python_model().scorer
    ids = known_ids(dep, 20)
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=dep.url, headers={"X-API-Key": KEY}, timeout=30) as c:
            i = 0
            while not stop.is_set():
                r = c.post("/score", json={"customer_ids": [ids[i % len(ids)]]})
                i += 1
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    seen.append(r.json()["model_version"])

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        cols = [c for c in scorer.input_columns if c != "as_of"]
        example = dep.snapshot[cols].head(3).assign(as_of=END)
        with mlflow.start_run(run_name="reload-test"):
            version = registry.log_model(scorer, example, {"churn_roc_auc": 0.9,
                                                           "purchases_mae": 0.1})
        assert "champion is now" in registry.promote(force=True)
        deadline = time.time() + 120
        while time.time() < deadline and (not seen or seen[-1] != version):
            time.sleep(0.5)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]
    assert seen[0] == "1" and seen[-1] == version, (seen[:1], seen[-1:])
    meta = dep.client.post("/metadata", json={}).json()
    assert meta["model_version"] == version and meta["reloads"] >= 1


def test_redis_store_shares_snapshots_and_refreshes_without_restart(dep, redis_url):
    import redis

    from serving.config import ServeConfig
    from serving.state import Live
    from serving.store import MemoryStore, RedisStore

    redis.Redis.from_url(redis_url).flushdb()
    frame = MemoryStore(dep.home / "snapshot").snapshot()
    store = RedisStore(redis_url)
    first = store.publish(frame)
    assert store.version() == first
    pd.testing.assert_frame_equal(store.snapshot(), frame)
    cfg = ServeConfig(store=redis_url, tracking_uri=dep.tracking, api_key=KEY,
                      campaign_log=f"sqlite:///{dep.home / 'redis-log.db'}")
    replicas = [Live(cfg, watch=False), Live(cfg, watch=False)]
    assert {r.current.features_version for r in replicas} == {first}
    changed = frame.assign(days_since_last=frame["days_since_last"] + 30)
    second = store.publish(changed)
    assert second != first and all(r.check() for r in replicas)
    for r in replicas:
        assert r.current.features_version == second
        assert (r.current.scores["days_since_last"].to_numpy()
                == changed.set_index("customer_id").loc[r.current.scores.index,
                                                        "days_since_last"].to_numpy()).all()
    assert not replicas[0].check()


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(dep):
    generated, failures, out = schemathesis(dep)
    assert failures == 0, out[-4000:]
    assert generated >= 1000, out[-2000:]


def test_readme_what_if_row_is_accepted(dep):
    r = dep.post("/score_features", {"rows": [WHAT_IF]})
    assert r.status_code == 200, r.text


@pytest.mark.postgres
def test_batch_scoring_writes_the_risk_list_to_parquet_csv_and_postgres(dep, pg_url):
    import sqlalchemy as sa

    for out, bands in ((dep.home / "risk.parquet", []),
                       (dep.home / "risk.csv", ["--high-risk", "0.8", "--medium-risk", "0.5"])):
        text = run("score", "--features", str(dep.home / "snapshot"), "--out", str(out),
                   "--tracking-uri", dep.tracking, *bands, cwd=dep.home)
        assert f"{len(dep.snapshot):,} customers scored" in text
    parquet = pd.read_parquet(dep.home / "risk.parquet")
    csv = pd.read_csv(dep.home / "risk.csv", dtype={"customer_id": str})
    assert len(parquet) == len(csv) == len(dep.snapshot)
    assert parquet["value_at_risk"].is_monotonic_decreasing
    assert parquet["customer_id"].tolist() == csv["customer_id"].tolist()
    for frame, (high, medium) in ((parquet, (0.6, 0.3)), (csv, (0.8, 0.5))):
        p = frame["churn_probability"]
        expected = np.where(p >= high, "high", np.where(p >= medium, "medium", "low"))
        assert (frame["risk_band"] == expected).all()
    assert (csv["risk_band"] != parquet["risk_band"]).any()
    run("score", "--features", str(dep.home / "snapshot"), "--out", pg_url, "--table",
        "risk_list_test", "--tracking-uri", dep.tracking, cwd=dep.home)
    engine = sa.create_engine("postgresql+psycopg://" + pg_url.split("://", 1)[1])
    with engine.connect() as conn:
        table = pd.read_sql("SELECT * FROM risk_list_test", conn)
    assert len(table) == len(parquet)
    assert set(table["customer_id"]) == set(parquet["customer_id"])
    bad = subprocess.run([str(BIN / "retention"), "score", "--features", str(dep.home),
                          "--out", "x.txt", "--tracking-uri", dep.tracking], cwd=dep.home,
                         capture_output=True, text=True, env=clean_env())
    assert bad.returncode == 2 and "no feature partitions" in bad.stderr
    bad = subprocess.run([str(BIN / "retention"), "score", "--features", str(dep.home / "snapshot"),
                          "--out", "x.csv", "--high-risk", "0.2", "--tracking-uri", dep.tracking],
                         cwd=dep.home, capture_output=True, text=True, env=clean_env())
    assert bad.returncode == 2 and "medium must be below high" in bad.stderr, bad.stderr


def test_the_console_is_served_by_the_service_behind_its_own_sign_in(dep):
    anonymous = httpx.Client(base_url=dep.url, timeout=30)  # no API key: a browser
    page = anonymous.get("/console/", follow_redirects=False)
    assert page.status_code in (302, 303, 307) and "/console/signin" in page.headers["location"]
    form = anonymous.get("/console/signin")
    assert form.status_code == 200 and form.headers["content-type"].startswith("text/html")
    assert "<form" in form.text and "password" in form.text.lower()
    assert anonymous.post("/score", json={"customer_ids": ["x"]}).status_code == 401


def test_a_retried_feedback_event_is_written_once(dep):
    event = {"event": "converted", "customer_id": "retry-c1", "campaign_id": "retries",
             "offer_id": "winback-10", "revenue": 12.5, "event_id": "order-8841"}
    assert dep.post("/feedback", {"events": [event]}).json() == {"written": 1}
    assert dep.post("/feedback", {"events": [event]}).json() == {"written": 0}  # the retry
    again = {**event, "event_id": "order-8842"}  # another order, same fields
    assert dep.post("/feedback", {"events": [again]}).json() == {"written": 1}


def test_only_a_request_naming_a_campaign_logs_assignments(dep):
    ids = known_ids(dep, 50)
    log = CampaignLog(f"sqlite:///{dep.home / 'log.db'}")
    before = len(log.frame())
    body = dep.post("/recommend", {"customer_ids": ids, "k": 0}).json()
    assert body["campaign_id"] == "" and len(body["results"]) == len(ids)
    assert len(log.frame()) == before
    dep.post("/recommend", {"customer_ids": ids, "k": 0, "campaign_id": "named"})
    assigned = log.frame().query("campaign_id == 'named' and event == 'assigned'")
    assert set(assigned["customer_id"]) == {x for x in ids}


@pytest.mark.parametrize("body", [
    {"customer_ids": ["c1\x00"]},
    {"customer_ids": ["   "]},
    {"customer_ids": ["c1"], "campaign_id": "winter\tsale"},
])
def test_ids_with_control_characters_or_only_spaces_are_refused(dep, body):
    r = dep.post("/recommend", body)
    assert r.status_code == 422 and "error" in r.json()


def test_a_client_over_its_write_budget_gets_429_with_retry_after(trained):
    name = trained.serve_config("limited.yaml", trained.home / "snapshot", "limited.db")
    config = yaml.safe_load((trained.home / name).read_text())
    config.update(log_rows_per_second=1.0, log_rows_burst=1000)
    (trained.home / name).write_text(yaml.safe_dump(config))
    d = Deployment(trained.home, name)
    d.start()
    try:
        events = [{"event": "opened", "customer_id": f"b{i}", "campaign_id": "burst"}
                  for i in range(1000)]
        assert d.post("/feedback", {"events": events}).json() == {"written": 1000}
        more = [{**e, "campaign_id": "burst-2"} for e in events[:10]]
        r = d.post("/feedback", {"events": more})
        assert r.status_code == 429 and "write limit" in r.json()["error"]
        assert int(r.headers["retry-after"]) >= 1
        written = CampaignLog(f"sqlite:///{trained.home / 'limited.db'}").frame()
        assert len(written) == 1000  # nothing of the refused request was written
    finally:
        d.stop()


def test_the_cli_training_run_logs_its_stage_times(dep):
    import mlflow

    from training import registry

    registry.configure(dep.tracking)
    run = mlflow.search_runs(experiment_names=[registry.EXPERIMENT],
                             filter_string="tags.mlflow.runName LIKE 'train-%'").iloc[0]
    stages = {c.removeprefix("metrics.stage_seconds.") for c in run.index
              if c.startswith("metrics.stage_seconds.") and run[c] == run[c]}
    assert {"read", "features", "btyd", "fit_select", "refit", "evaluate", "log",
            "recommender"} <= stages
