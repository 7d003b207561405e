"""`retention data …`, `retention features …` and `retention demo-data`."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from features import engine
from features.config import SourceConfig, load_source_config
from features.errors import DataError
from features.validate import ValidationResult, load

console = Console()
data_app = typer.Typer(help="Read and validate sources.", no_args_is_help=True)
features_app = typer.Typer(help="Build point-in-time customer features.", no_args_is_help=True)


def parse_duration(text: str) -> int:
    """'90d', '13w' or '90' → days."""
    m = re.fullmatch(r"\s*(\d+)\s*([dw]?)\s*", text)
    if not m:
        raise DataError(f"--horizon/--lookback: cannot read {text!r}; expected e.g. 90d or 13w")
    return int(m.group(1)) * (7 if m.group(2) == "w" else 1)


def parse_dates(text: str) -> list[dt.date]:
    """'2011-09-10,2011-06-12' → dates (sorted, unique)."""
    out = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            out.add(dt.date.fromisoformat(part))
        except ValueError:
            raise DataError(f"--as-of: cannot read {part!r}; expected YYYY-MM-DD") from None
    if not out:
        raise DataError("--as-of: no date given")
    return sorted(out)


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    console=console, transient=False)


def validate_source(cfg: SourceConfig, progress: Progress) -> ValidationResult:
    task = progress.add_task(f"read + validate {cfg.name}", total=1)
    result = load(cfg)
    progress.update(task, completed=1)
    return result


def print_validation(result: ValidationResult | Any) -> None:
    """Counts of a validation (in pandas, or on Spark: `features.spark.SparkValidation`)."""
    summary = result.summary()
    table = Table(title=f"{result.table} from {result.source}", show_lines=False)
    table.add_column("rows")
    table.add_column("count", justify="right")
    table.add_row("rows in", f"{result.rows_in:,}")
    table.add_row("accepted", f"{summary['accepted']:,}")
    for reason, count in result.counts.items():
        table.add_row(f"  quarantined: {reason}", f"{count:,}")
    table.add_row("quarantined (total)", f"{result.n_quarantined:,}")
    console.print(table)


def write_validation(result: ValidationResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "validation.json").write_text(json.dumps(result.summary(), indent=2))
    result.quarantine.to_parquet(out_dir / "quarantine.parquet", index=False)


@data_app.command("validate")
def validate_cmd(
    source: Annotated[Path, typer.Option(help="Source config (YAML or TOML) mapping a file or "
                                              "table onto the canonical columns.")],
    quarantine: Annotated[Path | None, typer.Option(
        help="Folder to write validation.json (counts per reason) and quarantine.parquet "
             "(every rejected row with its reason and source row number).")] = None,
) -> None:
    """Validate a source: every row is accepted or quarantined with a reason, and counted."""
    cfg = load_source_config(source)
    with _progress() as progress:
        result = validate_source(cfg, progress)
    print_validation(result)
    if quarantine:
        write_validation(result, quarantine)
        console.print(f"wrote {quarantine}/validation.json and quarantine.parquet")


@features_app.command("build")
def build_cmd(
    source: Annotated[Path, typer.Option(help="Source config of the transactions table.")],
    as_of: Annotated[str, typer.Option(
        "--as-of", help="One or more as_of dates, comma separated (YYYY-MM-DD). Features use "
                        "only events before each date (UTC midnight).")],
    out: Annotated[Path, typer.Option(help="Output folder: Parquet partitions as_of=YYYY-MM-DD/, "
                                           "plus _validation/ with counts and quarantined rows.")],
    horizon: Annotated[str, typer.Option(help="Label horizon, e.g. 90d or 13w; labels are null "
                                              "where the data ends before as_of + horizon. "
                                              "'0' for no labels.")] = "90d",
    lookback: Annotated[str, typer.Option(help="Population window: in_population marks customers "
                                               "with a purchase this long before as_of.")] = "365d",
    backend: Annotated[str | None, typer.Option(help="Ibis backend URL to run the features on "
                                                     "(default: embedded DuckDB), e.g. "
                                                     "postgresql://user:pw@127.0.0.1/db.")] = None,
    engine_name: Annotated[str, typer.Option(
        "--engine", help=f"Where the build runs: {' or '.join(engine.ENGINES)}. 'spark' reads, "
                         "validates and builds on Apache Spark (pip install "
                         "'retention[spark]', Java 17).")] = engine.DEFAULT_ENGINE,
    spark_master: Annotated[str | None, typer.Option(
        help="Spark master for --engine spark: local[*] (default), local[2], spark://host:7077 "
             "or sc://host:15002 (Spark Connect; default $SPARK_REMOTE).")] = None,
    spark_table: Annotated[str | None, typer.Option(
        help="With --engine spark: read this table of the Spark catalog instead of the "
             "source's file; the source config still maps its columns.")] = None,
    spark_memory: Annotated[str | None, typer.Option(
        help="With --engine spark: the driver's heap, e.g. 8g (default $SPARK_DRIVER_MEMORY, "
             "else half this machine's memory for a local master).")] = None,
) -> None:
    """Build point-in-time features (and labels) per (customer, as_of)."""
    cfg = load_source_config(source)
    if cfg.table != "transactions":
        raise DataError(f"{source}: table: features are built from a transactions source, "
                        f"not {cfg.table!r}")
    if engine_name not in engine.ENGINES:
        raise DataError(f"--engine: unknown engine {engine_name!r}; expected one of "
                        f"{', '.join(engine.ENGINES)}")
    if engine_name != "spark" and (spark_master or spark_table or spark_memory):
        raise DataError("--spark-master/--spark-table/--spark-memory: only with --engine spark")
    if engine_name == "spark" and backend:
        raise DataError("--backend: not with --engine spark (Spark is the backend)")
    dates = parse_dates(as_of)
    horizon_days, lookback_days = parse_duration(horizon), parse_duration(lookback)
    if engine_name == "spark":
        _build_on_spark(cfg, dates, out, horizon_days, lookback_days, spark_master, spark_table,
                        spark_memory)
        return
    with _progress() as progress:
        result = validate_source(cfg, progress)
        write_validation(result, out / "_validation")
        if result.accepted.empty:
            raise DataError(f"{cfg.location}: no accepted transactions to build features from")
        task = progress.add_task("load + prepare", total=1)
        con = engine.connect(backend)
        data_end = cfg.extracted_at.date() if cfg.extracted_at else None
        tables = engine.prepare(con, result.accepted, data_end=data_end)
        progress.update(task, completed=1)
        task = progress.add_task("features per as_of", total=len(dates))
        engine.build(con, tables, dates, out, horizon_days=horizon_days or None,
                     lookback_days=lookback_days,
                     on_done=lambda *_: progress.advance(task))
    print_validation(result)
    print_feature_summary(engine.read_features(out), out)


def _build_on_spark(cfg: SourceConfig, dates: list[dt.date], out: Path, horizon_days: int,
                    lookback_days: int, master: str | None, table: str | None,
                    memory: str | None = None) -> None:
    from features import spark

    try:
        _run_on_spark(spark, cfg, dates, out, horizon_days, lookback_days, master, table, memory)
    except ConnectionError as e:  # the JVM went away mid-job (most often out of memory)
        raise DataError(f"--engine spark: the Spark driver stopped during the build ({e}); "
                        "give it more memory with --spark-memory") from None
    print_feature_summary(engine.read_features(out), out)


def _run_on_spark(spark: Any, cfg: SourceConfig, dates: list[dt.date], out: Path,
                  horizon_days: int, lookback_days: int, master: str | None, table: str | None,
                  memory: str | None) -> None:
    with spark.session(master, memory=memory) as session, _progress() as progress:
        task = progress.add_task(f"read + validate {cfg.name} on Spark", total=1)
        result = spark.validate(spark.read_source(session, cfg, table), cfg,
                                source=f"spark table {table}" if table else None)
        spark.write_validation(result, out / "_validation")
        progress.update(task, completed=1)
        if result.n_accepted == 0:
            raise DataError(f"{result.source}: no accepted transactions to build features from")
        task = progress.add_task("features per as_of on Spark", total=len(dates))
        data_end = cfg.extracted_at.date() if cfg.extracted_at else None
        try:
            spark.build(session, result.accepted, dates, out, horizon_days=horizon_days or None,
                        lookback_days=lookback_days, data_end=data_end,
                        on_done=lambda *_: progress.advance(task))
        finally:
            result.release()
    print_validation(result)


def print_feature_summary(frame: pd.DataFrame, out: Path) -> None:
    table = Table(title=f"features in {out}")
    for col in ("as_of", "customers", "in pop.", "freq.", "since last", "churned",
                "top segment"):
        table.add_column(col, justify="right")
    for as_of, g in frame.groupby("as_of", sort=True):
        churn = g["churned"].mean() if "churned" in g and g["label_complete"].all() else None
        top = g["rfm_segment"].value_counts()
        table.add_row(
            str(as_of), f"{len(g):,}", f"{int(g['in_population'].sum()):,}",
            f"{g['frequency'].mean():.2f}", f"{g['days_since_last'].median():.0f}",
            f"{churn:.1%}" if churn is not None else "n/a",
            f"{top.index[0]} ({top.iloc[0] / len(g):.0%})",
        )
    console.print(table)


def demo_data_cmd(
    out: Annotated[Path, typer.Option(help="Folder for the synthetic tables and their source "
                                           "configs.")] = Path("data/demo"),
    customers: Annotated[int, typer.Option(help="Number of customers (~10 lines each).")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data.")] = 0,
    dirty: Annotated[float, typer.Option(help="Share of extra bad rows to inject (to see "
                                              "quarantine at work).")] = 0.01,
) -> None:
    """Generate the seeded synthetic retailer (transactions, customers, a campaign log)."""
    from features.synthetic import SyntheticConfig, generate, write

    with _progress() as progress:
        task = progress.add_task(f"generate {customers:,} customers", total=2)
        data = generate(SyntheticConfig(n_customers=customers, seed=seed, dirty_fraction=dirty))
        progress.advance(task)
        paths = write(data, out)
        progress.advance(task)
    console.print(f"wrote {len(data.transactions):,} transaction lines for {customers:,} customers")
    for name, path in paths.items():
        console.print(f"  {name}: {path}")
