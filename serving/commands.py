"""`retention serve`, `retention score` and `retention features publish`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from features.errors import DataError, config_error

if TYPE_CHECKING:
    import pandas as pd

console = Console()
ROOT = Path(__file__).resolve().parents[1]


def serve_cmd(
    features: Annotated[Path | None, typer.Option(help="Feature table from `features build` "
                                                       "(the latest as_of is served).")] = None,
    offers: Annotated[Path | None, typer.Option(help="Offer catalogue YAML.")] = None,
    customers: Annotated[Path | None, typer.Option(help="Source config of the customers table "
                                                        "(consent_<channel> columns).")] = None,
    store: Annotated[str, typer.Option(help="'memory' or a redis:// URL.")] = "memory",
    scores: Annotated[str | None, typer.Option(
        help="redis:// or postgresql:// URL of scores published by `retention score "
             "--publish`: answer from it instead of scoring the snapshot at start.")] = None,
    campaign_log: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of the campaign log (default: data/campaign_log.db in the home).")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    api_key: Annotated[str | None, typer.Option(
        help="API key (or $RETENTION_API_KEY); passed to the service, never written to disk.")
    ] = None,
    transactions: Annotated[Path | None, typer.Option(
        help="Source config of the transactions (the console's CRM metrics).")] = None,
    campaign_history: Annotated[Path | None, typer.Option(
        help="Source config of past campaigns (the console's campaign results).")] = None,
    console_users: Annotated[Path | None, typer.Option(
        help="Console users file (`retention console add-user`).")] = None,
    home: Annotated[Path | None, typer.Option(
        help="State folder (MLflow store, campaign log, service config); default "
             "$RETENTION_HOME or ~/.local/share/retention.")] = None,
    config: Annotated[Path | None, typer.Option(help="A service config YAML instead of the "
                                                     "options above.")] = None,
    port: Annotated[int, typer.Option(help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    workers: Annotated[int | None, typer.Option(
        min=1, help="Worker processes, each holding the model and snapshot in memory; a "
                    "worker that dies is restarted while the others answer. Default: the "
                    "machine's cores.")] = None,
    max_in_flight: Annotated[int | None, typer.Option(
        min=1, help="Requests a worker handles at once; past it, 503 with Retry-After "
                    "instead of a queue (default 32).")] = None,
) -> None:
    """Serve scores, risk lists, offers and the console over HTTP (BentoML), from the
    champion model."""
    from features.home import HOME_ENV, campaign_log_url, serve_config_path, write_private
    from serving.config import API_KEY_ENV, ENV, load_config
    from training.registry.names import RegisteredModel

    if home is not None:
        os.environ[HOME_ENV] = str(home.expanduser().resolve())
    if api_key:
        os.environ[API_KEY_ENV] = api_key
    if config is None:
        raw = {"features": features, "offers": offers, "customers": customers, "store": store,
               "scores": scores,
               "campaign_log": _absolute_sqlite(campaign_log or campaign_log_url()),
               "tracking_uri": tracking_uri, "transactions": transactions,
               "campaign_history": campaign_history, "console_users": console_users,
               "max_in_flight": max_in_flight}
        raw = {k: str(Path(v).resolve()) if isinstance(v, Path) else v for k, v in raw.items()
               if v is not None}
        # Store-backed, MLflow is first needed by the workers (the model of /score_features):
        # they resolve the default tracking URI under the same state home.
        if (not raw.get("tracking_uri") and not os.environ.get("MLFLOW_TRACKING_URI")
                and not scores):
            from training.registry import configure

            raw["tracking_uri"] = configure()
        config = serve_config_path()
        write_private(config, yaml.safe_dump(raw, sort_keys=False))
    elif max_in_flight is not None or scores is not None:
        option = "--max-in-flight" if max_in_flight is not None else "--scores"
        raise DataError(f"{option}: set it in the --config file instead")
    cfg = load_config(config)
    if cfg.offers:  # a bad catalogue is one line here, not a worker failing to start
        from serving.offers import load_catalogue

        load_catalogue(cfg.offers)
    if _new_sqlite(cfg.campaign_log):
        from features.campaign_log import CampaignLog

        CampaignLog(cfg.campaign_log)
        console.print(f"new campaign log at {cfg.campaign_log}")
    if cfg.scores:  # the version the store names: no MLflow here
        from serving.score_store import open_score_store

        store = open_score_store(cfg.scores)
        version = store.meta(store.version()).model_version
    else:
        from serving.state import champion
        from training import registry

        registry.configure(cfg.tracking_uri)
        version, _ = champion(cfg.model_alias)
    workers = workers or os.cpu_count() or 1
    console.print(f"serving {RegisteredModel.SCORER} v{version} on http://{host}:{port} "
                  f"with {workers} worker{'s' if workers > 1 else ''} (config {config}); "
                  f"console at http://{host}:{port}/console/")
    os.environ.update({ENV: str(config.resolve()), "RETENTION_PORT": str(port),
                       "RETENTION_WORKERS": str(workers)})
    # BentoML posts usage statistics to its makers unless told not to: a self-hosted service
    # sends nothing (and saves a request at start).
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    _bentoml_serve(host, port)


SERVICE = "serving.service:Retention"


def _bentoml_serve(host: str, port: int) -> None:
    """Run BentoML's HTTP server (its arbiter, which starts and restarts the workers) in this
    process: what `bentoml serve serving.service:Retention` does, without loading BentoML's
    whole command line first. Blocks until the server stops."""
    from _bentoml_impl.server import serve_http
    from bentoml._internal.log import configure_server_logging
    from bentoml._internal.service.loader import load

    configure_server_logging()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    load(SERVICE, working_dir=str(ROOT)).inject_config()
    serve_http(SERVICE, working_dir=str(ROOT), host=host, port=port)


def _new_sqlite(url: str) -> bool:
    """True for a SQLite URL whose file does not exist yet."""
    return url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists()


def _absolute_sqlite(url: str) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())
    return url


def score_cmd(
    features: Annotated[Path, typer.Option(help="Feature table from `features build`.")],
    out: Annotated[str | None, typer.Option(
        help="Where to write: .parquet, .csv or postgresql://...")] = None,
    publish: Annotated[str | None, typer.Option(
        help="redis:// or postgresql:// URL of the score store the service answers from "
             "(`serve --scores`): a new version, then one pointer flip; replicas reload it.")
    ] = None,
    keep: Annotated[int, typer.Option(min=1, help="Published versions kept in the score "
                                                  "store (older ones are deleted).")] = 2,
    table: Annotated[str, typer.Option(help="Table name for a PostgreSQL --out.")
                     ] = "customer_scores",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    alias: Annotated[str, typer.Option(help="Registered model alias to score with.")
                     ] = "champion",
    reasons: Annotated[bool, typer.Option(help="Compute the reasons (slower).")] = True,
    chunk: Annotated[int, typer.Option(help="Rows scored at a time.")] = 50_000,
    high_risk: Annotated[float, typer.Option(help="Churn probability from which the band is "
                                                  "'high' (the service's risk_bands.high).")
                         ] = 0.6,
    medium_risk: Annotated[float, typer.Option(help="Churn probability from which the band is "
                                                    "'medium' (risk_bands.medium).")
                           ] = 0.3,
    engine: Annotated[str, typer.Option(
        help="'duckdb' (this process) or 'spark': the snapshot read and scored by Spark "
             "(the model as a Spark UDF), --out a Parquet folder.")] = "duckdb",
    spark_master: Annotated[str | None, typer.Option(
        help="With --engine spark: local[N], spark://host:port or sc://host:port (Spark "
             "Connect); default $SPARK_REMOTE, else local[*].")] = None,
    campaign_log: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of the campaign log (as `serve --campaign-log`); with --offers, "
             "adds cost_to_serve and net_value (contacts in the year before as_of).")] = None,
    offers: Annotated[Path | None, typer.Option(
        help="Offer catalogue YAML: the cost per contact, with --campaign-log.")] = None,
) -> None:
    """Score the whole population of the latest feature snapshot: the risk list, to a file or
    table (--out) and/or to the score store the service answers from (--publish). With
    --campaign-log and --offers, each customer's cost to serve and net value too."""
    from serving.batch import score_population, write_scores
    from serving.config import RiskBands
    from serving.profit import with_cost_to_serve
    from serving.score_store import open_score_store
    from serving.state import champion, publish_scores
    from serving.store import MemoryStore
    from training import registry

    if out is None and publish is None:
        raise DataError("score: give --out, --publish or both")
    if (campaign_log is None) != (offers is None):
        given, missing = (("--campaign-log", "--offers") if offers is None
                          else ("--offers", "--campaign-log"))
        raise DataError(f"{given}: cost to serve needs {missing} too")
    store = open_score_store(publish) if publish else None

    try:
        bands = RiskBands(high=high_risk, medium=medium_risk)
    except ValidationError as exc:
        option = {"high": "--high-risk", "medium": "--medium-risk"}
        raise config_error(exc, None, locate=lambda loc: option.get(
            str(loc[0]) if loc else "", "--high-risk/--medium-risk")) from None
    registry.configure(tracking_uri)
    version, run_id = champion(alias)
    if engine != "duckdb":
        if campaign_log is not None:
            raise DataError("--campaign-log: cost to serve is scored with --engine duckdb")
        _score_on_spark(engine, features, out, publish, bands, version, spark_master)
        return
    memory = MemoryStore(features)
    snapshot = memory.snapshot()
    costs = _costs(campaign_log, offers, snapshot["as_of"].max())
    registered = registry.load_scorer(version)
    scorer = registered.for_population(snapshot)
    if scorer is not registered:
        console.print(f"BTYD components refitted on the snapshot's population (as_of "
                      f"{snapshot['as_of'].max()}; the model's data end is "
                      f"{registered.metadata.get('data_end')})")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}"
                  "/{task.total:,}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"scoring with v{version}", total=len(snapshot))
        scores = score_population(scorer, snapshot, bands, chunk=chunk, reasons=reasons,
                                  progress=lambda n: progress.advance(task, n))
    said = (f"{len(scores):,} customers scored by {registry.RegisteredModel.SCORER} v{version} "
            f"(as_of {scores['as_of'].max()})")
    if store is not None:
        published = publish_scores(store, registered, scorer, snapshot, scores,
                                   model=(version, run_id), features_version=memory.version(),
                                   keep=keep, costs=costs)
        console.print(f"{said} -> {publish} version {published}")
    if out is not None:
        scores = with_cost_to_serve(scores, costs)
        scores = scores.sort_values("value_at_risk", ascending=False, kind="stable")
        console.print(f"{said} -> {write_scores(scores, out, table)}")


def _costs(campaign_log: str | None, offers: Path | None, as_of: object) -> pd.Series | None:
    """Each contacted customer's cost to serve before as_of (`serving.profit.costs_before`),
    or None without --campaign-log and --offers."""
    if campaign_log is None or offers is None:
        return None
    import sqlalchemy as sa

    from features.campaign_log import CampaignLog
    from serving.offers import load_catalogue
    from serving.profit import costs_before

    catalogue = load_catalogue(offers)
    try:
        log = CampaignLog(_absolute_sqlite(campaign_log), create=False)
        return costs_before(log, catalogue, as_of)
    except (sa.exc.ArgumentError, sa.exc.OperationalError) as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        raise DataError(f"--campaign-log: cannot read the campaign log ({reason})") from None


def _score_on_spark(engine: str, features: Path, out: str | None, publish: str | None,
                    bands: object, version: str, master: str | None) -> None:
    """`retention score --engine spark` (serving/spark_scoring.py)."""
    from serving import spark_scoring
    from training import registry

    if engine != "spark":
        raise DataError(f"--engine: {engine!r} is not one of duckdb, spark")
    if out is None or publish is not None:
        raise DataError("--engine spark: give --out (a Parquet folder); --publish scores "
                        "with --engine duckdb")

    def refitted(as_of: object, data_end: object) -> None:
        console.print(f"BTYD components refitted on the snapshot's population (as_of {as_of}; "
                      f"the model's data end is {data_end})")

    with console.status(f"scoring with v{version} on Spark"):
        count, where = spark_scoring.run(features, out, bands, version, master=master,
                                         on_refit=refitted)
    console.print(f"{count:,} customers scored by {registry.RegisteredModel.SCORER} "
                  f"v{version} on Spark -> {where}")

def publish_cmd(
    features: Annotated[Path, typer.Option(help="Feature table from `features build`.")],
    to: Annotated[str, typer.Option("--to", help="redis:// URL of the online store.")],
) -> None:
    """Publish the latest feature snapshot to the Redis online store (replicas reload it)."""
    from serving.store import MemoryStore, RedisStore

    if not to.startswith(("redis://", "rediss://", "unix://")):
        raise DataError(f"--to: {to!r} is not a redis:// URL")
    frame = MemoryStore(features).snapshot()
    version = RedisStore(to).publish(frame)
    console.print(f"published {len(frame):,} customers as {version} to {to}")


campaign_log_app = typer.Typer(help="The service's campaign log.", no_args_is_help=True)


@campaign_log_app.command("prune")
def prune_cmd(
    before: Annotated[str, typer.Option(help="Delete events that happened before this date "
                                             "(YYYY-MM-DD).")],
    url: Annotated[str | None, typer.Option(
        help="Campaign log URL (default: data/campaign_log.db in the state home).")] = None,
    home: Annotated[Path | None, typer.Option(help="State folder (default $RETENTION_HOME or "
                                                   "~/.local/share/retention).")] = None,
) -> None:
    """Delete old campaign events: the log keeps every event until it is pruned."""
    import datetime as dt

    from features.campaign_log import CampaignLog
    from features.home import campaign_log_url

    try:
        cutoff = dt.datetime.fromisoformat(before)
    except ValueError:
        raise DataError(f"--before {before!r}: expected a date, YYYY-MM-DD") from None
    deleted = CampaignLog(url or campaign_log_url(home), create=False).prune(cutoff)
    console.print(f"deleted {deleted:,} events before {cutoff:%Y-%m-%d}")
