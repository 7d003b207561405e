"""Batch scoring on Spark: `retention score --engine spark`.

The same risk list as `serving.batch.score_population`, computed where the snapshot lives:

- the population steps run once, on the driver, from what Spark aggregates: the BTYD
  components refitted on the snapshot's population (`training.spark_frames.for_population`,
  from customer counts per distinct summary row), and the number of customers at or below
  each distinct churn probability (the exact rank `enrich` takes from the sorted population);
- the registered `customer-scorer` scores the rows on the workers as an MLflow Spark UDF, from
  a copy of the registered model whose scorer carries the refitted components; its result is
  a struct typed by the model's output schema, its inputs cast to the model's input schema;
- `enrich` adds band, percentile, segment, tier and next purchase date per Arrow batch.

The output is a Parquet folder (one file per partition), ranked by value at risk.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import joblib
import numpy as np
import pandas as pd

from features.engine import partitions
from features.errors import DataError
from serving.batch import CARRIED, enrich, risk_percentile
from serving.config import RiskBands
from training.scorer import SCORE_COLUMNS, CustomerScorer

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel
    from pyspark.sql import DataFrame, SparkSession

AT_OR_BELOW = "_at_or_below"  # customers whose churn probability is <= the row's
SCORES = "_scores"
SCORER_ARTIFACT = "scorer"  # the pyfunc's artifact holding the joblib-saved CustomerScorer
BROADCAST_RANKS = 1_000_000  # customers below which the rank table is sent to every task
UNPARTITIONED_WINDOW = "WARN WindowExpression: No Partition Defined"


def read_snapshot(spark: SparkSession, features: Path) -> tuple[DataFrame, dt.date]:
    """The newest as_of partition of a `features build` table, with `as_of` as an ISO date
    string (the scorer's input), and that as_of."""
    parts = partitions(Path(features))
    if not parts:
        raise DataError(f"{features}: no feature partitions (run `retention features build`)")
    day, part = next(reversed(parts.items()))
    from pyspark.sql import functions as F

    frame = spread(spark, spark.read.parquet(str(part.resolve())))
    if "as_of" in frame.columns:
        frame = frame.drop("as_of")
    return frame.withColumn("as_of", F.lit(day.isoformat())), day


def spread(spark: SparkSession, frame: DataFrame) -> DataFrame:
    """`frame` in at least one partition per core: an as_of written as one file is read as one
    partition, which the model would score on one core. Unchanged with Spark Connect, which
    exposes neither the cluster's cores nor a frame's partitions."""
    try:
        cores = int(spark.sparkContext.defaultParallelism)
        current = frame.rdd.getNumPartitions()
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext or RDDs
        return frame
    return frame.repartition(cores) if current < cores else frame


def population_model(uri: str, model: PyFuncModel, scorer: CustomerScorer, where: Path) -> str:
    """A copy at `where` of the pyfunc `uri` whose scorer is `scorer` (the registered one with
    components refitted for the population): what the workers load. Returns its path."""
    from mlflow.artifacts import download_artifacts

    copy = Path(download_artifacts(uri, dst_path=str(where)))
    artifact = model.metadata.flavors["python_function"]["artifacts"][SCORER_ARTIFACT]["path"]
    joblib.dump(scorer, copy / artifact)
    return str(copy)


def spark_types(model: PyFuncModel) -> tuple[dict[str, str], object]:
    """(input column -> Spark SQL type, output struct type) from the model's signature."""
    inputs = model.metadata.get_input_schema()
    outputs = model.metadata.get_output_schema()
    if inputs is None or outputs is None:
        raise DataError("the registered model has no signature: register it again with "
                        "`retention train`")
    from pyspark.sql import types as T

    casts = {f.name: f.dataType.simpleString() for f in inputs.as_spark_schema().fields}
    # Nullable as the Arrow batches the UDF returns are (a required field is refused).
    result = T.StructType([T.StructField(f.name, f.dataType, nullable=True)
                           for f in outputs.as_spark_schema().fields])
    return casts, result


def score_snapshot(spark: SparkSession, table: DataFrame, model_uri: str, casts: dict[str, str],
                   result_type: object, bands: RiskBands) -> DataFrame:
    """Every score of every row of `table` plus the columns `enrich` adds, ranked by value at
    risk (highest first): the rows of `serving.batch.score_population` on Spark."""
    import mlflow
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    missing = [c for c in casts if c not in table.columns]
    if missing:
        raise DataError(f"feature snapshot: missing columns {missing} that the model needs")
    udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=result_type,
                                  env_manager="local")
    carried = [c for c in CARRIED if c in table.columns]
    inputs = F.struct(*[F.col(c).cast(t).alias(c) for c, t in casts.items()])
    scored = (table.select(udf(inputs).alias(SCORES), *carried)
              .select(f"{SCORES}.*", *carried)
              .persist(StorageLevel.MEMORY_AND_DISK))
    total = scored.count()
    if total == 0:
        raise DataError("feature snapshot is empty: nothing to score")
    # Customers at or below each distinct probability: np.searchsorted(sorted, p, "right").
    cumulative = Window.orderBy("churn_probability").rowsBetween(Window.unboundedPreceding,
                                                                 Window.currentRow)
    ranks = (scored.groupBy("churn_probability").agg(F.count(F.lit(1)).alias("_n"))
             .select("churn_probability", F.sum("_n").over(cumulative).alias(AT_OR_BELOW)))
    ranked = scored.join(F.broadcast(ranks) if total < BROADCAST_RANKS else ranks,
                         "churn_probability")

    carried_fields = [table.schema[c] for c in carried]
    absent = [T.StructField(c, T.StringType()) for c in CARRIED if c not in table.columns]
    fields = {f.name: f for f in result_type.fields}
    out_schema = T.StructType([
        *[fields[c] for c in SCORE_COLUMNS],
        T.StructField("risk_percentile", T.DoubleType()),
        T.StructField("risk_band", T.StringType()),
        *sorted([*carried_fields, *absent], key=lambda f: CARRIED.index(f.name)),
        T.StructField("expected_next_purchase", T.StringType()),
    ])
    names = out_schema.fieldNames()

    def enrich_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            out = enrich(batch[list(SCORE_COLUMNS)], batch[carried], bands,
                         population=np.empty(0))
            out["risk_percentile"] = risk_percentile(batch[AT_OR_BELOW].to_numpy(), total)
            yield out[names]

    return (ranked.mapInPandas(enrich_batches, out_schema)
            .orderBy(F.desc("value_at_risk"), F.asc("customer_id")))


def run(features: Path, out: str, bands: RiskBands, version: str, *,
        master: str | None = None, memory: str | None = None,
        on_refit: Callable[[dt.date, object], None] | None = None) -> tuple[int, str]:
    """`retention score --engine spark`: the snapshot scored by `customer-scorer` `version`,
    written as a Parquet folder at `out`. Returns (customers, where)."""
    import mlflow

    from features.spark import session
    from training.registry import RegisteredModel
    from training.spark_frames import for_population

    if "://" in out and not out.startswith("file://"):
        raise DataError(f"--out {out!r}: --engine spark writes a Parquet folder (a path)")
    if "://" not in out:  # read and written by the server, with Spark Connect
        out = str(Path(out).resolve())
    uri = f"models:/{RegisteredModel.SCORER}/{version}"
    model = mlflow.pyfunc.load_model(uri)
    registered: CustomerScorer = model.unwrap_python_model().scorer
    casts, result_type = spark_types(model)
    with session(master, app="retention-score", memory=memory) as spark, \
            tempfile.TemporaryDirectory(prefix="retention-model-") as tmp:
        table, as_of = read_snapshot(spark, features)
        scorer = for_population(registered, table, as_of)
        model_uri = uri
        if scorer is not registered:
            if on_refit:
                on_refit(as_of, registered.metadata.get("data_end"))
            model_uri = population_model(uri, model, scorer, Path(tmp))
        with warnings.catch_warnings():
            # The running sum over distinct probabilities is one partition by design; a Spark
            # Connect client warns of every window without one.
            warnings.filterwarnings("ignore", message=UNPARTITIONED_WINDOW)
            scores = score_snapshot(spark, table, model_uri, casts, result_type, bands)
            scores.write.mode("overwrite").parquet(out)
        written = spark.read.parquet(out).count()
    return written, out
