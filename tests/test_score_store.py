"""Published scores in Redis (`retention score --publish`) and the service answering from them
(`scores:` in its config): the same answers as the in-process service on the same data,
without scoring at start, a new publish picked up without a restart, bounded versions, and a
store that goes away answered as degraded and 503, never a 500."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest
import yaml

from tests.conftest import KEY, Deployment, free_port, run
from tests.test_service import feature_payload

DB = 7  # a database of the test Redis no other test flushes


@pytest.fixture(scope="module")
def scores_url(redis_url):
    import redis

    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    redis.Redis.from_url(url).flushdb()
    return url


def store_config(trained, name: str, url: str) -> str:
    """A service config like the fixture's, answering from the score store at `url` (no
    feature snapshot: it is not needed)."""
    base = trained.serve_config(name, trained.home / "snapshot", f"{name}.db")
    cfg = yaml.safe_load((trained.home / base).read_text())
    cfg.pop("features")
    cfg["scores"] = url
    (trained.home / name).write_text(yaml.safe_dump(cfg))
    return name


@pytest.fixture(scope="module")
def published(trained, scores_url):
    out = run("score", "--features", str(trained.home / "snapshot"), "--publish", scores_url,
              cwd=trained.home)
    assert "version" in out
    d = Deployment(trained.home, store_config(trained, "serve-scores.yaml", scores_url))
    d.start()
    yield d
    d.stop()


def test_store_backed_service_answers_as_the_in_process_one(dep, published):
    ids = [*dep.snapshot["customer_id"].astype(str).iloc[::37][:40], "nobody-here"]
    a, b = dep.post("/score", {"customer_ids": ids}), published.post("/score",
                                                                     {"customer_ids": ids})
    assert a.status_code == b.status_code == 200, b.text
    assert a.json() == b.json()
    assert b.json()["results"][-1]["status"] == "unknown_customer"
    for body in ({"top_n": 10_000}, {"top_n": 25, "filters": {"bands": ["high", "medium"]}},
                 {"top_n": 50, "filters": {"tiers": ["gold", "platinum"], "min_clv": 100.0}},
                 {"top_n": 7, "filters": {"segments": ["At Risk", "Hibernating", "nobody"],
                                          "min_value_at_risk": 20.0}},
                 {"top_n": 5, "filters": {"bands": ["low"], "tiers": ["no-such-tier"]}}):
        a, b = dep.post("/risk_list", body), published.post("/risk_list", body)
        assert a.status_code == b.status_code == 200, b.text
        assert a.json() == b.json(), body
        assert dep.post("/risk_list.csv", body).text == published.post("/risk_list.csv",
                                                                       body).text
    assert len(dep.post("/risk_list", {"top_n": 10_000}).json()["results"]) == len(dep.snapshot)
    rows = {"rows": [feature_payload(dep, cid) for cid in ids[:5]]}
    assert dep.post("/score_features", rows).json() == published.post("/score_features",
                                                                      rows).json()
    rec = {"customer_ids": ids[:20], "k": 3}
    assert dep.post("/recommend", rec).json() == published.post("/recommend", rec).json()
    meta = published.post("/metadata", {}).json()
    assert meta["customers"] == dep.post("/metadata", {}).json()["customers"]


def test_store_backed_service_does_not_score_at_start(published):
    log = published.log_path.read_text()
    assert "scores 1 from" in log or "scores " in log
    assert "BTYD components refitted" not in log  # nothing of the population was scored


def test_the_console_reads_the_published_population_on_first_use(trained, published):
    from serving import answers
    from serving.config import load_config
    from serving.state import Live

    live = Live(load_config(trained.home / "serve-scores.yaml"), watch=False)
    assert live.current.scores.empty  # nothing of the population held for the API
    whole = live.for_console()
    assert whole is live.for_console() and whole.score_store is None
    config = trained.serve_config("serve-memory.yaml", trained.home / "snapshot", "memory.db")
    memory = Live(load_config(trained.home / config), watch=False).current
    ids = [str(c) for c in memory.scores.index]
    assert len(whole.scores) == len(ids)
    assert answers.score_ids(whole, ids) == answers.score_ids(memory, ids)


def test_a_new_publish_is_served_without_a_restart_and_old_versions_go(trained, published,
                                                                       scores_url):
    from serving.score_store import RedisScores

    store = RedisScores(scores_url)
    meta = store.meta(store.version())
    frame = store.frame(meta)
    cid = str(frame.index[0])
    before = published.post("/score", {"customer_ids": [cid]}).json()["results"][0]
    for shift in (0.5, 0.25):  # two publishes: with keep=2 the first version goes
        changed = frame.assign(clv=frame["clv"] + shift)
        version = store.publish(changed, model_version=meta.model_version,
                                model_run_id=meta.model_run_id,
                                features_version=meta.features_version,
                                tier_floors=meta.tier_floors, components=meta.components,
                                uplift_version=meta.uplift_version,
                                uplift_outcome=meta.uplift_outcome)

    def served_clv() -> float | None:
        r = published.post("/score", {"customer_ids": [cid]})
        # 503 while the service still holds the version the second publish retired
        assert r.status_code in (200, 503), r.text
        return r.json()["results"][0]["clv"] if r.status_code == 200 else None

    # The reload check may land between the two publishes and serve the first for a moment:
    # wait for the newest one, then check it is what is answered.
    newest = before["clv"] + 0.25
    published.wait_until("the newest publish served",
                         lambda: (clv := served_clv()) is not None and abs(clv - newest) < 1e-5,
                         30)
    after = published.post("/score", {"customer_ids": [cid]}).json()["results"][0]
    assert after["clv"] == pytest.approx(before["clv"] + 0.25, abs=1e-5)
    health = httpx.get(f"{published.url}/readyz", headers={"X-API-Key": KEY}).json()
    assert health["status"] == "ready" and health["scores_version"] == version
    versions = {k.split(":")[2] for k in store.used_keys()} - {"current", "counter",
                                                                 "versions"}
    assert versions == {version, str(int(version) - 1)}
    assert meta.version not in versions


def test_an_unreachable_store_is_degraded_and_503_not_500(trained, tmp_path):
    import redis

    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    d = None
    try:
        client = redis.Redis.from_url(url)
        for _ in range(50):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.1)
        run("score", "--features", str(trained.home / "snapshot"), "--publish", url,
            "--no-reasons", cwd=trained.home)
        d = Deployment(trained.home, store_config(trained, "serve-gone.yaml", url))
        d.start()
        cid = str(trained.snapshot["customer_id"].iloc[0])
        assert d.post("/score", {"customer_ids": [cid]}).json()["results"][0]["status"] == "ok"
        server.terminate()
        server.wait(10)

        def degraded() -> bool:
            r = httpx.get(f"{d.url}/readyz", headers={"X-API-Key": KEY}, timeout=10)
            return r.status_code == 200 and r.json()["status"] == "degraded"

        d.wait_until("readiness degraded", degraded, 30)
        assert "unreachable" in httpx.get(f"{d.url}/readyz", headers={"X-API-Key": KEY}
                                          ).json()["reason"]
        for path, body in (("/score", {"customer_ids": [cid]}), ("/risk_list", {"top_n": 3}),
                           ("/recommend", {"customer_ids": [cid]})):
            r = d.post(path, body)
            assert r.status_code == 503 and "Retry-After" in r.headers, (path, r.text)
            assert set(r.json()) == {"error", "detail"}  # the error shape (a 5xx names no cause)
    finally:
        if d is not None:
            d.stop()
        if server.poll() is None:
            server.kill()
