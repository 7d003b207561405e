"""State lives in one home, not in whichever folder a command runs from; the API key is never
written to disk; a service that cannot find its campaign log says so and stops."""

from __future__ import annotations

import stat
import subprocess
import time
from pathlib import Path

import httpx
import mlflow
import yaml

from features.home import HOME_ENV, campaign_log_url, mlruns_dir, state_home
from tests.conftest import BIN, ROOT, Deployment, clean_env, free_port
from training import registry


def test_the_home_comes_from_the_option_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "env-home"))
    assert state_home() == tmp_path / "env-home"
    assert state_home(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv(HOME_ENV)
    assert state_home() == Path("~/.local/share/retention").expanduser().resolve()
    assert campaign_log_url(tmp_path) == f"sqlite:///{tmp_path / 'data' / 'campaign_log.db'}"


def test_the_embedded_store_does_not_follow_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        uri = registry.configure()
        assert uri == f"sqlite:///{mlruns_dir() / 'mlflow.db'}"
    assert not (tmp_path / "a" / "mlruns").exists() and not (tmp_path / "b" / "mlruns").exists()


def test_a_sqlite_tracking_uri_keeps_its_artifacts_beside_the_database(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # configure exports it: undone
    monkeypatch.chdir(tmp_path)
    database = tmp_path / "team" / "mlflow.db"
    registry.configure(f"sqlite:///{database}")
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "note.txt")
    where = Path(mlflow.get_run(run.info.run_id).info.artifact_uri.removeprefix("file://"))
    assert where.is_relative_to(database.parent / "artifacts")
    assert (where / "note.txt").read_text() == "hello"
    assert not (tmp_path / "mlruns").exists()


def test_serve_never_writes_the_api_key_and_keeps_its_config_private(tmp_path):
    home = tmp_path / "home"
    done = subprocess.run(
        [str(BIN / "retention"), "serve", "--home", str(home), "--features", str(tmp_path),
         "--api-key", "s3cret-key-value"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'empty' / 'mlflow.db'}"))
    assert done.returncode == 2, done.stderr[-2000:]  # no champion registered: stops there
    config = home / "serve.yaml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "s3cret" not in config.read_text()
    assert yaml.safe_load(config.read_text())["campaign_log"] == campaign_log_url(home)
    assert (home / "data" / "campaign_log.db").exists()  # serve creates a new log, and says so
    assert "new campaign log" in done.stdout


def test_a_service_without_its_campaign_log_says_so_and_stops(trained):
    name = trained.serve_config("lost-log.yaml", trained.home / "snapshot", "lost/log.db")
    (trained.home / "lost" / "log.db").unlink()
    d = Deployment(trained.home, name)
    log = trained.home / "lost-log.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "bentoml"), "serve", "serving.service:Retention", "--host", "127.0.0.1",
             "--port", str(free_port()), "--working-dir", str(ROOT)],
            cwd=trained.home, env=clean_env(RETENTION_SERVE_CONFIG=str(d.config)),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None:
                if "not found: contact caps" in log.read_text():
                    break
                time.sleep(0.5)
            text = log.read_text()
            assert "campaign log" in text and "not found: contact caps" in text, text[-2000:]
            assert not (trained.home / "lost" / "log.db").exists()  # nothing created silently
            try:
                ready = httpx.get(f"{d.url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                ready = False
            assert not ready
        finally:
            if proc.poll() is None:
                import os
                import signal

                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
