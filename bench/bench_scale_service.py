"""Store-backed service benchmark: start time, memory and latency of the service answering from
published scores (`scores: redis://...` or `postgresql://...`), at growing published
populations.

Setup (not timed), in a temp dir: a seeded synthetic retailer of --customers customers, its
feature snapshot at the data end, `retention train --promote` with --trees trees per booster,
and `retention score --publish` of that snapshot (the scored sample) into the score store
(--store): a Redis server this script starts on loopback, or a database of its own on the
PostgreSQL of `.ci/postgres.sh` (or --pg-url). Each larger population is SYNTHESISED from the
scored sample, not scored: the sample's rows repeated under new customer ids (`sNNNNNNNN`),
published with the store's `publish` (the same schema, rank order and index as a real
publish).

For each --sizes population, `retention serve --config ... --workers 2` with `scores:` set:
1. Start: process start to the first `GET /readyz` 200 (a worker answers /score and
   /risk_list), to every worker started, and to the model of /score_features loaded in every
   worker (s); each worker's RSS (MB) and the store's size. Goal: <= 5 s to ready, RSS flat.
At the largest population:
2. `/score` with one random published id, open loop at --rate requests/s for --duration s:
   p50, p99 from each request's scheduled send time, errors. Goal: p99 <= 10 ms.
3. Mixed traffic (/score with one id, /score_features with one snapshot row, alternating),
   closed loop at workers x max_in_flight clients for --seconds: answered per second.
   Goal: >= 300/s.

The load generator and HTTP reader are bench/bench_serving.py's; the service starter and RSS
reader are bench/bench_operations.py's. The report replaces the "scale-service" section of
bench/RESULTS.md.

    python bench/bench_scale_service.py           # the real run (100k and 1M published)
    python bench/bench_scale_service.py --store postgresql   # the same from PostgreSQL
    python bench/bench_scale_service.py --quick   # smoke run; writes to a temp file unless --out
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml
from bench_operations import WORKERS, json_rows, rss_mb, serve, started, wait, workers
from bench_serving import (
    closed_loop,
    free_port,
    open_loop,
    request,
    retailer,
    retention,
)
from results_file import RESULTS, environment_table, write_section
from results_file import environment as machine

PACKAGES = ("bentoml", "redis", "psycopg", "uvicorn", "starlette", "pandas", "xgboost-cpu")
PG_DATABASE = "bench_scale_service"  # recreated by each --store postgresql run
KEY = "bench-key"
TARGET_START_S = 5.0
TARGET_P99_MS = 10.0
TARGET_CAPACITY = 300.0


def redis_server(home: Path) -> tuple[subprocess.Popen, str]:
    """A private Redis on loopback (no persistence); (process, URL)."""
    import redis

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(home)],
                            stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            return proc, url
        except redis.exceptions.ConnectionError:
            time.sleep(0.1)
    raise SystemExit("redis-server did not start")


def pg_database(url: str | None) -> str:
    """A fresh database of this benchmark on the PostgreSQL at `url` (default: the one
    `.ci/postgres.sh` starts or finds); its URL."""
    import sqlalchemy as sa

    if url is None:
        url = subprocess.run(["bash", str(Path(__file__).resolve().parents[1] / ".ci" /
                                          "postgres.sh")], capture_output=True, text=True,
                             check=True).stdout.strip()
    base = url.split("://", 1)[1].rsplit("/", 1)[0]
    engine = sa.create_engine(f"postgresql+psycopg://{base}/postgres",
                              isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {PG_DATABASE}"))
    engine.dispose()
    return f"postgresql://{base}/{PG_DATABASE}"


def store_mb(store) -> float:
    """What the store holds for all its versions (MB): Redis's used memory, or the size of
    PostgreSQL's score tables with their indexes."""
    if hasattr(store, "client"):
        return store.client.info("memory")["used_memory"] / 2**20
    import psycopg

    with psycopg.connect(store.url) as conn:
        size = conn.execute(
            "SELECT sum(pg_total_relation_size(format('%I.%I', schemaname, tablename))) "
            "FROM pg_tables WHERE schemaname = 'retention_scores'").fetchone()[0]
    return float(size or 0) / 2**20


def model_loaded(server) -> int:
    """Workers whose model for /score_features has loaded (each logs it once)."""
    return server.log.read_text().count("for /score_features and /recommend in")


def synthesise(sample: pd.DataFrame, n: int) -> pd.DataFrame:
    """n customers: the scored sample's rows repeated under new ids."""
    reps = -(-n // len(sample))
    frame = pd.concat([sample] * reps, ignore_index=True).iloc[:n]
    frame.index = pd.Index([f"s{i:08d}" for i in range(n)], name="customer_id")
    return frame


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--customers", type=int, default=None, help="scored sample (5,000)")
    p.add_argument("--sizes", default=None, help="published populations (100000,1000000)")
    p.add_argument("--trees", type=int, default=100, help="trees per booster of the model")
    p.add_argument("--rate", type=float, default=300.0, help="/score requests per second")
    p.add_argument("--duration", type=float, default=None, help="/score run (20 s)")
    p.add_argument("--seconds", type=float, default=None, help="capacity run (10 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store", choices=("redis", "postgresql"), default="redis",
                   help="the score store published to and served from")
    p.add_argument("--pg-url", default=None, help="PostgreSQL server for --store postgresql "
                   "(default: `bash .ci/postgres.sh`); the benchmark makes its own database")
    p.add_argument("--home", type=Path, default=None, help="work dir (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="smoke run, report to a temp file")
    p.add_argument("--out", type=Path, default=None, help=f"report path (default {RESULTS})")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    a = parse_args(argv)
    q = a.quick
    a.customers = a.customers or (1_500 if q else 5_000)
    sizes = [int(s) for s in (a.sizes or ("10000,50000" if q else "100000,1000000")).split(",")]
    a.duration = a.duration or (5.0 if q else 20.0)
    a.seconds = a.seconds or (3.0 if q else 10.0)
    out = a.out or (Path(tempfile.gettempdir()) / "RESULTS-scale-service-quick.md" if q
                    else RESULTS)
    env = machine(PACKAGES)
    home = (a.home or Path(tempfile.mkdtemp(prefix="bench-scale-service-"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    run_env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "RETENTION_HOME": str(home)}
    t0 = time.perf_counter()
    if not (home / "mlflow.db").exists():
        print(f"setup in {home}: {a.customers:,} customers, features, train ...", flush=True)
        retailer(home, a.customers, a.seed)
        (home / "train.yaml").write_text(f"n_estimators: {a.trees}\n")
        retention("train", "--source", str(home / "data" / "transactions.yaml"), "--config",
                  str(home / "train.yaml"), "--promote", cwd=home, env=run_env)
    features = home / "features"
    redis_proc, url = (redis_server(home) if a.store == "redis"
                       else (None, pg_database(a.pg_url)))
    r: dict = {"load_average": ", ".join(f"{x:.2f}" for x in os.getloadavg()), "sizes": []}
    try:
        t1 = time.perf_counter()
        retention("score", "--features", str(features), "--publish", url, cwd=home,
                  env=run_env)
        r["sample_publish_s"] = time.perf_counter() - t1
        from features.campaign_log import CampaignLog
        from serving.config import ServeConfig
        from serving.score_store import RedisScores, open_score_store
        from serving.store import MemoryStore

        store = RedisScores(url, timeout=60) if a.store == "redis" else open_score_store(url)
        meta = store.meta(store.version())
        sample = store.frame(meta)
        snapshot = MemoryStore(features).snapshot()
        rows = json_rows(snapshot, 500, a.seed)
        r["setup"] = (f"`retention demo-data --seed {a.seed}` ({len(snapshot):,} customers in "
                      f"the snapshot), features, `retention train --promote` with {a.trees} "
                      f"trees per "
                      f"booster, `retention score --publish` of the {len(sample):,} customers "
                      f"({r['sample_publish_s']:.1f} s); larger populations synthesised from "
                      f"that scored sample (setup {time.perf_counter() - t0:.0f} s)")
        log_db = home / "campaign_log.db"
        CampaignLog(f"sqlite:///{log_db}")
        config = home / "serve.yaml"
        config.write_text(yaml.safe_dump({
            "scores": url, "tracking_uri": tracking, "api_key": KEY,
            "campaign_log": f"sqlite:///{log_db}", "reload_seconds": 5.0}))
        max_in_flight = ServeConfig.model_fields["max_in_flight"].default
        for i, n in enumerate(sizes):
            print(f"publishing {n:,} synthesised customers ...", flush=True)
            frame = synthesise(sample, n)
            t1 = time.perf_counter()
            store.publish(frame, model_version=meta.model_version,
                          model_run_id=meta.model_run_id,
                          features_version=meta.features_version,
                          tier_floors=meta.tier_floors, components=meta.components,
                          uplift_version=meta.uplift_version, uplift_outcome=meta.uplift_outcome)
            publish_s = time.perf_counter() - t1
            del frame
            used = store_mb(store)
            server = serve(home, config, home / f"service-{n}.log")
            print(f"starting the service ({n:,} published) ...", flush=True)
            t1 = time.perf_counter()
            ready = server.start()
            wait("all workers started", lambda s=server: started(s.log) >= WORKERS)
            all_started = time.perf_counter() - t1
            wait("the model loaded", lambda s=server: model_loaded(s) >= WORKERS)
            loaded = time.perf_counter() - t1
            row = {"n": n, "publish_s": publish_s, "store_mb": used, "ready_s": ready,
                   "workers_s": all_started, "model_s": loaded,
                   "rss": rss_mb(workers(server))}
            try:
                if i == len(sizes) - 1:
                    rng = random.Random(a.seed)
                    ids = [f"s{rng.randrange(n):08d}" for _ in range(2000)]
                    scores = [request("/score", {"customer_ids": [c]}, KEY) for c in ids]
                    mixed = [scores[k] if k % 2 else
                             request("/score_features", {"rows": [rows[k % len(rows)]]}, KEY)
                             for k in range(1000)]
                    print("warm-up, /score open loop, mixed closed loop ...", flush=True)
                    asyncio.run(closed_loop(server.port, mixed, 8, 2.0))
                    r["score"] = asyncio.run(open_loop(server.port, scores, a.rate, a.duration))
                    r["mixed"] = asyncio.run(closed_loop(server.port, mixed,
                                                         WORKERS * max_in_flight, a.seconds))
                    r["concurrency"] = WORKERS * max_in_flight
                    row["rss_after"] = rss_mb(workers(server))
            finally:
                server.stop()
            r["sizes"].append(row)
            print(f"  ready {ready:.1f} s, RSS {row['rss']}", flush=True)
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(30)
    argv_text = "" if argv is None and len(sys.argv) == 1 else " " + " ".join(
        argv if argv is not None else sys.argv[1:])
    section = "scale-service" if a.store == "redis" else "scale-service-postgresql"
    write_section(section, report(r, env, argv_text, a), out)
    print(f"report written to {out} ({time.perf_counter() - t0:.0f} s in all)")


def report(r: dict, env: dict[str, str], argv: str, a: argparse.Namespace) -> str:
    sizes = r["sizes"]
    first, last = sizes[0], sizes[-1]
    start_ok = all(s["ready_s"] <= TARGET_START_S for s in sizes)
    growth = max(last["rss"]) - max(first["rss"])
    score, mixed = r["score"], r["mixed"]
    held = "Redis used" if a.store == "redis" else "score tables"
    lines = [
        f"## Store-backed service, {'Redis' if a.store == 'redis' else 'PostgreSQL'} "
        "(`bench/bench_scale_service.py`)", "",
        f"Run: `python bench/bench_scale_service.py{argv}`. Load average at the start: "
        f"{r['load_average']}.", "",
        *environment_table(env), "",
        f"Setup: {r['setup']}.", "",
        f"| published customers | publish (s) | {held} (MB) | start to /readyz 200 (s) | "
        "all workers started (s) | model loaded in every worker (s) | "
        "worker RSS at start (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sizes:
        lines.append(f"| {s['n']:,} | {s['publish_s']:.1f} | {s['store_mb']:.0f} | "
                     f"{s['ready_s']:.1f} | {s['workers_s']:.1f} | {s['model_s']:.1f} | "
                     f"{', '.join(f'{x:.0f}' for x in s['rss'])} |")
    lines += [
        "",
        f"At {last['n']:,} published customers, {WORKERS} workers:", "",
        "| measure | value | goal | met |", "|---|---:|---:|:-:|",
        f"| start to /readyz 200, largest population | {last['ready_s']:.1f} s | "
        f"<= {TARGET_START_S:.0f} s | {'yes' if start_ok else 'no'} |",
        f"| worker RSS growth, {first['n']:,} -> {last['n']:,} customers | {growth:+.0f} MB | "
        f"flat | - |",
        f"| `/score` p50 / p99 at {a.rate:.0f} req/s open loop ({a.duration:.0f} s) | "
        f"{score.pct(50):.1f} / {score.pct(99):.1f} ms | p99 <= {TARGET_P99_MS:.0f} ms | "
        f"{'yes' if score.pct(99) <= TARGET_P99_MS else 'no'} |",
        f"| `/score` errors | {score.errors} {score.kinds or ''} | 0 | "
        f"{'yes' if not score.errors else 'no'} |",
        f"| mixed capacity, closed loop at {r['concurrency']} clients ({a.seconds:.0f} s) | "
        f"{mixed.throughput:.0f}/s (p99 {mixed.pct(99):.0f} ms, errors {mixed.errors} "
        f"{mixed.kinds or ''}) | >= {TARGET_CAPACITY:.0f}/s | "
        f"{'yes' if mixed.throughput >= TARGET_CAPACITY else 'no'} |",
        f"| worker RSS after the load runs | {', '.join(f'{x:.0f}' for x in last['rss_after'])}"
        f" MB | - | - |",
        "",
        "A worker is ready once the store answers (the published version's metadata and its "
        "risk-list index: 19 bytes per customer, band, tier and segment codes, value at risk "
        "and CLV); the model for /score_features and /recommend loads right after, in the "
        "background (503 with Retry-After until then). Rows are read from the store per "
        "request. Populations beyond the scored sample are the sample's scored rows repeated "
        "under new ids, not scored.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
