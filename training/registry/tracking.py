"""Tracking: where MLflow writes, and one run per training job with its registered version.

A `customer-scorer` run logs its parameters, metrics, plots, tables, grades, lineage and model
card, registers the scorer and tags the version with its gate metrics; an `uplift` run does
the same for a campaign's uplift model. Each new version becomes the `challenger`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import joblib
import mlflow
import pandas as pd
from mlflow import MlflowClient

from features.home import mlruns_dir
from training.candidates import OURS, Target, selection_rule
from training.evaluate import Metric
from training.registry.names import EXPERIMENT, RECOMMENDER_ARTIFACT, Alias, RegisteredModel, Tag
from training.registry.promotion import head_to_head
from training.registry.pyfunc import ScorerModel, UpliftPyfunc, code_paths, requirements

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from training.models.recommender import ItemRecommender
    from training.scorer import CustomerScorer
    from training.train import TrainConfig, TrainResult
    from training.uplift.job import UpliftRun


def configure(tracking_uri: str | None = None, home: str | Path | None = None) -> str:
    """Point MLflow at `tracking_uri`, $MLFLOW_TRACKING_URI, or the embedded store.

    Embedded: a SQLite database and local artifacts under `home` (default: `mlruns/` of the
    state home, `features.home`), whatever folder this runs from. A SQLite URI given by the
    caller or the environment keeps its artifacts beside its database, not in the working
    directory. Any MLflow URI works instead, e.g. a team's `mlflow server` on PostgreSQL.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    artifact_root = None
    if not uri:
        root = Path(home).resolve() if home else mlruns_dir()
        root.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        artifact_root = (root / "artifacts").as_uri()
    elif uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        artifact_root = (database.resolve().parent / "artifacts").as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_root)
    mlflow.set_experiment(EXPERIMENT)
    return uri


def _tag_challenger(model: RegisteredModel, version: str, tags: Mapping[str, object]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model, version, key, str(value))
    client.set_registered_model_alias(model, Alias.CHALLENGER, version)


def log_model(scorer: CustomerScorer, input_example: pd.DataFrame,
              tags: Mapping[str, object]) -> str:
    """Log the scorer as a pyfunc in the active run and register a new `customer-scorer`
    version with `tags`, as challenger; returns the version."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scorer.joblib"
        joblib.dump(scorer, path)
        info = mlflow.pyfunc.log_model(
            name=RegisteredModel.SCORER, python_model=ScorerModel(),
            artifacts={"scorer": str(path)}, input_example=input_example,
            pip_requirements=requirements(), code_paths=code_paths(),
            registered_model_name=RegisteredModel.SCORER,
        )
    version = str(info.registered_model_version)
    _tag_challenger(RegisteredModel.SCORER, version, tags)
    return version


def log_recommender(run_id: str, recommender: ItemRecommender) -> None:
    """Store the item recommender with the scorer's run, where serving looks for it (a refit
    replaces it; a hyper-parameter that differs from the logged param, which MLflow keeps
    write-once, is recorded as a tag of the same name)."""
    client = MlflowClient()
    where = Path(RECOMMENDER_ARTIFACT)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / where.name
        joblib.dump(recommender, path)
        client.log_artifact(run_id, str(path), str(where.parent))
    logged = client.get_run(run_id).data.params
    for key, value in recommender.get_params().items():
        name, text = f"recommender_{key}", str(value)[:500]
        if logged.get(name, text) == text:
            client.log_param(run_id, name, text)
        else:
            client.set_tag(run_id, name, text)


def log_stage_seconds(run_id: str, seconds: Mapping[str, float]) -> None:
    """Wall time of each stage of the job, as metrics `stage_seconds.<stage>` of its run."""
    client = MlflowClient()
    for stage, value in seconds.items():
        client.log_metric(run_id, f"stage_seconds.{stage}", round(float(value), 3))


def model_card(result: TrainResult, lineage: Mapping[str, object], *,
               interval_target: float = 0.80) -> str:
    """A short markdown model card: data, cutoffs, choices, headline metrics and grades."""
    g = result.grades
    lines = [
        f"# {RegisteredModel.SCORER}", "",
        f"- data: {lineage.get('source')} (digest {lineage.get('digest')}), "
        f"{lineage.get('rows')} transactions",
        f"- cutoffs: {json.dumps(result.cutoffs.as_dict())}",
        f"- horizon: {result.cutoffs.horizon_days} days; served components: "
        f"churn={result.scorer.churn_choice}, purchases={result.scorer.purchases_choice}, "
        f"spend={result.scorer.spend_choice}",
        *[f"- {target} model, chosen on the validation cutoff "
          f"{result.cutoffs.validation.isoformat()} by {selection_rule(Target(target))}: "
          f"{choice.reason}" for target, choice in result.choices.items()],
        f"- value interval levels (calibrated to hold {interval_target:.0%} on validation): "
        f"{result.scorer.interval_levels[0]:.3f}..{result.scorer.interval_levels[1]:.3f}",
        f"- overall grade: **{g['overall']['grade']}** — {g['overall']['explanation']}", "",
        "| metric | ours | best baseline | value | grade |", "|---|---:|---|---:|---|",
    ]
    for key, r in g.items():
        if key != "overall":
            lines.append(f"| {r['label']} | {r['ours']:.4f} | {r['best_baseline']} | "
                         f"{r['baseline_value']:.4f} | {r['grade']} |")
    lines += ["", "Evaluated out of time on the test cutoff, with the baselines in the same run."]
    return "\n".join(lines)


def log_training(result: TrainResult, cfg: TrainConfig, lineage: Mapping[str, object],
                 figures: Mapping[str, Figure]) -> tuple[str, str]:
    """One MLflow run: params, metrics, plots, tables, grades, lineage, card, model version.

    Returns (run id, registered `customer-scorer` version).
    """
    import matplotlib.pyplot as plt

    lo, hi = result.scorer.interval_levels
    grade = result.grades["overall"]["grade"]
    test_as_of = result.cutoffs.test.isoformat()
    with mlflow.start_run(run_name=f"train-{result.cutoffs.test}") as run:
        mlflow.log_params({**cfg.model_dump(mode="json"),
                           "cutoffs_train": ",".join(result.cutoffs.as_dict()["train"]),
                           "cutoff_validation": result.cutoffs.validation.isoformat(),
                           "cutoff_test": test_as_of,
                           "churn_model": result.scorer.churn_choice,
                           "purchases_model": result.scorer.purchases_choice,
                           "spend_model": result.scorer.spend_choice,
                           "interval_levels": f"{lo:.3f},{hi:.3f}"})
        mlflow.log_params({f"lineage_{k}": v for k, v in lineage.items()})
        mlflow.log_params({k: round(v, 6) for k, v in result.component_params.items()})
        flat = {f"{model}.{name}": float(value)
                for model, values in result.metrics.items() for name, value in values.items()
                if isinstance(value, int | float) and value == value}
        mlflow.log_metrics(flat)
        mlflow.set_tags({Tag.GRADE.value: grade, Tag.TEST_AS_OF.value: test_as_of,
                         **{f"{target}_model_reason": choice.reason
                            for target, choice in result.choices.items()}})
        mlflow.log_dict(result.grades, "evaluation/grades.json")
        for name, table in result.tables.items():
            mlflow.log_text(table.to_csv(), f"evaluation/{name}.csv")
        for name, fig in figures.items():
            mlflow.log_figure(fig, f"plots/{name}.png")
            plt.close(fig)
        card = model_card(result, lineage, interval_target=cfg.interval_target)
        mlflow.log_text(card, "model_card.md")
        ours = result.metrics[OURS]
        tags = {Tag.CHURN_ROC_AUC: ours[Metric.CHURN_ROC_AUC],
                Tag.PURCHASES_MAE: ours[Metric.PURCHASES_MAE],
                Tag.VALUE_GINI: ours[Metric.VALUE_GINI],
                Tag.TEST_AS_OF: test_as_of, Tag.GRADE: grade, **head_to_head(result)}
        example = result.test[result.scorer.input_columns].head(5).astype({"as_of": str})
        version = log_model(result.scorer, example, tags)
        return run.info.run_id, version


def log_uplift(run: UpliftRun, source: str, figures: Mapping[str, Figure]) -> tuple[str, str]:
    """One MLflow run for an uplift model; registers `uplift` as challenger.

    Returns (run id, registered `uplift` version).
    """
    import matplotlib.pyplot as plt

    fit = run.fit
    with mlflow.start_run(run_name=f"uplift-{run.as_of}") as active:
        mlflow.log_params({"learner": type(fit.learner).__name__, "outcome": fit.outcome,
                           "offers": ",".join(fit.arms), "features_as_of": str(run.as_of),
                           "rows": fit.n_rows, "source": source,
                           "rows_without_features": fit.n_without_features,
                           **{f"learner_{k}": v for k, v in fit.learner.get_params().items()}})
        mlflow.log_metrics({k: float(v) for k, v in run.metrics.items() if v == v})
        for name, fig in figures.items():
            mlflow.log_figure(fig, f"plots/{name}.png")
            plt.close(fig)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "uplift.joblib"
            joblib.dump(fit, path)
            info = mlflow.pyfunc.log_model(
                name=RegisteredModel.UPLIFT, python_model=UpliftPyfunc(),
                artifacts={"uplift": str(path)}, pip_requirements=requirements(),
                code_paths=code_paths(), registered_model_name=RegisteredModel.UPLIFT)
        version = str(info.registered_model_version)
        first = fit.arms[0]
        _tag_challenger(RegisteredModel.UPLIFT, version, {
            Tag.OFFERS: ",".join(fit.arms), Tag.OUTCOME: fit.outcome,
            Tag.QINI_AUC: run.metrics.get(f"{first}.qini_auc", float("nan")),
            Tag.UPLIFT_AT_30: run.metrics.get(f"{first}.uplift_at_30", float("nan"))})
        return active.info.run_id, version
