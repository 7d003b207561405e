"""Feature builds on Apache Spark: sessions, sources read by Spark, validation on the
executors, and the feature expressions on Ibis's pyspark backend, written in the engine's
as_of partition layout.

Sessions are local (`local[*]`, `local[2]`, `spark://…`) or Spark Connect (`sc://…`, also
taken from SPARK_REMOTE), set up the same way every time: UTC (the time rule's midnights),
Arrow between the JVM and Python, Python workers on this interpreter, and a warehouse and
scratch folder of their own that is removed afterwards, so runs in one working directory never
meet each other's tables.

Validation applies `features.validate.check_rows` to each batch of rows on the executors, so
every row-level rule is the one DuckDB builds use; the rules that need the whole source (row
numbers, a column's first timestamp, a majority of decimal commas, duplicate lines) run as
Spark aggregates and windows. Paths are read by the Spark driver (with Spark Connect: the
server), so they must be visible there.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.errors import DataError

if TYPE_CHECKING:
    import datetime as dt

    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from features.config import SourceConfig
    from features.segments import ValueTiers

REMOTE_ENV = "SPARK_REMOTE"
LOCAL_MASTER = "local[*]"
CONNECT_SCHEME = "sc://"
CONNECT_PORT = 15002  # a Spark Connect server's default port
CONNECT_MODE_ENV = "SPARK_CONNECT_MODE_ENABLED"  # PySpark's mark of a Connect process
# Settings every session gets; those a Spark Connect server owns (driver, files) are set only
# on sessions started here, as is Arrow's fallback (a Connect client always uses Arrow).
RUNTIME_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.ansi.enabled": "false",
}
LOCAL_CONF: dict[str, str] = {"spark.sql.execution.arrow.pyspark.fallback.enabled": "false"}
_LOG_CONFIG = """\
# Spark's own loggers configured at the root's level, so its start-up keeps that level quietly.
rootLogger.level = {level}
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{{HH:mm:ss}} %p %c{{1}}: %m%n
logger.spark.name = org.apache.spark
logger.spark.level = {level}
"""


def log_config(level: str = "error") -> str:
    """Spark's log4j2 settings at `level` (local sessions here; the Connect server script)."""
    return _LOG_CONFIG.format(level=level)


MEMORY_ENV = "SPARK_DRIVER_MEMORY"


def resolve_master(master: str | None = None) -> str:
    """The master to use: the argument, else $SPARK_REMOTE (Spark Connect), else local[*]."""
    return master or os.environ.get(REMOTE_ENV) or LOCAL_MASTER


def local_memory() -> str:
    """The driver heap of a local session when none is given: half the machine's memory, at
    least 1 GiB (a local session's driver also runs every task, and Spark's default of 1 GiB
    runs out on millions of lines)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "1g"
    return f"{max(1024, total // 2 // 2**20)}m"


def local_cores(master: str) -> int | None:
    """The worker threads of a `local[n]` / `local[*]` master (None for a cluster)."""
    if master == "local":
        return 1
    if master.startswith("local[") and master.endswith("]"):
        inner = master[len("local["):-1].split(",")[0]
        return (os.cpu_count() or 1) if inner == "*" else int(inner)
    return None


@contextmanager
def session(master: str | None = None, *, app: str = "retention",
            memory: str | None = None) -> Iterator[SparkSession]:
    """A Spark session for the length of the `with` block.

    `memory` sets the driver's heap (e.g. "4g"; default $SPARK_DRIVER_MEMORY, else for a local
    master `local_memory()`); it applies when this process starts its JVM (the first local
    session). A session already active in this process is reused and left
    running, so a caller (a test, a notebook) can hand its own session to the engine.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise DataError("--engine spark needs PySpark: pip install 'retention[spark]' "
                        "(and Java 17)") from None
    url = resolve_master(master)
    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    if url.startswith(CONNECT_SCHEME):
        # PySpark marks the whole process as Connect (pyspark.sql.functions then build Connect
        # columns) and keeps it so; unmarked afterwards, a later local session can start.
        marked = CONNECT_MODE_ENV in os.environ
        _reach(url)
        builder = SparkSession.builder.remote(url).appName(app)
        for key, value in RUNTIME_CONF.items():
            builder = builder.config(key, value)
        try:
            spark = _start(builder, url)
            try:
                yield spark
            finally:
                with suppress(Exception):  # a server that went away has nothing to release
                    spark.stop()
        finally:
            if not marked:
                os.environ.pop(CONNECT_MODE_ENV, None)
        return
    jvm_files = _jvm_scratch()
    java_options = f"-Dlog4j2.configurationFile={(jvm_files / 'log4j2.properties').as_uri()}"
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    scratch = Path(tempfile.mkdtemp(prefix="warehouse-", dir=jvm_files))
    builder = (
        SparkSession.builder.master(url).appName(app)
        .config("spark.sql.warehouse.dir", str(scratch / "warehouse"))
        .config("spark.local.dir", str(jvm_files / "local"))
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.executor.extraJavaOptions", java_options)
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    cores = local_cores(url)
    if cores is not None:  # a few shuffle partitions per thread, not the cluster default 200
        builder = builder.config("spark.sql.shuffle.partitions", str(max(4, 2 * cores)))
    for key, value in {**RUNTIME_CONF, **LOCAL_CONF}.items():
        builder = builder.config(key, value)
    memory = memory or os.environ.get(MEMORY_ENV) or (local_memory() if cores else None)
    if memory:
        builder = builder.config("spark.driver.memory", memory)
    try:
        spark = _start(builder, url)
        spark.sparkContext.setLogLevel("ERROR")
        try:
            yield spark
        finally:
            with suppress(Exception):  # a JVM that died has nothing left to stop
                spark.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_JVM_SCRATCH: list[Path] = []


def _jvm_scratch() -> Path:
    """This process's folder for the JVM's files (logging config, shuffle and spill files):
    the JVM keeps the first session's settings for its lifetime, so the folder lives as long
    as the process and is removed when it exits; each session's warehouse is a subfolder."""
    if not _JVM_SCRATCH:
        folder = Path(tempfile.mkdtemp(prefix="retention-spark-"))
        (folder / "log4j2.properties").write_text(log_config())
        atexit.register(shutil.rmtree, folder, True)
        _JVM_SCRATCH.append(folder)
    return _JVM_SCRATCH[0]


def _reach(url: str, seconds: float = 10.0) -> None:
    """Fail in one line when nothing answers at a Spark Connect URL (the client itself retries
    a refused connection for minutes before it says so)."""
    import socket
    from urllib.parse import urlsplit

    try:
        place = urlsplit(url.split(";", 1)[0])
        host, port = place.hostname or "localhost", place.port or CONNECT_PORT
    except ValueError as exc:
        raise DataError(f"spark {url}: not a Spark Connect URL ({exc})") from None
    try:
        socket.create_connection((host, port), timeout=seconds).close()
    except OSError as exc:
        raise DataError(f"spark {url}: no Spark Connect server answers at {host}:{port} "
                        f"({exc.strerror or exc})") from None


def _start(builder: SparkSession.Builder, url: str) -> SparkSession:
    try:
        return builder.getOrCreate()
    except ImportError as exc:  # Spark Connect's client libraries
        raise DataError(f"spark {url}: {exc}; pip install 'retention[spark]'") from None
    except Exception as exc:  # noqa: BLE001 - JVM start-up and connection errors vary
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"spark {url}: cannot start a session: {first}") from None


_ROW = "__row"
_REASON = "__reason"
_CANON = "__canon_"
_ROW_BITS = 33  # monotonically_increasing_id(): partition index << 33 | position in it


def read_source(spark: SparkSession, cfg: SourceConfig, table: str | None = None) -> DataFrame:
    """The raw rows of a CSV or Parquet source (CSV as text, empty fields as ""), or of the
    Spark table `table` mapped by `cfg`; every mapped column must be present."""
    from pyspark.sql import functions as F

    from features.config import WHITESPACE
    from features.sources import check_columns

    if table:
        where = f"spark table {table}"
        frame = _analysed(lambda: spark.table(table), where)
    elif cfg.format == "postgres":
        raise DataError(f"{cfg.location}: format 'postgres' is not read by --engine spark; "
                        "export the table to Parquet, or use --engine duckdb")
    else:
        path = cfg.resolved_path
        where = str(path)
        if not path.exists():
            raise DataError(f"{path}: file not found")
        if cfg.format == "parquet":
            frame = _analysed(lambda: spark.read.parquet(str(path)), where)
        else:
            if cfg.separator == WHITESPACE:
                raise DataError(f"{path}: `separator: {WHITESPACE}` is not read by --engine "
                                "spark; use --engine duckdb or a one-character separator")
            reader = (spark.read.option("header", cfg.header).option("sep", cfg.separator)
                      .option("encoding", cfg.encoding).option("quote", '"')
                      .option("escape", '"').option("inferSchema", False)
                      .option("mode", "PERMISSIVE"))
            frame = _analysed(lambda: reader.csv(str(path)), where)
            names = list(frame.columns)
            if names:
                names[0] = names[0].lstrip("\ufeff")  # a byte order mark is not data
            if not cfg.header:  # named as pandas names them: 0, 1, … unless `names`
                names = [str(i) for i in range(len(names))]
                names[: len(cfg.names or [])] = cfg.names or []
            frame = frame.toDF(*names)
            frame = frame.select(*[F.coalesce(F.col(f"`{c}`"), F.lit("")).alias(c)
                                   for c in frame.columns])
    import pandas as pd

    check_columns(pd.DataFrame(columns=frame.columns), cfg)
    return frame


def _analysed(read: Any, where: str) -> DataFrame:
    """`read()`, with Spark's analysis errors (unreadable file, unknown table) as one line."""
    try:
        frame = read()
        _ = frame.schema
    except Exception as exc:  # noqa: BLE001 - AnalysisException and its Connect twin
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{where}: not readable by Spark: {text}") from None
    if not frame.columns:
        raise DataError(f"{where}: no data rows")
    return frame


@dataclass
class SparkValidation:
    """Accepted canonical transactions and quarantined raw rows as Spark frames, with counts
    (the Spark twin of `features.validate.ValidationResult`)."""

    table: str
    source: str
    rows_in: int
    accepted: DataFrame
    quarantine: DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    checked: DataFrame | None = None  # every row with its reason, kept by Spark

    @property
    def n_quarantined(self) -> int:
        return int(sum(self.counts.values()))

    def release(self) -> None:
        """Let Spark drop the validated rows it keeps (after the build)."""
        if self.checked is not None:
            self.checked.unpersist()

    @property
    def n_accepted(self) -> int:
        return self.rows_in - self.n_quarantined

    def summary(self) -> dict[str, object]:
        return {"source": self.source, "table": self.table, "rows_in": self.rows_in,
                "accepted": self.n_accepted, "quarantined": self.n_quarantined,
                "reasons": dict(self.counts)}


def validate(raw: DataFrame, cfg: SourceConfig, now: dt.datetime | None = None,
             source: str | None = None) -> SparkValidation:
    """Map raw transaction rows onto the canonical table and quarantine bad rows, on Spark.

    The same reasons as `features.validate.validate`, counted on the engine; the accepted rows
    are kept (persisted) for the feature build.
    """
    import datetime as dt

    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from features.config import NUMERIC, ROW_NUMBER
    from features.contract import COST, TRANSACTIONS
    from features.validate import (
        DECIMAL_COMMA,
        REASONS,
        TIMESTAMPS,
        checks_duplicate_lines,
        decimal_comma_error,
    )

    if cfg.table != "transactions":
        raise DataError(f"{cfg.location}: --engine spark validates transactions sources only")
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    where = source or cfg.location
    raw_cols = list(raw.columns)
    text_cols = {f.name for f in raw.schema.fields if isinstance(f.dataType, T.StringType)}
    instants = [f.name for f in raw.schema.fields if isinstance(f.dataType, T.TimestampType)]
    mapped = {canon: src for canon, src in cfg.columns.items() if src != ROW_NUMBER}
    infer = [name for name in TIMESTAMPS if mapped.get(name) in text_cols
             and not cfg.timestamp_format]
    commas = [name for name in NUMERIC if mapped.get(name) in text_cols and cfg.decimal == "."]

    # Pass 1: rows per input partition (for source row numbers), each text timestamp column's
    # first value (the format pandas infers from it) and the decimal commas per number column.
    mid = F.monotonically_increasing_id()
    tagged = raw.withColumn("__id", mid)
    aggs = [F.count(F.lit(1)).alias("n")]
    for name in infer:
        text = F.trim(F.col(f"`{mapped[name]}`"))
        usable = text.isNotNull() & ~F.lower(text).isin("", "nat", "nan")
        aggs.append(F.min_by(F.when(usable, text), F.when(usable, F.col("__id")))
                    .alias(f"first_{name}"))
        aggs.append(F.min(F.when(usable, F.col("__id"))).alias(f"at_{name}"))
    for name in commas:
        hit = F.trim(F.col(f"`{mapped[name]}`")).rlike(f"^(?:{DECIMAL_COMMA})$")
        aggs.append(F.sum(hit.cast("long")).alias(f"commas_{name}"))
        aggs.append(F.min_by(F.when(hit, F.trim(F.col(f"`{mapped[name]}`"))),
                             F.when(hit, F.col("__id"))).alias(f"comma_{name}"))
    stats = (tagged.groupBy(F.shiftright(F.col("__id"), _ROW_BITS).alias("part"))
             .agg(*aggs).orderBy("part").collect())
    rows_in = sum(r["n"] for r in stats)
    if rows_in == 0:
        raise DataError(f"{where}: no data rows")
    first_values: dict[str, str | None] = {}
    for name in infer:
        seen = [(r[f"at_{name}"], r[f"first_{name}"]) for r in stats
                if r[f"at_{name}"] is not None]
        first_values[name] = min(seen)[1] if seen else None
    for name in commas:
        total = sum(r[f"commas_{name}"] or 0 for r in stats)
        if total * 2 > rows_in:
            example = next(r[f"comma_{name}"] for r in stats if r[f"comma_{name}"])
            raise decimal_comma_error(cfg, name, example)
    offsets, start = {}, 0
    for r in stats:
        offsets[r["part"]] = start
        start += r["n"]

    # Pass 2: every row-level rule of features.validate on batches of rows, on the executors.
    offset_map = F.create_map(*[F.lit(x) for kv in offsets.items() for x in kv])
    part = F.shiftright(F.col("__id"), _ROW_BITS)
    position = F.col("__id") - F.shiftleft(part, _ROW_BITS)
    numbered = tagged.withColumn(_ROW, offset_map[part] + position + F.lit(1)).drop("__id")
    canon_types = {"string": T.StringType(), "datetime64[us]": T.TimestampType(),
                   "float64": T.DoubleType(), "bool": T.BooleanType()}
    canonical = {**TRANSACTIONS, **({COST: "float64"} if cfg.has_cost else {})}
    out_schema = T.StructType(
        [*raw.schema.fields, T.StructField(_ROW, T.LongType()),
         T.StructField(_REASON, T.StringType())]
        + [T.StructField(_CANON + name, canon_types[dtype]) for name, dtype in canonical.items()]
    )
    checked = numbered.mapInPandas(
        _row_checker(cfg, now, first_values, raw_cols, instants, list(canonical)),
        out_schema)
    for canon, src in cfg.columns.items():
        if src == ROW_NUMBER and canon in TRANSACTIONS:
            checked = checked.withColumn(_CANON + canon,
                                         F.concat(F.lit(cfg.id_prefix), F.col(_ROW).cast("string")))
    if checks_duplicate_lines(cfg):
        copies = Window.partitionBy(*[F.col(f"`{c}`") for c in raw_cols]).orderBy(_ROW)
        repeated = F.row_number().over(copies) > 1
        checked = checked.withColumn(
            _REASON, F.coalesce(F.col(_REASON), F.when(repeated, F.lit("duplicate_line"))))
    checked = checked.persist(StorageLevel.MEMORY_AND_DISK)
    found = {r[_REASON]: int(r["n"]) for r in
             checked.where(F.col(_REASON).isNotNull()).groupBy(_REASON)
             .agg(F.count(F.lit(1)).alias("n")).collect()}
    counts = {r: found[r] for r in REASONS if r in found}
    accepted = checked.where(F.col(_REASON).isNull()).select(
        *[F.col(_CANON + name).alias(name) for name in canonical])
    quarantine = checked.where(F.col(_REASON).isNotNull()).select(
        F.col(_ROW).alias("row"), F.col(_REASON).alias("reason"),
        *[F.col(f"`{c}`").cast("string").alias(c) for c in raw_cols])
    return SparkValidation(cfg.table, where, rows_in, accepted, quarantine, counts, checked)


def _row_checker(cfg: SourceConfig, now: dt.datetime, first_values: dict[str, str | None],
                 raw_cols: list[str], instants: list[str], canon: list[str]) -> Any:
    """The function mapInPandas runs on each executor: check_rows on batches of raw rows,
    giving the `canon` columns of each."""

    def check(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np
        import pandas as pd

        from features.validate import check_rows

        for batch in batches:
            raw = batch[raw_cols].reset_index(drop=True)
            for name in instants:  # Spark's TIMESTAMP is an instant: UTC, not local time
                raw[name] = raw[name].dt.tz_localize("UTC")
            canonical, reason = check_rows(raw, cfg, now, whole=False,
                                           first_values=first_values)
            out = batch.reset_index(drop=True)
            out[_REASON] = pd.array(np.where(reason == None, None, reason),  # noqa: E711
                                    dtype="string")
            for name in canon:
                out[_CANON + name] = canonical[name].to_numpy()
            yield out

    return check


def write_validation(result: SparkValidation, out_dir: Path) -> None:
    """validation.json and quarantine.parquet (one file, written by Spark) under out_dir."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "validation.json").write_text(json.dumps(result.summary(), indent=2))
    _write_one_file(result.quarantine.orderBy("row"), out_dir / "quarantine.parquet")


def _write_one_file(frame: DataFrame, target: Path,
                    place: Callable[[Path, Path], None] = os.replace) -> int:
    """Write `frame` as one Parquet file, put in place as `target` by `place` (by default
    replacing the file `target` atomically); its rows."""
    import pyarrow.parquet as pq

    target = target.resolve()  # a Spark Connect server resolves relative paths in its own cwd
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        frame.coalesce(1).write.mode("overwrite").parquet(str(staging / "out"))
        [written] = sorted((staging / "out").glob("part-*.parquet"))
        rows = pq.read_metadata(written).num_rows
        place(written, target)
        return rows
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build(
    spark: SparkSession,
    accepted: DataFrame,
    as_ofs: list[dt.date],
    out_dir: Path,
    *,
    horizon_days: int | None = 90,
    lookback_days: int = 365,
    tiers: ValueTiers | None = None,
    data_end: dt.date | None = None,
    on_done: Any = None,
) -> dict[dt.date, Path]:
    """The feature table of each as_of from accepted transactions, computed by Spark with the
    expressions of `features.engine.feature_table` and written by Spark as one Parquet file
    per as_of, published whole like the DuckDB engine's partitions."""
    import datetime as dt

    import ibis
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from features import engine
    from features import pointintime as pit
    from features.contract import FEATURE_INPUT

    con = ibis.pyspark.connect(spark)
    tag = f"retention_{os.getpid()}_{id(accepted):x}"
    accepted.select(*[c for c in FEATURE_INPUT if c in accepted.columns]).createOrReplaceTempView(
        f"{tag}_tx")
    tx = con.table(f"{tag}_tx")
    cached = []
    for name, expr in (("days", pit.purchase_days(tx)), ("products", pit.first_purchases(tx))):
        frame = spark.sql(con.compile(expr)).persist(StorageLevel.MEMORY_AND_DISK)
        frame.createOrReplaceTempView(f"{tag}_{name}")
        cached.append(frame)
    if data_end is None:
        last = accepted.agg(F.max("timestamp")).collect()[0][0]
        if last is None:
            raise DataError("no accepted transactions to build features from")
        data_end = last.date() + dt.timedelta(days=1)
    tables = engine.FeatureTables(days=con.table(f"{tag}_days"),
                                  products=con.table(f"{tag}_products"), data_end=data_end)
    written: dict[dt.date, Path] = {}
    out_dir = Path(out_dir).resolve()  # written by the server, with Spark Connect
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for as_of in as_ofs:
            expr = engine.feature_table(tables, as_of, horizon_days, lookback_days, tiers)
            frame = spark.sql(con.compile(expr)).drop(engine.PARTITION_KEY)
            part = engine.partition_dir(out_dir, as_of)
            rows = _write_one_file(frame, part, place=engine.publish_file)
            written[as_of] = part
            if on_done:
                on_done(as_of, rows)
    finally:
        for frame in cached:
            frame.unpersist()
        for name in ("tx", "days", "products"):
            spark.catalog.dropTempView(f"{tag}_{name}")
    return written
