"""The model page's facts, read from the MLflow run of the served `customer-scorer` version:
its metrics beside every baseline's, the grades (evaluation/grades.json) and the plots the
run logged (plots/*.png). Read once per run id and kept: a run's artifacts never change.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from training.candidates import OURS
from training.evaluate import Metric
from training.registry import Tag
from training.report import CAPTIONS

log = logging.getLogger("retention.console")

# Metric -> how the page names it.
LABELS: dict[Metric, str] = {
    Metric.CHURN_ROC_AUC: "Churn ROC-AUC",
    Metric.CHURN_PR_AUC: "Churn PR-AUC",
    Metric.CHURN_BRIER: "Churn Brier score",
    Metric.CHURN_ECE: "Churn calibration error (ECE)",
    Metric.PURCHASES_MAE: "Purchases MAE",
    Metric.VALUE_MAE: "Spend MAE",
    Metric.VALUE_GINI: "Value normalized Gini",
    Metric.VALUE_COVERAGE: "Value interval coverage",
}


@dataclass
class ModelRun:
    """What the model page shows of one run."""

    run_id: str
    found: bool
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)  # ours first, then the baselines
    table: list[dict] = field(default_factory=list)  # one row per metric
    grades: dict = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)  # name -> local PNG

    @property
    def grade(self) -> str | None:
        overall = self.grades.get("overall") if self.grades else None
        return (overall or {}).get("grade") or self.tags.get(Tag.GRADE.value)

    def captions(self) -> dict[str, str]:
        return {name: CAPTIONS.get(name, "") for name in self.plots}


def _metric_table(metrics: dict[str, float]) -> tuple[list[str], list[dict]]:
    by_model: dict[str, dict[Metric, float]] = {}
    for key, value in metrics.items():
        for m in Metric:
            if key.endswith("." + m.value):
                by_model.setdefault(key[: -len(m.value) - 1], {})[m] = value
    models = [OURS] + sorted(k for k in by_model if k != OURS)
    rows = []
    for m in Metric:
        values = {name: by_model.get(name, {}).get(m) for name in models}
        present = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
        if not present or OURS not in present:
            continue
        pick = max if m.higher_is_better else min
        best = pick(present, key=present.__getitem__)
        rows.append({"metric": str(m), "label": LABELS.get(m, str(m)),
                     "higher_is_better": m.higher_is_better, "values": values, "best": best})
    return [m for m in models if any(r["values"].get(m) is not None for r in rows)], rows


class ModelRuns:
    """Model runs read from MLflow, one download per run id."""

    def __init__(self) -> None:
        self._runs: dict[str, ModelRun] = {}
        self._lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="retention-console-")

    def get(self, run_id: str) -> ModelRun:
        with self._lock:
            if run_id not in self._runs:
                self._runs[run_id] = self._read(run_id)
            return self._runs[run_id]

    def _read(self, run_id: str) -> ModelRun:
        client = MlflowClient()
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            log.warning("model run %s not readable: %s", run_id, exc)
            return ModelRun(run_id=run_id, found=False)
        models, table = _metric_table(dict(run.data.metrics))
        out = ModelRun(run_id=run_id, found=True, params=dict(run.data.params),
                       tags=dict(run.data.tags), models=models, table=table)
        where = Path(self._dir.name) / run_id
        try:
            path = client.download_artifacts(run_id, "evaluation/grades.json", str(where))
            out.grades = json.loads(Path(path).read_text(encoding="utf-8"))
        except (MlflowException, OSError, ValueError):
            out.grades = {}
        try:
            listed = [a.path for a in client.list_artifacts(run_id, "plots")
                      if a.path.endswith(".png")]
            if listed:
                folder = Path(client.download_artifacts(run_id, "plots", str(where)))
                found = {Path(p).stem: folder / Path(p).name for p in listed}
                order = [n for n in CAPTIONS if n in found] + sorted(set(found) - set(CAPTIONS))
                out.plots = {n: found[n] for n in order}
        except (MlflowException, OSError):
            out.plots = {}
        return out
