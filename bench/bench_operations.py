"""Operations benchmark: the service under overload and failure, on loopback.

Setup (not timed), in a temp dir: a seeded synthetic retailer, its feature snapshot at the data
end and `retention train --promote` with --trees trees per booster, into a SQLite MLflow store.
The service is started as `retention serve --config ... --workers 2` (the default on a
2-core machine); the load generator is this process (raw asyncio HTTP/1.1, keep-alive).

1. Capacity: mixed traffic (/score with one known id, /score_features with one snapshot row,
   alternating), closed loop at --concurrency clients (default: workers x max_in_flight,
   what the service admits at once) for --seconds: answered per second (200s only: with
   connections spread unevenly over the workers, some are refused, and their clients wait
   the 1 s of Retry-After).
2. Overload: the same mix open loop at --overload x capacity for --overload-seconds: share of
   503s (each checked for Retry-After and the error shape), other errors, p50/p99 of the
   answered from each request's scheduled send time, per third of the run (a queue shows as
   a p99 growing from third to third). Goal: p99 of the answered under 1 s, not growing; 0
   errors other than 503.
3. Hot swap under load: the mix open loop at --load x capacity; a new champion promoted
   (`retention models promote --force`) and later a new snapshot published (file replaced)
   during the run. Goal: 0 failed requests, both swaps seen in the answers.
4. Worker kill: the mix open loop at --kill-load x capacity (what the surviving worker can
   carry: one worker is half the capacity); one worker killed with SIGKILL. Failed requests
   (kind), answers while the worker restarts, time until it is back.
5. Service kill: --senders clients post /feedback events (one per request, each with its own
   `event_id`), retrying until acknowledged (after a 429 or 503 as long as Retry-After says);
   every process of the service (arbiter and workers) gets SIGKILL mid-stream, and the service
   is started again on the same campaign log. Goal: every acknowledged event in the log once:
   0 lost, 0 duplicated.

The report replaces the "operations" section of bench/RESULTS.md.

    python bench/bench_operations.py           # the real run (about 7 minutes on 2 cores)
    python bench/bench_operations.py --quick   # smoke run; writes to a temp file unless --out
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from bench_serving import (
    BIN,
    ROOT,
    Connection,
    Server,
    _json,
    free_port,
    read_answer,
    request,
    retailer,
    retention,
)
from results_file import RESULTS, environment_table, write_section
from results_file import environment as machine

PACKAGES = ("bentoml", "uvicorn", "starlette", "mlflow", "xgboost-cpu", "psutil")
KEY = "bench-key"
WORKERS = 2
WORKER_SCRIPT = "_bentoml_impl.worker.service"
TARGET_P99_S = 1.0


# ------------------------------------------------------------------------------ the service


def serve(home: Path, config: Path, log: Path, port: int | None = None) -> Server:
    port = port or free_port()
    env = {**os.environ, "RETENTION_HOME": str(home),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return Server("retention serve", [str(BIN / "retention"), "serve", "--config", str(config),
                                      "--port", str(port), "--workers", str(WORKERS)],
                  env, home, port, "/readyz", log)


def workers(server: Server) -> list[int]:
    import psutil

    assert server.proc is not None
    out = []
    for child in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if WORKER_SCRIPT in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                out.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return sorted(out)


def rss_mb(pids: Sequence[int]) -> list[float]:
    import psutil

    return [psutil.Process(p).memory_info().rss / 2**20 for p in pids]


def started(log: Path) -> int:
    """Workers that finished starting (each logs it once)."""
    return log.read_text().count("Service retention initialized")


def wait(what: str, ready, seconds: float = 300) -> float:
    t0 = time.perf_counter()
    while not ready():
        if time.perf_counter() - t0 > seconds:
            raise SystemExit(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.1)
    return time.perf_counter() - t0


def start_all(server: Server) -> float:
    """Start and wait for every worker; seconds until all answer."""
    t0 = time.perf_counter()
    server.start()
    wait("all workers started", lambda: started(server.log) >= WORKERS)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- load generator


RESENT = Counter()  # requests sent again after their kept-alive connection closed unanswered


class Client(Connection):
    """A keep-alive connection that also keeps the last answer's headers, and counts in RESENT
    the requests sent again on a new connection because the kept one closed before any byte
    of an answer (as HTTP clients do for an idle connection the server closed; a request in
    flight on a killed worker looks the same, and a client that does not resend sees it fail).
    """

    head = b""

    async def send(self, raw: bytes, timeout: float) -> tuple[int, bytes]:
        if self.writer is None:
            return await super().send(raw, timeout)
        try:
            return await asyncio.wait_for(self._exchange(raw), timeout)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.close()
            if getattr(exc, "partial", b""):
                raise
        except BaseException:
            self.close()
            raise
        RESENT["requests"] += 1
        return await super().send(raw, timeout)

    async def _exchange(self, raw: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head, body = await read_answer(self.reader)
        self.head = head.lower()
        if b"connection: close" in self.head:
            self.close()
        return int(head.split(b" ", 2)[1]), body


@dataclass
class Outcome:
    """Every request of a run: when it was scheduled, its answer (status or exception name),
    its latency from the scheduled time (s), and the model version of a 200."""

    at: list[float] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    version: list[str] = field(default_factory=list)
    shed_ok: int = 0  # 503s with Retry-After and the {"error", "detail"} shape
    seconds: float = 0.0

    def count(self, kind: str) -> int:
        return sum(s == kind for s in self.status)

    def answered(self, lo: float = -1.0, hi: float = 1e18) -> np.ndarray:
        return np.array([lat for t, s, lat in zip(self.at, self.status, self.latency,
                                                 strict=True) if s == "200" and lo <= t < hi])

    def failed(self) -> Counter:
        return Counter(s for s in self.status if s != "200")


def version_of(body: bytes) -> str:
    match = re.search(rb'"model_version":\s*"([^"]*)"', body)
    return match.group(1).decode() if match else ""


async def one(conn: Client, raw: bytes, at: float, out: Outcome, origin: float) -> None:
    try:
        status, body = await conn.send(raw, 30.0)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        status, body = type(exc).__name__, b""
    out.at.append(at - origin)
    out.status.append(str(status))
    out.latency.append(time.perf_counter() - at)
    out.version.append(version_of(body) if status == 200 else "")
    if status == 503:
        retry = re.search(rb"retry-after:\s*(\d+)", conn.head)
        try:
            shape = set(json.loads(body)) == {"error", "detail"}
        except ValueError:
            shape = False
        out.shed_ok += bool(retry and int(retry.group(1)) >= 1 and shape)


async def open_loop(port: int, payloads: list[bytes], rate: float, seconds: float,
                    events: Sequence[tuple[float, object]] = ()) -> Outcome:
    """Requests sent at fixed times (`rate` per second) whatever the answers; `events` are
    (second, coroutine function) run during the stream, e.g. a promotion or a kill."""
    out = Outcome()
    idle: list[Client] = []
    for _ in range(16):
        conn = Client(port)
        await conn.send(payloads[0], 30.0)
        idle.append(conn)

    async def send(i: int, at: float) -> None:
        conn = idle.pop() if idle else Client(port)
        await one(conn, payloads[i % len(payloads)], at, out, origin)
        idle.append(conn)

    origin = time.perf_counter() + 0.01
    side = [asyncio.ensure_future(_later(origin + s, fn)) for s, fn in events]
    tasks = []
    for i in range(int(rate * seconds)):
        at = origin + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(send(i, at)))
    await asyncio.gather(*tasks, *side)
    out.seconds = time.perf_counter() - origin
    for conn in idle:
        conn.close()
    return out


async def _later(when: float, fn) -> None:
    await asyncio.sleep(max(when - time.perf_counter(), 0))
    await fn()


async def closed_loop(port: int, payloads: list[bytes], clients: int, seconds: float
                      ) -> Outcome:
    out = Outcome()
    origin = time.perf_counter()
    deadline = origin + seconds

    async def client(k: int) -> None:
        conn, i = Client(port), k
        while time.perf_counter() < deadline:
            await one(conn, payloads[i % len(payloads)], time.perf_counter(), out, origin)
            if out.status[-1] == "503":  # as told by Retry-After, not at once again
                await asyncio.sleep(1.0)
            i += clients
        conn.close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    out.seconds = time.perf_counter() - origin
    return out


def ms(values: np.ndarray, q: float) -> str:
    return f"{np.percentile(values, q) * 1e3:.0f}" if len(values) else "-"


def json_rows(snapshot, n: int, seed: int) -> list[dict]:
    """Up to n snapshot rows as /score_features takes them (checked as JSON, as sent)."""
    from serving.schemas import FeatureRow

    cols = list(FeatureRow.model_fields)
    out = []
    for rec in snapshot.sample(n=min(n, len(snapshot)), random_state=seed)[cols].to_dict(
            "records"):
        row = {k: _json(v) for k, v in rec.items()} | {"customer_id": str(rec["customer_id"])}
        try:
            FeatureRow.model_validate_json(json.dumps(row))
        except ValueError:
            continue
        out.append(row)
    if not out:
        raise SystemExit("no snapshot row is a valid /score_features row")
    return out


# --------------------------------------------------------------------------------- phases


def overload(port: int, payloads: list[bytes], a: argparse.Namespace, r: dict) -> None:
    print("capacity (closed loop) ...", flush=True)
    asyncio.run(closed_loop(port, payloads, a.concurrency, a.warmup))
    cap = asyncio.run(closed_loop(port, payloads, a.concurrency, a.seconds))
    r["capacity"] = len(cap.answered()) / cap.seconds
    r["capacity_p99"] = ms(cap.answered(), 99)
    r["capacity_errors"] = dict(cap.failed())
    rate = a.overload * r["capacity"]
    print(f"  {r['capacity']:.0f} answered/s; overload at {rate:.0f}/s ...", flush=True)
    out = asyncio.run(open_loop(port, payloads, rate, a.overload_seconds))
    third = a.overload_seconds / 3
    r["overload"] = {"rate": rate, "out": out, "thirds": [
        (out.answered(k * third, (k + 1) * third), sum(
            s == "503" and k * third <= t < (k + 1) * third
            for t, s in zip(out.at, out.status, strict=True)),
         sum(k * third <= t < (k + 1) * third for t in out.at)) for k in range(3)]}
    print(f"  503: {out.count('503')}/{len(out.status)}, others {out.failed()}, p99 of the "
          f"answered {ms(out.answered(), 99)} ms", flush=True)


def hot_swap(port: int, payloads: list[bytes], a: argparse.Namespace, r: dict, home: Path,
             tracking: str, features: Path, as_of: str) -> None:
    import mlflow
    import pandas as pd

    from training import registry

    registry.configure(tracking)
    scorer = registry.load_champion().unwrap_python_model().scorer
    example = pd.read_parquet(next(features.glob(f"as_of={as_of}/*.parquet")))
    cols = [c for c in scorer.input_columns if c != "as_of"]
    with mlflow.start_run(run_name="bench-swap"):
        challenger = registry.log_model(scorer, example[cols].head(3).assign(as_of=as_of),
                                        {"churn_roc_auc": 0.9, "purchases_mae": 0.1})
    part = next(features.glob(f"as_of={as_of}/*.parquet"))
    marks: dict[str, float] = {}

    async def promote() -> None:
        marks["promote"] = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "retention"), "models", "promote", "--force", "--tracking-uri", tracking,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=home)
        await proc.wait()

    async def publish() -> None:
        marks["publish"] = time.perf_counter()
        copy = part.with_suffix(".tmp")
        copy.write_bytes(part.read_bytes())
        os.replace(copy, part)  # a new file: a new snapshot version

    rate = a.load * r["capacity"]
    third = a.swap_seconds / 3
    print(f"hot swap at {rate:.0f}/s: promote v{challenger}, then a new snapshot ...",
          flush=True)
    log = Path(r["log"])
    before = log.read_text().count("reloaded:")
    out = asyncio.run(open_loop(port, payloads, rate, a.swap_seconds,
                                [(a.swap_seconds / 4, promote), (2 * third, publish)]))
    swaps = log.read_text().count("reloaded:") - before
    seen = Counter(v for v in out.version if v)
    r["swap"] = {"rate": rate, "out": out, "challenger": challenger, "seen": dict(seen),
                 "reloads": swaps, "last": out.version[-1] if out.version else ""}
    print(f"  failed {dict(out.failed())}, versions {dict(seen)}, reload lines {swaps}",
          flush=True)


def worker_kill(server: Server, payloads: list[bytes], a: argparse.Namespace, r: dict) -> None:
    pids = workers(server)
    victim = pids[0]
    n0 = started(server.log)
    marks: dict[str, float] = {}

    async def kill() -> None:
        os.kill(victim, signal.SIGKILL)
        marks["kill"] = time.perf_counter()
        while started(server.log) <= n0:
            await asyncio.sleep(0.05)
        marks["back"] = time.perf_counter()

    rate = a.kill_load * r["capacity"]
    print(f"worker kill at {rate:.0f}/s (pid {victim}) ...", flush=True)
    RESENT.clear()
    out = asyncio.run(open_loop(server.port, payloads, rate, a.kill_seconds,
                                [(a.kill_seconds / 4, kill)]))
    t_kill = a.kill_seconds / 4  # scheduled; the answers' times are relative to the same origin
    back = marks.get("back", marks["kill"]) - marks["kill"]
    during = out.answered(t_kill, t_kill + back)
    r["kill"] = {"rate": rate, "out": out, "back": back, "during": len(during),
                 "resent": RESENT["requests"],
                 "during_p99": ms(during, 99), "after": workers(server), "before": pids}
    print(f"  failed {dict(out.failed())}; back in {back:.1f} s; {len(during)} answered "
          f"meanwhile", flush=True)


def service_kill(home: Path, config: Path, a: argparse.Namespace, r: dict,
                 ids: list[str]) -> None:
    """Feedback events with client retries across a SIGKILL of the whole service."""
    import sqlalchemy as sa

    from features.campaign_log import CampaignLog
    from features.campaign_log import events as table
    from serving.schemas import FeedbackEvent

    with_id = "event_id" in FeedbackEvent.model_fields
    total, senders = a.events, a.senders
    now = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)
    times = [now - dt.timedelta(seconds=i) for i in range(total)]  # one per event: its mark
    campaign = f"bench-kill-{now:%Y%m%d%H%M%S}"  # this run's: a reused --home has older ones
    events = []
    for i in range(total):
        e = {"event": "sent", "customer_id": ids[i % len(ids)], "campaign_id": campaign,
             "offer_id": "winback-10", "channel": "email", "at": times[i].isoformat() + "Z"}
        if with_id:
            e["event_id"] = f"{campaign}-{i:06d}"
        events.append(e)
    server = serve(home, config, home / "service-kill-1.log")
    r["kill_start_1"] = start_all(server)
    acked: set[int] = set()
    stats = Counter()
    port = server.port
    marks: dict[str, float] = {}

    async def sender(k: int) -> None:
        conn = Client(port)
        for i in range(k, total, senders):
            raw = request("/feedback", {"events": [events[i]]}, KEY)
            while True:
                try:
                    status, body = await conn.send(raw, 10.0)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    stats[type(exc).__name__] += 1
                    conn.close()
                    await asyncio.sleep(0.2)
                    continue
                if status == 200:
                    acked.add(i)
                    stats["acknowledged"] += 1
                    break
                stats[str(status)] += 1
                if status not in (429, 503):
                    raise SystemExit(f"/feedback answered {status}: {body[:300]!r}")
                retry = re.search(rb"retry-after:\s*(\d+)", conn.head)
                await asyncio.sleep(int(retry.group(1)) if retry else 1)
        conn.close()

    live = {"server": server}

    async def killer() -> None:
        while len(acked) < total // 3:
            await asyncio.sleep(0.01)
        assert server.proc is not None
        doomed = workers(server)
        os.killpg(server.proc.pid, signal.SIGKILL)  # the arbiter ...
        for pid in doomed:  # ... and every worker (each in its own session), at once
            os.kill(pid, signal.SIGKILL)
        server.proc.wait()
        marks["killed"] = time.perf_counter()
        marks["acked_at_kill"] = len(acked)
        print(f"  killed the service after {len(acked)} acknowledgements; restarting ...",
              flush=True)
        live["server"] = serve(home, config, home / "service-kill-2.log", port)
        await asyncio.to_thread(start_all, live["server"])
        marks["back"] = time.perf_counter()

    async def run() -> None:
        await asyncio.gather(*(sender(k) for k in range(senders)), killer())

    print(f"service kill during {total} /feedback events from {senders} senders ...",
          flush=True)
    t0 = time.perf_counter()
    asyncio.run(run())
    r["kill_wall"] = time.perf_counter() - t0
    live["server"].stop()
    log = CampaignLog(yaml.safe_load(config.read_text())["campaign_log"])
    with log.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.at).where(
            table.c.campaign_id == campaign)).scalars().all()
    index = {t: i for i, t in enumerate(times)}
    per_event = Counter(index.get(t, -1) for t in rows)
    in_log = {i for i in per_event if i >= 0}
    r["service_kill"] = {
        "with_id": with_id, "events": total, "senders": senders, "stats": dict(stats),
        "acked": len(acked), "rows": len(rows), "lost": len(acked - in_log),
        "duplicated": sum(n - 1 for i, n in per_event.items() if i >= 0),
        "unknown": per_event.get(-1, 0),
        "acked_at_kill": marks.get("acked_at_kill"),
        "down": marks.get("back", 0) - marks.get("killed", 0),
    }
    print(f"  {r['service_kill']}", flush=True)


# --------------------------------------------------------------------------------- report


def report(r: dict, env: dict[str, str], argv: str) -> str:
    ov, sw, kl, sk = r["overload"], r["swap"], r["kill"], r["service_kill"]
    o: Outcome = ov["out"]
    answered = o.answered()
    p99s = [float(np.percentile(t[0], 99)) if len(t[0]) else float("nan")
            for t in ov["thirds"]]
    others = {k: v for k, v in o.failed().items() if k != "503"}
    growing = p99s[2] > 1.5 * p99s[0]
    ok_overload = (len(answered) > 0 and float(np.percentile(answered, 99)) < TARGET_P99_S
                   and not others and not growing and o.shed_ok == o.count("503"))
    swap_failed = sum(sw["out"].failed().values())
    ok_swap = (swap_failed == 0 and sw["last"] == str(sw["challenger"])
               and sw["reloads"] >= 2 * WORKERS)
    ok_kill = sk["lost"] == 0 and sk["duplicated"] == 0
    lines = [
        "## Operations under load and failure (`bench/bench_operations.py`)", "",
        f"Written by `bench/bench_operations.py` on {env['date']}; every number below comes "
        f"from that one run (`python bench/bench_operations.py{argv}`). The service runs as "
        f"`retention serve --workers {WORKERS}` (max_in_flight {r['max_in_flight']} per "
        f"worker) on loopback; the load generator is the bench process (raw asyncio HTTP/1.1, "
        "keep-alive). Served retailer: " + r["setup"] + ".", "",
        "### Goals", "", "| goal | measured | |", "|---|---|---|",
        f"| overload at {r['overload_x']:g}x capacity: p99 of the answered < 1 s, not growing; "
        f"0 errors other than 503 | p99 {ms(answered, 99)} ms (thirds: "
        + ", ".join(f"{x * 1e3:.0f}" for x in p99s) + f" ms); 503s "
        f"{o.count('503') / len(o.status):.0%}; other errors {sum(others.values())} | "
        f"{'met' if ok_overload else 'NOT met'} |",
        f"| hot swap under load (new champion, then new snapshot): 0 failed requests | "
        f"{swap_failed} failed of {len(sw['out'].status):,} | {'met' if ok_swap else 'NOT met'} "
        "|",
        f"| SIGKILL of the service during /feedback with client retries: 0 lost, 0 duplicated "
        f"| {sk['lost']} lost, {sk['duplicated']} duplicated of {sk['acked']:,} acknowledged | "
        f"{'met' if ok_kill else 'NOT met'} |",
        f"| SIGKILL of 1 of {WORKERS} workers under load: failed requests (measured, kinds "
        f"below) | {sum(kl['out'].failed().values())} failed, {kl['resent']} resent after "
        f"their connection closed unanswered, of {len(kl['out'].status):,} | measured |", "",
        "### Overload", "",
        f"Capacity: mixed traffic (`/score` one id, `/score_features` one row, alternating), "
        f"closed loop, {r['concurrency']} clients, {r['seconds']:g} s after {r['warmup']:g} s "
        f"of warm-up: **{r['capacity']:.0f} answered/s** (p99 {r['capacity_p99']} ms, errors "
        f"{r['capacity_errors'] or 0}). Then the same mix open loop at "
        f"{ov['rate']:.0f} req/s ({r['overload_x']:g}x) for {r['overload_seconds']:g} s; "
        "latency from each request's scheduled send time to the last byte of its answer.", "",
        "| part of the run | sent | answered 200 | 503 | p50 ms (200) | p99 ms (200) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k, (lat, shed, sent) in enumerate(ov["thirds"]):
        lines.append(f"| third {k + 1} | {sent:,} | {len(lat):,} | {shed:,} | {ms(lat, 50)} | "
                     f"{ms(lat, 99)} |")
    lines += [
        f"| whole run | {len(o.status):,} | {len(answered):,} | {o.count('503'):,} | "
        f"{ms(answered, 50)} | {ms(answered, 99)} |", "",
        f"Answered per second under overload: {len(answered) / o.seconds:.0f} "
        f"(capacity {r['capacity']:.0f}). Every 503 checked: {o.shed_ok:,} of "
        f"{o.count('503'):,} carried `Retry-After` and the `{{\"error\", \"detail\"}}` shape. "
        f"Other errors: {others or 'none'}. Worker memory (RSS, MB) before / after the "
        f"overload and hot-swap runs: {r['rss_before']} / {r['rss_after']}.", "",
        "### Hot swap under load", "",
        f"Open loop at {sw['rate']:.0f} req/s ({r['load_x']:g}x capacity) for "
        f"{r['swap_seconds']:g} s; at 1/4 `retention models promote --force` made v"
        f"{sw['challenger']} (same scorer, new version) the champion, at 2/3 the snapshot's "
        f"file was replaced (a new snapshot version). Requests: {len(sw['out'].status):,}; "
        f"failed: {dict(sw['out'].failed()) or 0}; answers by model version: {sw['seen']}; "
        f"last answer from v{sw['last']}; `reloaded:` log lines {sw['reloads']} "
        f"({WORKERS} workers x 2 swaps). p99 of the run: {ms(sw['out'].answered(), 99)} ms.", "",
        "### Worker kill", "",
        f"Open loop at {kl['rate']:.0f} req/s ({r['kill_load_x']:g}x capacity, within what "
        f"one worker carries) for {r['kill_seconds']:g} s; after a quarter, "
        f"one of {WORKERS} workers (pid {kl['before'][0]}) killed with SIGKILL. Failed "
        f"requests: **{sum(kl['out'].failed().values())}** of {len(kl['out'].status):,} "
        f"({dict(kl['out'].failed()) or 'none'}; a connection error is a request that was in "
        f"flight on the killed worker, a 503 one refused by the survivor). Sent again after "
        f"their kept-alive connection closed before any answer: {kl['resent']} (a client that "
        f"does not resend a POST sees these fail too). The replacement "
        f"was answering {kl['back']:.1f} s after the kill; meanwhile "
        f"the other worker answered {kl['during']:,} requests (p99 {kl['during_p99']} ms). "
        f"Workers before: {kl['before']}, after: {kl['after']}.", "",
        "### Service kill during /feedback", "",
        f"{sk['events']:,} `sent` events, one per request, from {sk['senders']} senders "
        f"(each event {'with its own `event_id`' if sk['with_id'] else 'with its own `at`'}),"
        " each retried until answered 200. After "
        f"{sk['acked_at_kill']:,} acknowledgements every process of the service got SIGKILL; "
        f"it was started again on the same campaign log ({sk['down']:.1f} s until every "
        f"worker answered) and the senders carried on. Attempts by answer: {sk['stats']}. "
        f"Campaign log afterwards: {sk['rows']:,} rows for {sk['acked']:,} acknowledged "
        f"events: {sk['lost']} lost, {sk['duplicated']} duplicated, {sk['unknown']} not sent "
        f"by the bench. Wall time {r['kill_wall']:.0f} s.", "",
        *environment_table({**env, **{"load average (1, 5, 15 min) at the start":
                                      r["load_average"]}}),
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--customers", type=int, default=None, help="served customers (10,000)")
    p.add_argument("--trees", type=int, default=100, help="trees per booster of the model")
    p.add_argument("--concurrency", type=int, default=None,
                   help="capacity clients (default: workers x max_in_flight, what the "
                        "service admits at once)")
    p.add_argument("--seconds", type=float, default=None, help="capacity run (10 s)")
    p.add_argument("--warmup", type=float, default=None, help="capacity warm-up (5 s)")
    p.add_argument("--overload", type=float, default=3.0, help="overload x capacity")
    p.add_argument("--overload-seconds", type=float, default=None, help="(30 s)")
    p.add_argument("--load", type=float, default=0.5, help="swap/kill load x capacity")
    p.add_argument("--kill-load", type=float, default=0.3, help="worker kill load x capacity")
    p.add_argument("--swap-seconds", type=float, default=None, help="(30 s)")
    p.add_argument("--kill-seconds", type=float, default=None, help="(30 s)")
    p.add_argument("--events", type=int, default=None, help="/feedback events (1,500)")
    p.add_argument("--senders", type=int, default=4, help="/feedback senders")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--home", type=Path, default=None,
                   help="work dir (default: a new temp dir); its data and model are reused")
    p.add_argument("--quick", action="store_true", help="smoke run, report to a temp file")
    p.add_argument("--out", type=Path, default=None, help=f"report path (default {RESULTS})")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    a = parse_args(argv)
    q = a.quick
    a.customers = a.customers or (2_000 if q else 10_000)
    a.seconds = a.seconds or (3.0 if q else 10.0)
    a.warmup = a.warmup if a.warmup is not None else (1.0 if q else 5.0)
    a.overload_seconds = a.overload_seconds or (6.0 if q else 30.0)
    a.swap_seconds = a.swap_seconds or (9.0 if q else 30.0)
    a.kill_seconds = a.kill_seconds or (12.0 if q else 30.0)
    a.events = a.events or (300 if q else 1_500)
    out = a.out or (Path(tempfile.gettempdir()) / "RESULTS-operations-quick.md" if q
                    else RESULTS)
    env = machine(PACKAGES)
    home = (a.home or Path(tempfile.mkdtemp(prefix="bench-operations-"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    r: dict = {"load_average": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
               "concurrency": a.concurrency, "seconds": a.seconds, "warmup": a.warmup,
               "overload_x": a.overload, "overload_seconds": a.overload_seconds,
               "load_x": a.load, "swap_seconds": a.swap_seconds, "kill_seconds": a.kill_seconds,
               "kill_load_x": a.kill_load}
    t0 = time.perf_counter()
    if not (home / "mlflow.db").exists():
        print(f"setup in {home}: {a.customers:,} customers, features, train ...", flush=True)
        retailer(home, a.customers, a.seed)
        (home / "train.yaml").write_text(f"n_estimators: {a.trees}\n")
        retention("train", "--source", str(home / "data" / "transactions.yaml"), "--config",
                  str(home / "train.yaml"), "--promote", cwd=home,
                  env={**os.environ, "MLFLOW_TRACKING_URI": tracking,
                       "RETENTION_HOME": str(home)})
    features = home / "features"
    as_of = sorted(p.name for p in features.glob("as_of=*"))[-1].removeprefix("as_of=")
    r["setup"] = (f"`retention demo-data --customers {a.customers:,} --seed {a.seed} "
                  f"--dirty 0`, features at {as_of} (90 days), `retention train --promote` "
                  f"with {a.trees} trees per booster (setup {time.perf_counter() - t0:.0f} s)")

    from serving.config import ServeConfig

    r["max_in_flight"] = ServeConfig.model_fields["max_in_flight"].default
    a.concurrency = r["concurrency"] = a.concurrency or WORKERS * r["max_in_flight"]
    from serving.store import MemoryStore

    snapshot = MemoryStore(features).snapshot()
    rows = json_rows(snapshot, 500, a.seed)
    ids = snapshot["customer_id"].astype(str).tolist()
    rng = random.Random(a.seed)
    payloads = []
    for k in range(1000):
        payloads.append(request("/score", {"customer_ids": [rng.choice(ids)]}, KEY) if k % 2
                        else request("/score_features", {"rows": [rows[k % len(rows)]]}, KEY))
    log_db = home / "campaign_log.db"
    from features.campaign_log import CampaignLog

    CampaignLog(f"sqlite:///{log_db}")
    config = home / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "features": str(features), "tracking_uri": tracking, "api_key": KEY,
        "campaign_log": f"sqlite:///{log_db}", "reload_seconds": 1.0}))

    server = serve(home, config, home / "service.log")
    r["log"] = str(server.log)
    print(f"starting the service on port {server.port} ...", flush=True)
    r["ready"] = start_all(server)
    try:
        r["rss_before"] = ", ".join(f"{x:.0f}" for x in rss_mb(workers(server)))
        overload(server.port, payloads, a, r)
        hot_swap(server.port, payloads, a, r, home, tracking, features, as_of)
        r["rss_after"] = ", ".join(f"{x:.0f}" for x in rss_mb(workers(server)))
        worker_kill(server, payloads, a, r)
    finally:
        server.stop()
    service_kill(home, config, a, r, ids)
    argv_text = "" if argv is None and len(sys.argv) == 1 else " " + " ".join(
        argv if argv is not None else sys.argv[1:])
    write_section("operations", report(r, env, argv_text), out)
    print(f"report written to {out} ({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
