"""MLflow tracking and registry: log a training run, register `customer-scorer`, promote, roll back.

Embedded by default: a SQLite store and local artifacts under ./mlruns. Any MLFLOW_TRACKING_URI
works instead, e.g. a team's `mlflow server` backed by PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import joblib
import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from features.errors import DataError

MODEL_NAME = "customer-scorer"
UPLIFT_NAME = "uplift"
EXPERIMENT = "retention"
CHAMPION, CHALLENGER = "champion", "challenger"
VS = "vs_champion_"  # tag prefix: the champion's gate metrics on a challenger's test cutoff
# Version tags compared by `promote`, per model: (higher is better, tolerance).
GATES = {
    MODEL_NAME: {"churn_roc_auc": (True, 0.002), "purchases_mae": (False, 0.02)},
    UPLIFT_NAME: {"qini_auc": (True, 0.005), "uplift_at_30": (True, 0.002)},
}


def configure(tracking_uri: str | None = None, home: Path | None = None) -> str:
    """Point MLflow at `tracking_uri`, $MLFLOW_TRACKING_URI, or the embedded ./mlruns store."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    artifact_root = None
    if not uri:
        home = (home or Path("mlruns")).resolve()
        home.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{home / 'mlflow.db'}"
        artifact_root = (home / "artifacts").as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_root)
    mlflow.set_experiment(EXPERIMENT)
    return uri


class ScorerModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: feature rows in, every score out (`CustomerScorer.score`)."""

    def load_context(self, context) -> None:
        self.scorer = joblib.load(context.artifacts["scorer"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.scorer.score(pd.DataFrame(model_input))


def requirements() -> list[str]:
    """The project's pinned runtime requirements, for the logged model's environment."""
    from importlib.metadata import requires

    return [r for r in (requires("retention") or []) if "extra ==" not in r]


def log_model(scorer, input_example: pd.DataFrame, tags: dict[str, str]) -> str:
    """Log the scorer as a pyfunc in the active run and register a new version; returns it."""
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scorer.joblib"
        joblib.dump(scorer, path)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=ScorerModel(), artifacts={"scorer": str(path)},
            input_example=input_example, pip_requirements=requirements(),
            registered_model_name=MODEL_NAME,
        )
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(MODEL_NAME, version, key, str(value))
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, version)
    return version


def log_recommender(run_id: str, recommender) -> None:
    """Store the item recommender with the scorer's run, where serving looks for it."""
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recommender.joblib"
        joblib.dump(recommender, path)
        client.log_artifact(run_id, str(path), "recommender")
    for key, value in recommender.get_params().items():
        client.log_param(run_id, f"recommender_{key}", str(value)[:500])


def head_to_head(result) -> dict[str, str]:
    """The champion's gate metrics on this run's test cutoff, as tags for the new version.

    Each run's own metrics come from its own test window (another season, other customers), so
    two runs' numbers do not compare. The champion is scored on this run's test frame instead,
    unless its training saw labels in that window (its test as_of is later than this one's):
    then {} and promotion falls back to each run's own numbers.
    """
    from training import evaluate as ev

    champion = _version(CHAMPION)
    if champion is None or "test_as_of" not in champion.tags:
        return {}
    if dt.date.fromisoformat(champion.tags["test_as_of"]) > result.cutoffs.test:
        return {}
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{champion.version}")
    scorer = model.unwrap_python_model().scorer
    if result.test_components is not None:
        scorer = scorer.with_components(result.test_components)
    scores = scorer.score(result.test, reasons=False)
    test = result.test
    churn = ev.churn_metrics(test["churned"].astype(int), scores["churn_probability"])
    count = ev.purchase_metrics(test["n_purchases"], scores["expected_purchases"])
    return {f"{VS}version": str(champion.version),
            f"{VS}churn_roc_auc": str(churn["roc_auc"]), f"{VS}purchases_mae": str(count["mae"])}


def _version(alias: str, name: str = MODEL_NAME):
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def promote(force: bool = False, name: str = MODEL_NAME) -> str:
    """Move `champion` to the challenger if it beats the champion on the out-of-time gates.

    Gates (from the version tags each run writes): churn ROC-AUC may not drop by more than
    0.002 and purchases MAE may not rise by more than 2%, and at least one must improve.
    The champion's numbers are its scores on the challenger's own test cutoff when training
    measured them (`head_to_head`), else its own run's. `force` skips the gates and is
    recorded on the version.
    """
    client = MlflowClient()
    challenger = _version(CHALLENGER, name)
    if challenger is None:
        raise DataError(f"{name}: no challenger to promote (run `retention train`)")
    champion = _version(CHAMPION, name)
    if champion is not None and champion.version == challenger.version:
        return f"version {challenger.version} is already the champion"
    if champion is not None and not force:
        same = challenger.tags.get(f"{VS}version") == str(champion.version)
        theirs = ({k: challenger.tags[f"{VS}{k}"] for k in GATES[name]} if same
                  else champion.tags)
        verdict = compare(challenger.tags, theirs, GATES[name])
        if verdict:
            basis = ("both scored on the challenger's test cutoff" if same
                     else "each on its own test cutoff")
            return (f"kept champion v{champion.version}: challenger v{challenger.version} "
                    f"{verdict} ({basis}; use --force to override)")
    client.set_registered_model_alias(name, CHAMPION, challenger.version)
    if champion is not None:
        client.set_model_version_tag(name, challenger.version, "previous_champion",
                                     champion.version)
    client.set_model_version_tag(name, challenger.version, "promoted_forced",
                                 str(bool(force and champion is not None)).lower())
    was = f" (was v{champion.version})" if champion is not None else ""
    return f"champion is now v{challenger.version}{was}" + (" [forced]" if force else "")


def compare(challenger: dict[str, str], champion: dict[str, str],
            gates: dict[str, tuple[bool, float]] | None = None) -> str:
    """'' if the challenger passes every gate and improves one, else why it does not."""
    improved = False
    for tag, (higher, tolerance) in (gates or GATES[MODEL_NAME]).items():
        if tag not in challenger or tag not in champion:
            return f"lacks the {tag} tag to compare"
        new, old = float(challenger[tag]), float(champion[tag])
        worse = (old - new > tolerance) if higher else (new > old * (1 + tolerance))
        if worse:
            return f"is worse on {tag}: {new:.4f} vs {old:.4f}"
        improved |= (new > old) if higher else (new < old)
    return "" if improved else "does not improve on any gate"


def rollback() -> str:
    """Restore the champion that the current one replaced."""
    client = MlflowClient()
    champion = _version(CHAMPION)
    if champion is None:
        raise DataError(f"{MODEL_NAME}: no champion to roll back")
    previous = champion.tags.get("previous_champion")
    if not previous:
        raise DataError(f"{MODEL_NAME}: champion v{champion.version} replaced no earlier version")
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, previous)
    client.set_model_version_tag(MODEL_NAME, previous, "restored_from", champion.version)
    return f"champion is now v{previous} (rolled back from v{champion.version})"


def list_versions() -> pd.DataFrame:
    """Registered versions with their aliases and gate metrics."""
    client = MlflowClient()
    rows = []
    for v in client.search_model_versions(f"name='{MODEL_NAME}'"):
        rows.append({"version": int(v.version), "aliases": ",".join(v.aliases),
                     "run_id": v.run_id,
                     **{k: v.tags.get(k) for k in (*GATES[MODEL_NAME], "test_as_of")}})
    return pd.DataFrame(rows).sort_values("version") if rows else pd.DataFrame()


def load_champion(alias: str = CHAMPION):
    """The pyfunc of the aliased version (what serving loads)."""
    return mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{alias}")


def model_card(result, lineage: dict[str, object]) -> str:
    """A short markdown model card: data, cutoffs, choices, headline metrics and grades."""
    g = result.grades
    lines = [
        f"# {MODEL_NAME}", "",
        f"- data: {lineage.get('source')} (digest {lineage.get('digest')}), "
        f"{lineage.get('rows')} transactions",
        f"- cutoffs: {json.dumps(result.cutoffs.as_dict())}",
        f"- horizon: {result.cutoffs.horizon_days} days; served components: "
        f"churn={result.scorer.churn_choice}, purchases={result.scorer.purchases_choice}, "
        f"spend={result.scorer.spend_choice}",
        f"- value interval levels (calibrated to 80% on validation): "
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


def log_training(result, cfg, lineage: dict[str, object], figures: dict) -> tuple[str, str]:
    """One MLflow run: params, metrics, plots, tables, grades, lineage, card, model version."""
    import matplotlib.pyplot as plt

    lo, hi = result.scorer.interval_levels
    with mlflow.start_run(run_name=f"train-{result.cutoffs.test}") as run:
        mlflow.log_params({**cfg.model_dump(mode="json"),
                           "cutoffs_train": ",".join(result.cutoffs.as_dict()["train"]),
                           "cutoff_validation": result.cutoffs.validation.isoformat(),
                           "cutoff_test": result.cutoffs.test.isoformat(),
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
        mlflow.set_tags({"grade": result.grades["overall"]["grade"],
                         "test_as_of": result.cutoffs.test.isoformat()})
        mlflow.log_dict(result.grades, "evaluation/grades.json")
        for name, table in result.tables.items():
            mlflow.log_text(table.to_csv(), f"evaluation/{name}.csv")
        for name, fig in figures.items():
            mlflow.log_figure(fig, f"plots/{name}.png")
            plt.close(fig)
        mlflow.log_text(model_card(result, lineage), "model_card.md")
        ours = result.metrics["ours"]
        tags = {"churn_roc_auc": ours["churn.roc_auc"], "purchases_mae": ours["purchases.mae"],
                "value_gini": ours["value.normalized_gini"],
                "test_as_of": result.cutoffs.test.isoformat(),
                "grade": result.grades["overall"]["grade"], **head_to_head(result)}
        example = result.test[result.scorer.input_columns].head(5).astype({"as_of": str})
        version = log_model(result.scorer, example, tags)
        return run.info.run_id, version


class UpliftPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: feature rows in, one estimated uplift column per covered offer out."""

    def load_context(self, context) -> None:
        self.fit = joblib.load(context.artifacts["uplift"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        rows = pd.DataFrame(model_input)[self.fit.features]
        return self.fit.learner.predict_uplift(rows.reset_index(drop=True))


def log_uplift(run, source: str, figures: dict) -> tuple[str, str]:
    """One MLflow run for an uplift model; registers `uplift` as challenger. (run id, version)"""
    import matplotlib.pyplot as plt

    fit = run.fit
    client = MlflowClient()
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
                name=UPLIFT_NAME, python_model=UpliftPyfunc(), artifacts={"uplift": str(path)},
                pip_requirements=requirements(), registered_model_name=UPLIFT_NAME)
        version = str(info.registered_model_version)
        first = fit.arms[0]
        tags = {"offers": ",".join(fit.arms), "outcome": fit.outcome,
                "qini_auc": run.metrics.get(f"{first}.qini_auc", float("nan")),
                "uplift_at_30": run.metrics.get(f"{first}.uplift_at_30", float("nan"))}
        for key, value in tags.items():
            client.set_model_version_tag(UPLIFT_NAME, version, key, str(value))
        client.set_registered_model_alias(UPLIFT_NAME, CHALLENGER, version)
        return active.info.run_id, version


def load_uplift(alias: str = CHAMPION):
    """(version, CampaignFit) of the aliased `uplift` model, or None when there is none."""
    v = _version(alias, UPLIFT_NAME)
    if v is None:
        return None
    model = mlflow.pyfunc.load_model(f"models:/{UPLIFT_NAME}/{v.version}")
    return str(v.version), model.unwrap_python_model().fit
