"""`retention train` and `retention models promote|rollback|list`."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
import yaml
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.cli import parse_dates, parse_duration
from features.config import load_source_config
from features.errors import DataError
from features.validate import load

console = Console()
models_app = typer.Typer(help="Compare, promote and roll back registered models.",
                         no_args_is_help=True)


def digest(frame: pd.DataFrame) -> str:
    """A short content digest of a frame (dataset lineage)."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def train_cmd(
    source: Annotated[Path, typer.Option(help="Source config of the transactions table.")],
    config: Annotated[Path | None, typer.Option(help="Training config (YAML): horizon_days, "
                                                     "test_as_of, n_train_cutoffs, ...")] = None,
    horizon: Annotated[str | None, typer.Option(help="Label horizon, e.g. 90d.")] = None,
    test_as_of: Annotated[str | None, typer.Option(
        "--test-as-of", help="Evaluation as_of (default: data end - horizon).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else ./mlruns SQLite).")] = None,
    promote: Annotated[bool, typer.Option(help="Promote to champion if it beats the current "
                                               "one.")] = False,
) -> None:
    """Train churn, purchases and value models, evaluate them out of time against the
    baselines, log everything to MLflow and register a `challenger` version."""
    from training import registry
    from training.recommender import ItemRecommender
    from training.report import figures
    from training.train import TrainConfig, train

    raw = yaml.safe_load(config.read_text()) if config else {}
    if horizon:
        raw["horizon_days"] = parse_duration(horizon)
    if test_as_of:
        raw["test_as_of"] = parse_dates(test_as_of)[0]
    try:
        cfg = TrainConfig.model_validate(raw or {})
    except Exception as exc:  # noqa: BLE001 - pydantic's message, one line
        raise DataError(f"{config or 'options'}: {str(exc).splitlines()[0]}") from None
    src = load_source_config(source)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task(f"read + validate {src.name}")
        result = load(src)
        step = lambda text: progress.update(task, description=text)  # noqa: E731
        data_end = src.extracted_at.date() if src.extracted_at else None
        trained = train(result.accepted, cfg, data_end=data_end, step=step)
        step("plots + MLflow")
        uri = registry.configure(tracking_uri)
        lineage = {"source": src.name, "location": src.location, "rows": len(result.accepted),
                   "digest": digest(result.accepted), "as_of": trained.cutoffs.test.isoformat(),
                   "horizon_days": cfg.horizon_days}
        run_id, version = registry.log_training(trained, cfg, lineage, figures(trained))
        step("item-to-item recommender")
        recommender = ItemRecommender(exclude_items=list(src.non_product_codes))
        registry.log_recommender(run_id, recommender.fit(result.accepted))
    print_report(trained)
    console.print(f"MLflow run {run_id} at {uri}; registered customer-scorer v{version} "
                  "as challenger")
    if promote:
        console.print(registry.promote())


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


@models_app.command("promote")
def promote_cmd(
    force: Annotated[bool, typer.Option(help="Promote even if the gates fail (recorded).")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
) -> None:
    """Make the challenger the champion if it beats it out of time."""
    from training import registry

    registry.configure(tracking_uri)
    console.print(registry.promote(force=force))


@models_app.command("rollback")
def rollback_cmd(
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
) -> None:
    """Restore the previous champion."""
    from training import registry

    registry.configure(tracking_uri)
    console.print(registry.rollback())


@models_app.command("list")
def list_cmd(
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
) -> None:
    """Registered versions, aliases and their out-of-time metrics."""
    from training import registry

    registry.configure(tracking_uri)
    console.print(registry.list_versions().to_string(index=False))
