"""The test harness itself: `make test` refuses to run without its servers, and the CI scripts
wait for another package manager run instead of failing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def _script(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def test_make_test_stops_when_a_server_did_not_start(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / ".ci").mkdir()
    _script(tmp_path / ".ci" / "postgres.sh", "echo 'initdb: failed' >&2; exit 1\n")
    _script(tmp_path / ".ci" / "redis.sh", "echo redis://127.0.0.1:1/0\n")
    _script(tmp_path / ".ci" / "chromium.sh", "exit 0\n")
    _script(tmp_path / ".ci" / "java.sh", "exit 0\n")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()  # newer than pyproject.toml: no install
    _script(venv / "bin" / "python", f"touch {tmp_path}/pytest-ran\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_TEST_")}
    run = subprocess.run(["make", "-s", "test", f"VENV={venv}"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "no PostgreSQL URL" in run.stderr
    assert not (tmp_path / "pytest-ran").exists()


def test_apt_install_waits_for_the_package_manager_lock(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # apt-get stand-in: the lock is held for the first two calls, then it installs
    _script(bin_dir / "apt-get", f"""n=$(cat {tmp_path}/calls 2>/dev/null || echo 0)
echo $((n + 1)) > {tmp_path}/calls
if [ "$n" -lt 2 ]; then
  echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1" >&2
  exit 100
fi
echo "installed $*"
""")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", "-c", f". {ROOT}/.ci/apt.sh; sleep() {{ :; }}; "
                          "apt_install redis-server"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("waiting for another package manager") == 2
    assert "install -y -qq redis-server" in run.stderr


def test_apt_install_fails_at_once_on_other_errors(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "apt-get", "echo 'E: Unable to locate package nope' >&2; exit 100\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", "-c", f". {ROOT}/.ci/apt.sh; apt_install nope"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "Unable to locate package" in run.stderr and "waiting" not in run.stderr
