"""Shared fixtures: repo paths, the shared datasets, the loopback PostgreSQL and Redis of
`make test`, and the trained synthetic retailer with its service over real HTTP (`dep`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from features.campaign_log import CampaignLog
from features.home import HOME_ENV

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "configs" / "sources"
DATASETS = ROOT.parent / "shared" / "datasets"
BIN = Path(sys.executable).parent
KEY = "test-key"
END = "2024-01-01"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without MLflow settings earlier tests left behind
    (mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, **extra}


def run(*args: str, cwd: Path) -> str:
    """A `retention` command in `cwd`, which is also its state home: its MLflow store is
    cwd/mlruns unless told otherwise."""
    done = subprocess.run([str(BIN / "retention"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900, env=clean_env(RETENTION_HOME=str(cwd)))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


WORKER_SCRIPT = "_bentoml_impl.worker.service"  # how BentoML starts each worker process


class Deployment:
    """One `bentoml serve` of the service on a free loopback port, configured by
    `home / config` (its MLflow store is home/mlruns); `env` adds variables, e.g.
    RETENTION_WORKERS. With `serve_args` it is started as `retention serve --config ...`
    with those options instead."""

    def __init__(self, home: Path, config: str = "serve.yaml",
                 env: dict[str, str] | None = None, serve_args: list[str] | None = None) -> None:
        self.home = home
        self.config = home / config
        self.env = dict(env or {})
        self.serve_args = serve_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tracking = f"sqlite:///{home / 'mlruns' / 'mlflow.db'}"
        self.client = httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, timeout=60)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = clean_env(RETENTION_SERVE_CONFIG=str(self.config),
                        RETENTION_PORT=str(self.port), **self.env)
        self.log_path = self.home / f"server-{time.time_ns()}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        command = [str(BIN / "bentoml"), "serve", "serving.service:Retention", "--host",
                   "127.0.0.1", "--port", str(self.port), "--working-dir", str(ROOT)]
        if self.serve_args is not None:
            env[HOME_ENV] = str(self.home)
            command = [str(BIN / "retention"), "serve", "--config", str(self.config), "--host",
                       "127.0.0.1", "--port", str(self.port), *self.serve_args]
        self.proc = subprocess.Popen(command, cwd=self.home, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            text = self.log_path.read_text()
            assert self.proc.poll() is None and "startup failed" not in text, text[-3000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("service did not become ready in 180 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()

    def post(self, path: str, body: object) -> httpx.Response:
        return self.client.post(path, json=body)

    def workers(self) -> list[int]:
        """Pids of the live worker processes (children of the `bentoml serve` process)."""
        import psutil

        assert self.proc is not None
        found = []
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if WORKER_SCRIPT in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child.pid)
            except psutil.NoSuchProcess:
                continue
        return sorted(found)

    def started_workers(self) -> int:
        """How many worker processes finished starting so far (each logs it once)."""
        return self.log_path.read_text().count("Service retention initialized")

    def wait_until(self, what: str, ready: Callable[[], bool], seconds: float = 120) -> None:
        """Poll `ready` until it holds; fail naming `what` (with the server log) if it does
        not within `seconds`, or if the service exits."""
        deadline = time.time() + seconds
        while not ready():
            assert self.proc is not None and self.proc.poll() is None, \
                self.log_path.read_text()[-3000:]
            if time.time() > deadline:
                raise AssertionError(f"{what}: not within {seconds:.0f} s\n"
                                     f"{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the real PostgreSQL that `make test` starts (.ci/postgres.sh)."""
    url = os.environ.get("RETENTION_TEST_PG_URL")
    if not url:
        pytest.fail("RETENTION_TEST_PG_URL is not set: run `make test`, or export the URL that "
                    "`bash .ci/postgres.sh` prints")
    return url


def fresh_pg_database(pg_url: str, name: str) -> str:
    """A new, empty database `name` on the server of `pg_url` (dropped first if it exists,
    connections and all); its postgresql:// URL."""
    import psycopg

    base = pg_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.fail(f"{DATASETS} not found: the shared datasets sit beside the project checkout")
    return DATASETS


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis that `make test` starts (.ci/redis.sh)."""
    url = os.environ.get("RETENTION_TEST_REDIS_URL")
    if not url:
        pytest.fail("RETENTION_TEST_REDIS_URL is not set: run `make test`, or export the URL "
                    "that `bash .ci/redis.sh` prints")
    return url


class Trained:
    """A synthetic retailer's features, churn and uplift champions, trained once per session."""

    def __init__(self, home: Path) -> None:
        from features.synthetic import SyntheticConfig, generate, write

        self.home = home
        data = generate(SyntheticConfig(n_customers=1200, seed=3))
        self.paths = write(data, home / "demo")
        (home / "train.yaml").write_text("n_estimators: 60\n")
        run("features", "build", "--source", str(self.paths["transactions"]), "--as-of",
            f"2023-10-01,{END}", "--horizon", "90d", "--out", str(home / "snapshot"), cwd=home)
        run("train", "--source", str(self.paths["transactions"]), "--config",
            str(home / "train.yaml"), "--promote", cwd=home)
        run("train", "uplift", "--campaign-log", str(self.paths["campaign_log"]), "--features",
            str(home / "snapshot"), "--promote", cwd=home)
        self.customers = data.customers
        self.transactions = data.transactions
        self.snapshot = pd.read_parquet(home / "snapshot" / f"as_of={END}" / "part-0.parquet")

    def serve_config(self, name: str, features: Path, log: str) -> str:
        """Write a service config `name` serving `features`, feedback into sqlite `log`."""
        home = self.home
        CampaignLog(f"sqlite:///{home / log}")  # the service refuses to start on a missing log
        (home / name).write_text(yaml.safe_dump({
            "features": str(features), "offers": str(ROOT / "configs/offers/demo.yaml"),
            "customers": str(self.paths["customers"]), "campaign_log": f"sqlite:///{home / log}",
            "tracking_uri": f"sqlite:///{home / 'mlruns' / 'mlflow.db'}", "api_key": KEY,
            "reload_seconds": 1.0}))
        return name


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    return Trained(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def dep(trained):
    """The service over the trained snapshot (one per test module that asks for it)."""
    d = Deployment(trained.home, trained.serve_config("serve.yaml", trained.home / "snapshot",
                                                      "log.db"))
    d.customers = trained.customers
    d.transactions = trained.transactions
    d.snapshot = trained.snapshot
    d.start()
    yield d
    d.stop()


SCHEMATHESIS_CONFIG = """
# Rules across fields (recency <= T, event times up to now, ...) are not expressible in the
# OpenAPI document: data valid by the schema alone may be refused with a 422, as declared.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "422"]
"""


def schemathesis(d: Deployment, examples: int = 100, seed: int = 7) -> tuple[int, int, str]:
    """Schemathesis with every check against the service's OpenAPI document:
    (requests generated, failures, its output)."""
    import re

    config = d.home / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    done = subprocess.run(
        [str(BIN / "schemathesis"), "--config-file", str(config), "run", f"{d.url}/docs.json",
         "-H", f"X-API-Key: {KEY}", "--checks", "all", "-n", str(examples),
         "--seed", str(seed)],
        capture_output=True, text=True, timeout=900, cwd=d.home)
    m = re.search(r"(\d+) generated, (\d+) (?:passed|found (\d+) unique failures?)", done.stdout)
    assert m, done.stdout[-2000:]
    generated = int(m.group(1))
    failures = int(m.group(3)) if m.group(3) else generated - int(m.group(2))
    if done.returncode != 0:
        failures = max(failures, 1)
    return generated, failures, done.stdout
