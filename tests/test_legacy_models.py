"""Models registered before the estimators moved into `training.models` load and answer as the
old code did: `tests/fixtures/legacy_models` holds a customer-scorer and an uplift pyfunc and
an item recommender saved with the old module layout, with their inputs and answers.

Every load runs in a fresh Python process, so that module aliases other tests installed in
this one cannot hide a failure.
"""

from __future__ import annotations

import importlib
import json
import os
import pickletools
import subprocess
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from training.registry import MOVED_MODULES, ScorerModel, UpliftPyfunc

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / "tests" / "fixtures" / "legacy_models"

PREDICT = """
import sys

import mlflow
import pandas as pd

folder, rows, out = sys.argv[1:]
frame = pd.read_csv(rows, dtype={"customer_id": str, "as_of": str})
mlflow.pyfunc.load_model(folder).predict(frame).to_parquet(out)
"""

RECOMMEND = """
import json
import sys

import mlflow

from training import registry

home, recommender, ids, out = sys.argv[1:]
registry.configure(home=home)
with mlflow.start_run() as run:
    mlflow.log_artifact(recommender, "recommender")
loaded = registry.load_recommender(run.info.run_id)
answers = loaded.recommend(json.loads(ids), k=5)
open(out, "w").write(json.dumps(answers))
"""


def fresh_python(code: str, *args: object) -> subprocess.CompletedProcess[str]:
    """Run `code` in a new interpreter from the project root, with the embedded MLflow store;
    its exit must be clean."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def assert_same_answers(got: pd.DataFrame, answers: Path) -> None:
    """Numbers equal to 1e-9, text exactly, column for column."""
    want = pd.read_csv(answers, dtype=str, keep_default_na=False)
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for column in want.columns:
        if pd.api.types.is_numeric_dtype(got[column]):
            np.testing.assert_allclose(got[column].to_numpy(dtype="float64"),
                                       want[column].astype("float64").to_numpy(),
                                       rtol=0, atol=1e-9, err_msg=column)
        else:
            assert got[column].astype(str).tolist() == want[column].tolist(), column


def test_the_fixture_uses_the_old_module_layout():
    """Without the alias map the scorer's pickle does not load: the fixture tests something."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, joblib; joblib.load(sys.argv[1])",
         str(LEGACY / "customer-scorer" / "artifacts" / "scorer.joblib")],
        cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "No module named 'training.btyd'" in done.stderr


@pytest.mark.parametrize(("folder", "rows", "answers"), [
    ("customer-scorer", "rows.csv", "scores.csv"),
    ("uplift", "uplift_rows.csv", "uplift_scores.csv"),
])
def test_a_pyfunc_saved_with_the_old_layout_answers_as_it_did(folder, rows, answers, tmp_path):
    out = tmp_path / "predictions.parquet"
    fresh_python(PREDICT, LEGACY / folder, LEGACY / rows, out)
    assert_same_answers(pd.read_parquet(out), LEGACY / answers)


def test_a_recommender_saved_with_the_old_layout_answers_as_it_did(tmp_path):
    want = json.loads((LEGACY / "recommender_answers.json").read_text())
    out = tmp_path / "answers.json"
    fresh_python(RECOMMEND, tmp_path / "mlruns", LEGACY / "recommender.joblib",
                 json.dumps(list(want)), out)
    got = json.loads(out.read_text())
    assert list(got) == list(want)
    for customer, items in want.items():
        assert [i["product_id"] for i in got[customer]] == [i["product_id"] for i in items]
        assert [i["reason"] for i in got[customer]] == [i["reason"] for i in items]
        np.testing.assert_allclose([i["score"] for i in got[customer]],
                                   [i["score"] for i in items], rtol=0, atol=1e-9)


def test_every_moved_module_has_a_home():
    """Each old name maps to an importable module of the model library, under the same name."""
    for old, new in MOVED_MODULES.items():
        assert new.startswith("training.models.")
        assert new.removeprefix("training.models.") == old.removeprefix("training.")
        assert importlib.import_module(new).__name__ == new


def test_the_wrappers_are_pickled_by_their_public_path():
    """Registered models name the wrapper class `training.registry.<name>`, wherever the class
    is defined inside the package."""
    for wrapper in (ScorerModel, UpliftPyfunc):
        names = [arg for _, arg, _ in pickletools.genops(cloudpickle.dumps(wrapper()))
                 if isinstance(arg, str)]
        assert names[:2] == ["training.registry", wrapper.__name__]
