"""`bentoml build` on bentofile.yaml: a Bento of the service with its package code, the
console's files and configs, and pyproject.toml's pinned dependencies (built in a temporary
BENTOML_HOME; the container image is not built here)."""

from __future__ import annotations

import subprocess
import tomllib

import yaml

from tests.conftest import BIN, ROOT, clean_env


def test_bentoml_build_packs_the_service_its_code_and_pinned_requirements(tmp_path):
    home = tmp_path / "bentoml"
    done = subprocess.run([str(BIN / "bentoml"), "build", "-o", "tag", str(ROOT)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env=clean_env(BENTOML_HOME=str(home)))
    assert done.returncode == 0, done.stderr[-3000:]
    (bento,) = [p for p in (home / "bentos" / "retention").iterdir() if p.is_dir()]
    meta = yaml.safe_load((bento / "bento.yaml").read_text())
    assert meta["service"] == "serving.service:Retention"
    routes = {r["route"] for r in meta["schema"]["routes"]}
    assert {"/score", "/score_features", "/risk_list", "/recommend", "/feedback"} <= routes
    src = bento / "src"
    files = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    for needed in ("serving/service.py", "serving/score_store.py", "features/contract.py",
                   "training/scorer.py", "serving/console/templates/overview.html",
                   "configs/offers/demo.yaml"):
        assert needed in files, needed
    assert not [f for f in files if f.startswith(("tests/", "bench/", "notebooks/", "data/"))
                or f.endswith(".pyc")]
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = [line.split("#")[0].strip() for line in pins]
    written = (bento / "env" / "python" / "requirements.txt").read_text().split()
    assert all(p in written for p in wanted), set(wanted) - set(written)
    packed = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["python"]["packages"]
    assert sorted(packed) == sorted(wanted)  # one list of pins: pyproject.toml's
