"""`retention train` and `retention models promote|rollback|list`."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import pandas as pd
import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.cli import parse_dates, parse_duration
from features.config import load_source_config
from features.engine import DEFAULT_ENGINE, ENGINES
from features.errors import DataError, config_error
from features.validate import load

if TYPE_CHECKING:
    from features.config import SourceConfig
    from training.models.recommender import ItemRecommender
    from training.registry import RegisteredModel

console = Console()
models_app = typer.Typer(help="Compare, promote and roll back registered models.",
                         no_args_is_help=True)
train_app = typer.Typer(help="Train the customer models (default) or `uplift` from a campaign "
                             "log.")


def digest(frame: pd.DataFrame) -> str:
    """A short content digest of a frame (dataset lineage)."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


@train_app.callback(invoke_without_command=True)
def train_cmd(
    ctx: typer.Context,
    source: Annotated[Path | None, typer.Option(help="Source config of the transactions "
                                                     "table.")] = None,
    config: Annotated[Path | None, typer.Option(help="Training config (YAML): horizon_days, "
                                                     "test_as_of, n_train_cutoffs, ...")] = None,
    horizon: Annotated[str | None, typer.Option(help="Label horizon, e.g. 90d.")] = None,
    test_as_of: Annotated[str | None, typer.Option(
        "--test-as-of", help="Evaluation as_of (default: data end - horizon).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else SQLite in the "
             "state home's mlruns/).")] = None,
    promote: Annotated[bool, typer.Option(help="Promote to champion if it beats the current "
                                               "one.")] = False,
    recommender: Annotated[bool, typer.Option(help="Also fit the item-to-item product "
                                                   "recommender and store it with the run.")
                           ] = True,
    engine: Annotated[str, typer.Option(
        help="'duckdb': read and validate the source in this process; 'spark': on Spark, "
             "then train on the transactions of --sample customers collected to the "
             "driver.")] = DEFAULT_ENGINE,
    sample: Annotated[int | None, typer.Option(
        min=1, help="With --engine spark: customers to train on, a seeded sample stratified "
                    "by repeat purchase days (default: every customer).")] = None,
    spark_master: Annotated[str | None, typer.Option(
        help="With --engine spark: local[N], spark://host:port or sc://host:port; default "
             "$SPARK_REMOTE, else local[*].")] = None,
) -> None:
    """Train churn, purchases and value models, evaluate them out of time against the
    baselines, log everything to MLflow and register a `challenger` version."""
    if ctx.invoked_subcommand is not None:
        return
    if source is None:
        raise DataError("retention train: --source is required (the transactions' source "
                        "config)")
    if engine not in ENGINES:
        raise DataError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if sample and engine != "spark":
        raise DataError("--sample: needs --engine spark (the sample is drawn on Spark)")
    from training import registry
    from training.report import figures
    from training.train import Stages, TrainConfig, train

    raw = yaml.safe_load(config.read_text()) if config else {}
    if horizon:
        raw["horizon_days"] = parse_duration(horizon)
    if test_as_of:
        raw["test_as_of"] = parse_dates(test_as_of)[0]
    try:
        cfg = TrainConfig.model_validate(raw or {})
    except ValidationError as exc:
        raise config_error(exc, config or "options") from None
    src = load_source_config(source)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console) as progress, quiet_mlflow():
        task = progress.add_task(f"read + validate {src.name}")
        step = lambda text: progress.update(task, description=text)  # noqa: E731
        stages = Stages(step)
        stages("read", f"read + validate {src.name}")
        if engine == "spark":
            from training.spark_frames import sampled_transactions

            accepted, data_end, customers = sampled_transactions(
                src, sample, master=spark_master, seed=cfg.seed)
            console.print(f"training on {accepted['customer_id'].nunique():,} of {customers:,} "
                          f"customers ({len(accepted):,} transactions) read on Spark")
        else:
            accepted = load(src).accepted
            data_end = src.extracted_at.date() if src.extracted_at else None
        stages("train", "training")
        trained = train(accepted, cfg, data_end=data_end, step=step)
        stages("log", "plots + MLflow")
        uri = registry.configure(tracking_uri)
        lineage = {"source": src.name, "location": src.location, "rows": len(accepted),
                   "digest": digest(accepted), "as_of": trained.cutoffs.test.isoformat(),
                   "horizon_days": cfg.horizon_days,
                   **({"sample_customers": sample} if sample else {})}
        run_id, version = registry.log_training(
            trained, cfg, lineage, figures(trained, interval_target=cfg.interval_target))
        if recommender:
            stages("recommender", "item-to-item recommender")
            registry.log_recommender(run_id, fit_recommender(accepted, src))
        own = stages.close()
        seconds = {"read": own["read"], **trained.stage_seconds,
                   **{k: v for k, v in own.items() if k not in ("read", "train")}}
        registry.log_stage_seconds(run_id, seconds)
    print_report(trained)
    console.print("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()),
                  highlight=False)
    console.print(f"MLflow run {run_id} at {uri}; registered {registry.RegisteredModel.SCORER} "
                  f"v{version} as challenger")
    if promote:
        console.print(registry.promote(), markup=False)


def fit_recommender(transactions: pd.DataFrame, src: SourceConfig) -> ItemRecommender:
    """The item-to-item recommender on all of a source's validated lines, leaving out its
    non-product codes (fees, postage): the one `retention train` stores with its run."""
    from training.models.recommender import ItemRecommender

    return ItemRecommender(exclude_items=list(src.non_product_codes)).fit(transactions)


@train_app.command("recommender")
def recommender_cmd(
    source: Annotated[Path, typer.Option(help="Source config of the transactions table.")],
    run_id: Annotated[str | None, typer.Option(
        "--run-id", help="The customer-scorer run to store it with (default: the run of the "
                         "version --alias points at).")] = None,
    alias: Annotated[str, typer.Option(help="customer-scorer alias whose run gets the "
                                            "recommender when --run-id is not given.")
                     ] = "champion",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
) -> None:
    """Fit the item-to-item recommender alone and store it with a `customer-scorer` run (the
    champion's by default), where the service loads it from; a running service picks it up
    at its next start or model reload."""
    from training import registry
    from training.train import Stages

    registry.configure(tracking_uri)
    if run_id is None:
        found = registry.aliased_version(registry.RegisteredModel.SCORER, alias)
        if found is None:
            raise DataError(f"--alias: no {registry.RegisteredModel.SCORER} version is "
                            f"{alias!r}; run `retention train` first or pass --run-id")
        run_id = str(found.run_id)
    else:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            MlflowClient().get_run(run_id)
        except MlflowException:
            raise DataError(f"--run-id: no MLflow run {run_id!r}") from None
    src = load_source_config(source)
    with console.status(f"read + validate {src.name}") as status, quiet_mlflow():
        stages = Stages(lambda text: status.update(text))
        stages("recommender_read", f"read + validate {src.name}")
        result = load(src)
        stages("recommender", "item-to-item recommender")
        model = fit_recommender(result.accepted, src)
        stages("recommender_log", "MLflow")
        registry.log_recommender(run_id, model)
        seconds = stages.close()
        registry.log_stage_seconds(run_id, seconds)
    console.print(f"item recommender: {len(model.items_):,} products, "
                  f"{len(model.customers_):,} customers, {len(model.neighbors_):,} neighbour "
                  f"pairs; stored with MLflow run {run_id}", highlight=False)
    console.print("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()),
                  highlight=False)


@train_app.command("uplift")
def uplift_cmd(
    campaign_log: Annotated[str, typer.Option(help="Campaign log: a source config (YAML) or "
                                                   "the /feedback log's URL (sqlite:///...).")],
    features: Annotated[Path, typer.Option(help="Feature table from `features build`; the "
                                                "latest as_of before the campaign is used.")],
    outcome: Annotated[str, typer.Option(help="visit, converted or revenue.")] = "converted",
    campaign_id: Annotated[str | None, typer.Option(help="Keep one campaign of the log.")
                           ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    promote: Annotated[bool, typer.Option(help="Promote to champion if it beats the current "
                                               "one.")] = False,
) -> None:
    """Fit an uplift model on a randomised campaign log, evaluate it on a held-out half (Qini,
    AUUC, uplift@k), register it as `uplift`; `/recommend` then uses it for its offers."""
    from training import registry
    from training.uplift.job import features_at, read_campaign_log, train_uplift
    from training.uplift.plots import qini_plot

    if outcome not in ("visit", "converted", "revenue"):
        raise DataError(f"--outcome: {outcome!r} is not one of visit, converted, revenue")
    log, quarantined = read_campaign_log(campaign_log)
    if quarantined:
        console.print(f"campaign log: {sum(quarantined.values()):,} rows quarantined "
                      f"{quarantined}")
    as_of, frame = features_at(features, log)
    with console.status("fitting uplift models"):
        run = train_uplift(log, frame, as_of, outcome, campaign_id=campaign_id)
    figures = {}
    for arm in run.fit.arms:
        rows = run.test[run.test["arm"].isin([arm, "control"])]
        figures[f"qini_{arm}"] = qini_plot(rows["y"], (rows["arm"] == arm).astype(int),
                                           {arm: rows[f"uplift_{arm}"]}, title=f"Qini: {arm}")
    registry.configure(tracking_uri)
    with quiet_mlflow():
        run_id, version = registry.log_uplift(run, campaign_log, figures)
    table = Table(title=f"uplift on the held-out half ({outcome}, features as of {as_of})")
    for col in ("offer", "uplift@30%", "Qini", "AUUC"):
        table.add_column(col)
    for arm in run.fit.arms:
        m = run.metrics
        table.add_row(arm, f"{m[f'{arm}.uplift_at_30']:.4f}", f"{m[f'{arm}.qini_auc']:.4f}",
                      f"{m[f'{arm}.uplift_auc']:.4f}")
    console.print(table)
    console.print(f"MLflow run {run_id}; registered {registry.RegisteredModel.UPLIFT} "
                  f"v{version} as challenger "
                  f"({run.fit.n_rows:,} customers, {run.fit.n_without_features:,} without "
                  "features left out)")
    if promote:
        console.print(registry.promote(registry.RegisteredModel.UPLIFT), markup=False)


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Keep MLflow's warnings (signature inference, deprecations) out of the user's terminal;
    errors still show."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def print_report(result) -> None:
    table = Table(title=f"out-of-time evaluation at {result.cutoffs.test} "
                        f"({result.cutoffs.horizon_days}-day horizon)")
    for col in ("metric", "ours", "best baseline", "baseline", "grade"):
        table.add_column(col)
    for key, r in result.grades.items():
        if key != "overall":
            table.add_row(r["label"], f"{r['ours']:.4f}", r["best_baseline"],
                          f"{r['baseline_value']:.4f}", r["grade"])
    console.print(table)
    console.print(f"overall grade {result.grades['overall']['grade']}: "
                  f"{result.grades['overall']['explanation']}")


# The registered model a `models` command acts on (training.registry.RegisteredModel).
ModelOption = Annotated[str, typer.Option("--model", help="The registered model: "
                                                         "customer-scorer or uplift.")]


def _registered(model: str) -> RegisteredModel:
    """The `RegisteredModel` named by --model, or one clear error."""
    from training.registry import RegisteredModel

    try:
        return RegisteredModel(model)
    except ValueError:
        raise DataError(f"--model: {model!r} is not one of "
                        f"{', '.join(RegisteredModel)}") from None


@models_app.command("promote")
def promote_cmd(
    force: Annotated[bool, typer.Option(help="Promote even if the gates fail (recorded).")] = False,
    model: ModelOption = "customer-scorer",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
) -> None:
    """Make the challenger the champion if it beats it out of time."""
    from training import registry

    name = _registered(model)
    registry.configure(tracking_uri)
    console.print(registry.promote(name, force=force), markup=False)


@models_app.command("rollback")
def rollback_cmd(
    model: ModelOption = "customer-scorer",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
) -> None:
    """Restore the previous champion."""
    from training import registry

    name = _registered(model)
    registry.configure(tracking_uri)
    console.print(registry.rollback(name), markup=False)


@models_app.command("list")
def list_cmd(
    model: ModelOption = "customer-scorer",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
) -> None:
    """Registered versions, aliases and their out-of-time metrics."""
    from training import registry

    name = _registered(model)
    registry.configure(tracking_uri)
    versions = registry.list_versions(name)
    if versions.empty:
        console.print(f"{name}: no registered versions")
    else:  # one line per version, however narrow the terminal
        console.print(versions.to_string(index=False), soft_wrap=True)
