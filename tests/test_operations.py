"""Operations under load and failure, on the real service: a worker killed by SIGKILL under a
stream of requests, overload refused (503 with Retry-After) rather than queued, and a reload that
fails reported by /readyz while the previous bundle keeps answering. The Guard's limit and
headers are also checked in-process on a small Starlette app, where the timing is ours."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import threading
import time
from collections import Counter

import httpx
import pandas as pd
import pytest
import yaml

from serving.limits import Rebuild
from tests.conftest import END, KEY, Deployment

ALIAS = "ops"  # this module's own alias of customer-scorer: breaking it leaves `champion` alone


@pytest.fixture(scope="module")
def ops(trained):
    """`retention serve --workers 2`, at most 4 requests in flight per worker, serving a copy
    of the snapshot (so it can be broken) through the `ops` alias (so the champion of other
    modules stays)."""
    from mlflow import MlflowClient

    from training import registry

    registry.configure(f"sqlite:///{trained.home / 'mlruns' / 'mlflow.db'}")
    MlflowClient().set_registered_model_alias(registry.RegisteredModel.SCORER, ALIAS, "1")
    features = trained.home / "ops-snapshot"
    shutil.rmtree(features, ignore_errors=True)
    shutil.copytree(trained.home / "snapshot", features)
    name = trained.serve_config("ops.yaml", features, "ops-log.db")
    config = yaml.safe_load((trained.home / name).read_text())
    config.update(model_alias=ALIAS, max_in_flight=4)
    (trained.home / name).write_text(yaml.safe_dump(config))
    d = Deployment(trained.home, name, serve_args=["--workers", "2"])
    d.features = features
    d.snapshot = trained.snapshot
    d.start()
    d.wait_until("both workers started", lambda: d.started_workers() >= 2, 180)
    yield d
    d.stop()
    MlflowClient().delete_registered_model_alias(registry.RegisteredModel.SCORER, ALIAS)


def readyz(d: Deployment, key: bool = True) -> dict:
    r = httpx.get(f"{d.url}/readyz", headers={"X-API-Key": KEY} if key else {}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def all_workers(d: Deployment, check) -> bool:
    """`check` holds on 8 /readyz answers in a row: with two workers taking connections
    from one socket, both answered (or the odds of missing one are 1 in 128)."""
    return all(check(readyz(d)) for _ in range(8))


def rows(d: Deployment, n: int) -> list[dict]:
    from serving.schemas import FeatureRow

    out = []
    for rec in d.snapshot.head(n).to_dict("records"):
        row = {k: (None if pd.isna(rec[k]) else rec[k].item() if hasattr(rec[k], "item")
                   else rec[k]) for k in FeatureRow.model_fields if k in rec}
        out.append({**row, "customer_id": str(rec["customer_id"]), "as_of": END})
    return out


def test_readyz_reports_a_failing_reload_while_the_previous_bundle_answers(ops):
    from mlflow import MlflowClient

    from training import registry

    assert readyz(ops, key=False) == {"status": "ready"}
    first = readyz(ops)
    assert first["status"] == "ready" and first["reason"] is None
    served = ops.features / f"as_of={END}" / "part-0.parquet"
    broken_part = ops.features / "as_of=2024-02-01"
    client = MlflowClient()
    broken_version = None
    try:
        # A new snapshot (same rows, newer file): both workers reload and say so at INFO.
        stamp = served.stat().st_mtime_ns + 1_000_000_000
        os.utime(served, ns=(stamp, stamp))
        fresh = f"as_of={END}@{stamp}"
        ops.wait_until("both workers reloaded", lambda: all_workers(
            ops, lambda s: s["features_version"] == fresh and s["reloads"] == 1))
        lines = [ln for ln in ops.log_path.read_text().splitlines() if "reloaded:" in ln]
        assert len(lines) >= 2 and all("[INFO]" in ln for ln in lines), lines
        assert (f"model 1 unchanged, features {first['features_version']} -> {fresh}, "
                f"uplift {first['uplift_version']} unchanged") in lines[-1], lines[-1]

        # A newer snapshot without a column the model needs: degraded, still answering.
        frame = pd.read_parquet(served).drop(columns=["frequency"])
        broken_part.mkdir()
        frame.to_parquet(broken_part / "part-0.parquet")
        ops.wait_until("both workers degraded", lambda: all_workers(
            ops, lambda s: s["status"] == "degraded"))
        state = readyz(ops)
        assert "missing columns" in state["reason"] and "frequency" in state["reason"]
        assert "\n" not in state["reason"] and state["failed_at"]
        assert state["features_version"] == fresh and state["reloads"] == 1
        assert readyz(ops, key=False) == {"status": "degraded"}  # no detail without the key
        ids = ops.snapshot["customer_id"].head(3).tolist()
        r = ops.post("/score", {"customer_ids": ids})
        assert r.status_code == 200 and [x["status"] for x in r.json()["results"]] == ["ok"] * 3
        meta = ops.post("/metadata", {}).json()
        assert meta["features_version"] == fresh and meta["reloads"] == 1
        assert meta["reload_errors"] >= 1
        shutil.rmtree(broken_part)
        ops.wait_until("both workers ready again", lambda: all_workers(
            ops, lambda s: s["status"] == "ready" and s["reason"] is None))

        # A new model version whose artifacts cannot load, aliased: degraded, then rolled back.
        empty = ops.home / "ops-empty-model"
        empty.mkdir(exist_ok=True)
        broken_version = client.create_model_version(registry.RegisteredModel.SCORER,
                                                     str(empty)).version
        client.set_registered_model_alias(registry.RegisteredModel.SCORER, ALIAS,
                                          broken_version)
        ops.wait_until("degraded by the model", lambda: all_workers(
            ops, lambda s: s["status"] == "degraded" and s["model_version"] == "1"))
        r = ops.post("/score", {"customer_ids": ids})
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        client.set_registered_model_alias(registry.RegisteredModel.SCORER, ALIAS, "1")
        ops.wait_until("ready after the rollback", lambda: all_workers(
            ops, lambda s: s["status"] == "ready" and s["reloads"] == 1))
    finally:
        shutil.rmtree(broken_part, ignore_errors=True)
        client.set_registered_model_alias(registry.RegisteredModel.SCORER, ALIAS, "1")
        if broken_version is not None:
            client.delete_model_version(registry.RegisteredModel.SCORER, broken_version)


def test_overload_is_answered_503_with_retry_after_not_queued(ops):
    payload = {"rows": rows(ops, 300)}
    # Slow requests at once, against 2 workers x 4 in flight; more than even the headroom a
    # worker allows just after a reload (the test before this one reloads) lets through.
    burst = 2 * 4 * Rebuild.HEADROOM + 16
    start = threading.Barrier(burst)
    answers: list[httpx.Response] = []

    def one() -> None:
        with httpx.Client(base_url=ops.url, headers={"X-API-Key": KEY}, timeout=120) as c:
            start.wait()
            answers.append(c.post("/score_features", json=payload))

    threads = [threading.Thread(target=one) for _ in range(burst)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = Counter(r.status_code for r in answers)
    assert set(statuses) <= {200, 503} and statuses[503] >= 1 and statuses[200] >= 2, statuses
    for r in answers:
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) == 1
            body = r.json()
            assert set(body) == {"error", "detail"} and "busy" in body["error"], body
    # Every slot was given back: more requests one after another than the limit all pass.
    for _ in range(2 * 4 + 1):
        assert ops.post("/score_features", {"rows": payload["rows"][:1]}).status_code == 200


def test_a_killed_worker_is_restarted_while_the_other_answers(ops):
    ids = ops.snapshot["customer_id"].head(50).tolist()
    done: list[float] = []  # when each success was answered
    failed: list[str] = []
    stop = threading.Event()
    clients = 3  # under the in-flight limit of the surviving worker

    def stream(k: int) -> None:
        with httpx.Client(base_url=ops.url, headers={"X-API-Key": KEY}, timeout=30) as c:
            i = k
            while not stop.is_set():
                try:
                    r = c.post("/score", json={"customer_ids": [ids[i % len(ids)]]})
                    ok = r.status_code == 200
                    if not ok:
                        failed.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    ok = False
                    failed.append(type(exc).__name__)
                if ok:
                    done.append(time.monotonic())
                i += clients

    before = ops.workers()
    assert len(before) == 2, before
    threads = [threading.Thread(target=stream, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    try:
        ops.wait_until("a stream of answers", lambda: len(done) >= 100)
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        ops.wait_until("the worker replaced", lambda: ops.started_workers() >= 3
                       and len(ops.workers()) == 2 and victim not in ops.workers(), 180)
        replaced = time.monotonic()
        ops.wait_until("answers after the restart", lambda: sum(t > replaced for t in done)
                       >= 100)
    finally:
        stop.set()
        for t in threads:
            t.join()
    during = sum(killed < t <= replaced for t in done)
    # At most the one request each client had in flight on the killed worker fails.
    assert len(failed) <= clients, failed
    assert during >= 20, (during, failed)
    after = ops.workers()
    assert len(after) == 2 and victim not in after and set(after) & set(before), (before, after)
    print(f"worker kill: {len(failed)} failed {failed}, {during} answered while restarting")


def test_workers_end_when_the_arbiter_is_killed(ops):
    """SIGKILL of the process that runs the workers (OOM killer, `kill -9` of the service's
    pid): the workers end too, so the port is free for the service to be started again."""
    import psutil

    workers = ops.workers()
    assert len(workers) == 2
    os.kill(ops.proc.pid, signal.SIGKILL)
    ops.proc.wait(30)

    def ended(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.time() + 60
    while not all(ended(p) for p in workers):
        assert time.time() < deadline, [p for p in workers if not ended(p)]
        time.sleep(0.2)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", ops.port))


def test_admission_and_guard_limit_in_flight_and_set_retry_after():
    """Admission and the Guard around a Starlette app whose handlers wait until released: the
    limit holds exactly, and 429 and 503 answers get Retry-After (named in the message, or the
    default)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from serving.middleware import Admission, Guard

    release = asyncio.Event()

    async def slow(_request) -> JSONResponse:
        await release.wait()
        return JSONResponse({"ok": True})

    async def limited(_request) -> JSONResponse:  # as BentoML answers a 4xx BentoMLException
        return JSONResponse([{"error": "write limit reached: retry after 7 s"}], 429)

    async def plain(_request) -> JSONResponse:
        return JSONResponse({"error": "slow down"}, 503)

    async def own(_request) -> JSONResponse:
        return JSONResponse({"error": "later"}, 429, headers={"Retry-After": "30"})

    async def ready(_request) -> PlainTextResponse:
        return PlainTextResponse("\n")

    app = Starlette(routes=[Route(p, f, methods=["GET", "POST"]) for p, f in
                            (("/slow", slow), ("/limited", limited), ("/plain", plain),
                             ("/own", own), ("/readyz", ready))])
    state = {"status": "degraded", "reason": "DataError: snapshot lacks frequency"}
    guard = Guard(app, api_key=KEY, max_body_bytes=10_000, api_routes=["/slow"],
                  retry_after=2, readiness=lambda: state)
    admission = Admission(guard, max_in_flight=3, retry_after=2)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=admission)
        async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                     headers={"X-API-Key": KEY}) as c:
            held = [asyncio.create_task(c.post("/slow", json={})) for _ in range(3)]
            while admission.in_flight < 3:
                await asyncio.sleep(0)
            refused = await c.post("/slow", json={})
            assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
            assert set(refused.json()) == {"error", "detail"}
            assert (await c.get("/readyz")).json() == state  # health is never refused
            assert (await c.get("/readyz", headers={"X-API-Key": ""})).status_code == 200
            release.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200] * 3
            assert admission.in_flight == 0 and admission.refused == 1
            r = await c.get("/limited")
            assert (r.status_code, r.headers["retry-after"]) == (429, "7")
            assert r.json()["error"] == "write limit reached: retry after 7 s"
            r = await c.get("/plain")
            assert (r.status_code, r.headers["retry-after"]) == (503, "2")
            r = await c.get("/own")
            assert r.headers.get_list("retry-after") == ["30"]
            r = await c.head("/plain")
            assert (r.status_code, r.headers["retry-after"]) == (503, "2")
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as anonymous:
            r = await anonymous.get("/readyz")
            assert json.loads(r.content) == {"status": "degraded"}
            assert (await anonymous.post("/slow", json={})).status_code == 401

    asyncio.run(scenario())
