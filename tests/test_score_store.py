"""Published scores (`retention score --publish`) in Redis and in PostgreSQL, and the service
answering from them (`scores:` in its config): the same answers as the in-process service on
the same data, without scoring at start, a new publish picked up without a restart, bounded
versions, a store that goes away answered as degraded and 503, never a 500, and a model that
cannot load leaving /score answering while /score_features says 503."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import KEY, ROOT, Deployment, free_port, fresh_pg_database, run
from tests.test_service import feature_payload

DB = 7  # a database of the test Redis no other test flushes
PG_DB = "retention_score_store"  # a database of the test PostgreSQL no other test uses
KINDS = ("redis", "postgresql")


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def scores_url(kind, request):
    if kind == "redis":
        import redis

        url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + f"/{DB}"
        redis.Redis.from_url(url).flushdb()
        return url
    return fresh_pg_database(request.getfixturevalue("pg_url"), PG_DB)


def store_config(trained, name: str, url: str, **changes: object) -> str:
    """A service config like the fixture's, answering from the score store at `url` (no
    feature snapshot: it is not needed)."""
    base = trained.serve_config(name, trained.home / "snapshot", f"{name}.db")
    cfg = yaml.safe_load((trained.home / base).read_text())
    cfg.pop("features")
    cfg.update(scores=url, **changes)
    (trained.home / name).write_text(yaml.safe_dump(cfg))
    return name


def readyz(d: Deployment) -> dict:
    r = httpx.get(f"{d.url}/readyz", headers={"X-API-Key": KEY}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def live_versions(store) -> set[str]:
    """Every version whose data is still in the store."""
    if hasattr(store, "used_keys"):
        return {k.split(":")[2] for k in store.used_keys()} - {"current", "counter", "versions"}
    return set(store.live_versions())


@pytest.fixture(scope="module")
def published(trained, kind, scores_url):
    out = run("score", "--features", str(trained.home / "snapshot"), "--publish", scores_url,
              cwd=trained.home)
    assert "version" in out
    d = Deployment(trained.home, store_config(trained, f"serve-{kind}.yaml", scores_url))
    d.start()
    # ready once /score and /risk_list answer; the model of /score_features loads after
    d.wait_until("the model loaded", lambda: readyz(d)["model_loaded"], 120)
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
    assert "answering from scores " in log
    assert "BTYD components refitted" not in log  # nothing of the population was scored


def test_the_console_reads_the_published_population_on_first_use(trained, kind, published):
    from serving import answers
    from serving.config import load_config
    from serving.state import Live

    live = Live(load_config(trained.home / f"serve-{kind}.yaml"), watch=False)
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
    from serving.score_store import open_score_store

    store = open_score_store(scores_url)
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
    health = readyz(published)
    assert health["status"] == "ready" and health["scores_version"] == version
    versions = live_versions(store)
    assert versions == {version, str(int(version) - 1)}
    assert meta.version not in versions


class Server:
    """A private Redis or PostgreSQL on loopback that a test can stop."""

    def __init__(self, kind: str, where: Path) -> None:
        self.kind, self.where, self.port = kind, where, free_port()
        if kind == "redis":
            import redis

            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(where)], stdout=subprocess.DEVNULL)
            self.url = f"redis://127.0.0.1:{self.port}/0"
            client = redis.Redis.from_url(self.url)
            for _ in range(50):
                try:
                    client.ping()
                    break
                except redis.exceptions.ConnectionError:
                    time.sleep(0.1)
        else:
            # beside the shared test server's folder: the postgres user must reach it
            self.dir = Path(tempfile.gettempdir()) / f"retention-score-store-pg-{self.port}"
            done = subprocess.run(["bash", str(ROOT / ".ci/postgres.sh")], capture_output=True,
                                  text=True, timeout=300,
                                  env={**os.environ, "RETENTION_PG_PORT": str(self.port),
                                       "RETENTION_PG_DIR": str(self.dir)})
            assert done.returncode == 0, done.stderr
            self.url = done.stdout.strip()

    def _pg_ctl(self, *args: str) -> list[str]:
        pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
        command = [str(pg_ctl), "-D", str(self.dir), *args]
        if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0":
            command = ["runuser", "-u", "postgres", "--", *command]
        return command

    def restart(self) -> None:
        """PostgreSQL only: stopped at once (every connection dropped) and started again."""
        log = self.dir / "server.log"  # the server's output: a pipe would stay open
        done = subprocess.run(self._pg_ctl("restart", "-m", "immediate", "-w", "-l", str(log)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        assert done.returncode == 0, log.read_text()[-2000:]

    def stop(self) -> None:
        if self.kind == "redis":
            if self.proc.poll() is None:
                self.proc.terminate()
                self.proc.wait(10)
            return
        subprocess.run(self._pg_ctl("stop", "-m", "immediate"), capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def test_an_unreachable_store_is_degraded_and_503_not_500(trained, kind, tmp_path):
    server = Server(kind, tmp_path)
    d = None
    try:
        run("score", "--features", str(trained.home / "snapshot"), "--publish", server.url,
            "--no-reasons", cwd=trained.home)
        d = Deployment(trained.home, store_config(trained, f"serve-gone-{kind}.yaml",
                                                  server.url))
        d.start()
        cid = str(trained.snapshot["customer_id"].iloc[0])
        assert d.post("/score", {"customer_ids": [cid]}).json()["results"][0]["status"] == "ok"
        d.wait_until("the model loaded", lambda: readyz(d)["model_loaded"], 120)
        server.stop()
        d.wait_until("readiness degraded", lambda: readyz(d)["status"] == "degraded", 30)
        assert "unreachable" in readyz(d)["reason"]
        for path, body in (("/score", {"customer_ids": [cid]}), ("/risk_list", {"top_n": 3}),
                           ("/recommend", {"customer_ids": [cid]})):
            r = d.post(path, body)
            assert r.status_code == 503 and "Retry-After" in r.headers, (path, r.text)
            assert set(r.json()) == {"error", "detail"}  # the error shape (a 5xx names no cause)
    finally:
        if d is not None:
            d.stop()
        server.stop()


def test_a_restarted_postgresql_is_answered_from_at_once(trained, tmp_path):
    """Pooled connections the server dropped are replaced on the request that finds them."""
    server = Server("postgresql", tmp_path)
    d = None
    try:
        run("score", "--features", str(trained.home / "snapshot"), "--publish", server.url,
            "--no-reasons", cwd=trained.home)
        d = Deployment(trained.home, store_config(trained, "serve-pg-restart.yaml", server.url))
        d.start()
        ids = [str(c) for c in trained.snapshot["customer_id"].iloc[:4]]
        for cid in ids * 4:  # every pooled connection of every worker in use once
            assert d.post("/score", {"customer_ids": [cid]}).status_code == 200
        server.restart()
        codes = [d.post("/score", {"customer_ids": [cid]}).status_code for cid in ids * 4]
        assert codes == [200] * len(codes), codes
    finally:
        if d is not None:
            d.stop()
        server.stop()


def test_scores_answer_while_the_model_cannot_load(trained, tmp_path):
    """The worker is ready once the store answers: /score and /risk_list do, while
    /score_features and /recommend answer 503 with Retry-After and readiness says why, as
    long as the model is missing (here: an MLflow store without it)."""
    server = Server("redis", tmp_path)
    d = None
    try:
        run("score", "--features", str(trained.home / "snapshot"), "--publish", server.url,
            "--no-reasons", cwd=trained.home)
        empty = f"sqlite:///{tmp_path / 'no-models' / 'mlflow.db'}"
        d = Deployment(trained.home, store_config(trained, "serve-no-model.yaml", server.url,
                                                  tracking_uri=empty))
        d.snapshot = trained.snapshot  # for feature_payload
        d.start()
        cid = str(trained.snapshot["customer_id"].iloc[0])
        d.wait_until("readiness degraded", lambda: readyz(d)["status"] == "degraded", 60)
        health = readyz(d)
        assert health["model_loaded"] is False and health["reason"]
        assert d.post("/score", {"customer_ids": [cid]}).json()["results"][0]["status"] == "ok"
        assert d.post("/risk_list", {"top_n": 3}).status_code == 200
        for path, body in (("/score_features", {"rows": [feature_payload(d, cid)]}),
                           ("/recommend", {"customer_ids": [cid]})):
            r = d.post(path, body)
            assert r.status_code == 503 and "Retry-After" in r.headers, (path, r.text)
            assert set(r.json()) == {"error", "detail"}
    finally:
        if d is not None:
            d.stop()
        server.stop()
