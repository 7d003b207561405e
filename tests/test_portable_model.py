"""A registered `customer-scorer` carries its code and pinned requirements: it loads and answers
in a Python where this project is not importable, from the code inside the model's folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from training.registry import configure, load_artifact
from training.registry.pyfunc import requirements
from training.registry.tracking import log_model

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy_models"

# Hides the project's editable install (its import finder and any path entry into the
# checkout), checks that `training` is then not importable, loads the model and predicts.
WITHOUT_PROJECT = """
import importlib, importlib.util, json, sys

root, model, rows, out = sys.argv[1:]
sys.meta_path = [f for f in sys.meta_path
                 if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path_hooks = [h for h in sys.path_hooks
                  if not getattr(h, "__module__", "").startswith("__editable__")]
sys.path = [p for p in sys.path if p not in ("", ".", root)]
sys.path_importer_cache.clear()
importlib.invalidate_caches()
assert importlib.util.find_spec("training") is None, "the project is still importable"

import mlflow
import pandas as pd

frame = pd.read_csv(rows, dtype={"customer_id": str, "as_of": str})
mlflow.pyfunc.load_model(model).predict(frame).to_parquet(out)
print(json.dumps({name: sys.modules[name].__file__ for name in
                  ("training", "training.scorer", "training.models.clv", "features")}))
"""


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """A scorer logged by `log_model` into a fresh store: its local folder, rows, answers."""
    home = tmp_path_factory.mktemp("portable")
    configure(home=home / "mlruns")
    scorer = load_artifact(LEGACY / "customer-scorer" / "artifacts" / "scorer.joblib")
    rows = pd.read_csv(LEGACY / "rows.csv", dtype={"customer_id": str, "as_of": str})
    with mlflow.start_run():
        version = log_model(scorer, rows.head(3), {})
    folder = Path(mlflow.artifacts.download_artifacts(
        f"models:/customer-scorer/{version}", dst_path=str(home / "model")))
    return folder, rows, mlflow.pyfunc.load_model(str(folder)).predict(rows)


def test_the_model_loads_and_answers_where_the_project_is_not_installed(logged, tmp_path):
    folder, rows, answers = logged
    csv, out = tmp_path / "rows.csv", tmp_path / "answers.parquet"
    rows.to_csv(csv, index=False)
    root = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    done = subprocess.run([sys.executable, "-c", WITHOUT_PROJECT, root, str(folder), str(csv),
                           str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    files = json.loads(done.stdout.strip().splitlines()[-1])
    code = (folder / "code").resolve()
    for name, file in files.items():
        assert Path(file).resolve().is_relative_to(code), (name, file)
    pd.testing.assert_frame_equal(pd.read_parquet(out), answers)


def test_the_model_pins_what_its_code_imports(logged):
    folder = logged[0]
    pinned = dict(line.split("==") for line in
                  (folder / "requirements.txt").read_text().split() if "==" in line)
    for dist in ("mlflow", "numpy", "pandas", "scipy", "scikit-learn", "xgboost-cpu", "joblib",
                 "numba"):  # numba: imported on first use, by big batches
        assert dist in pinned, dist
    assert not {"bentoml", "pyspark", "redis", "psycopg"} & set(pinned)
    assert [line for line in requirements() if line.startswith("numpy==")] == [
        f"numpy=={pinned['numpy']}"]
    assert (folder / "code" / "training" / "scorer.py").exists()
    assert (folder / "code" / "features" / "__init__.py").exists()
