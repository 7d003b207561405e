"""Feature tables held by Spark, brought to the driver only as far as a fit needs them.

- the BTYD components of a whole population, fitted on what Spark groups: customer counts per
  distinct (frequency, recency, T) for BG/NBD and Pareto/NBD, and per distinct (frequency,
  monetary_value) of repeat buyers for Gamma-Gamma. Each model groups identical rows before its
  likelihood anyway, so these counts give the very fit of one row per customer;
- `CustomerScorer.for_population` on such a table: the same decision, with that fit;
- a seeded sample of customers (all of a customer's transactions or none, stratified by
  repeat purchase days), collected to the driver for `retention train --engine spark`.

PySpark is imported where it is used: the rest of the pipeline runs without it.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pandas as pd

from features.errors import DataError
from training.components import PNBD_MAX_PARAM, Components
from training.models.btyd import BetaGeoModel, GammaGammaModel, ParetoNBDModel
from training.scorer import MIN_REFIT, CustomerScorer

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from features.config import SourceConfig

RFT = ("frequency", "recency", "T")
SPEND = ("frequency", "monetary_value")
COUNT = "customers"
POPULATION = "in_population"
# Strata of the customer sample: repeat-purchase days, capped (the long tail is one stratum).
STRATA_CAP = 10


def population(table: DataFrame) -> DataFrame:
    """The rows a component fit learns from: `in_population` ones, every row without it."""
    from pyspark.sql import functions as F

    return table.where(F.col(POPULATION)) if POPULATION in table.columns else table


def btyd_counts(table: DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customer counts per distinct (frequency, recency, T), and per distinct (frequency,
    monetary_value) of repeat buyers with a positive average spend, as pandas frames.

    Their size is the number of distinct rows, not of customers: (frequency, recency, T) are
    whole days bounded by the history's length.
    """
    from pyspark.sql import functions as F

    rft = (table.groupBy(*[F.col(c).cast("double").alias(c) for c in RFT])
           .agg(F.count(F.lit(1)).alias(COUNT)).toPandas())
    m = F.col("monetary_value").cast("double")
    repeat = table.where((F.col("frequency") > 0) & (m > 0) & ~F.isnan(m))
    spend = (repeat.groupBy(F.col("frequency").cast("double").alias("frequency"),
                            m.alias("monetary_value"))
             .agg(F.count(F.lit(1)).alias(COUNT)).toPandas())
    return rft, spend


def fit_counted_components(rft: pd.DataFrame, spend: pd.DataFrame) -> Components:
    """BG/NBD, Pareto/NBD and Gamma-Gamma fitted on counted rows (`btyd_counts`): the same
    models and settings as `training.components.fit_components` on one row per customer."""
    f, r, t, w = (rft[c].to_numpy(dtype="float64") for c in (*RFT, COUNT))
    bg = BetaGeoModel().fit(f, r, t, weights=w)
    pnbd = ParetoNBDModel(max_param=PNBD_MAX_PARAM).fit(f, r, t, weights=w)
    gg = GammaGammaModel().fit(spend["frequency"].to_numpy(dtype="float64"),
                               spend["monetary_value"].to_numpy(dtype="float64"),
                               weights=spend[COUNT].to_numpy(dtype="float64"))
    return Components(bg, pnbd, gg)


def for_population(scorer: CustomerScorer, table: DataFrame, as_of: dt.date) -> CustomerScorer:
    """`scorer.for_population` for a one-as_of snapshot held by Spark: components refitted on
    its population's counts unless `as_of` is the model's data end or the population has fewer
    than MIN_REFIT customers."""
    if as_of.isoformat() == scorer.metadata.get("data_end"):
        return scorer
    rows = population(table)
    if rows.count() < MIN_REFIT:
        return scorer
    return scorer.with_components(fit_counted_components(*btyd_counts(rows)))


def sample_transactions(accepted: DataFrame, n: int, *, seed: int = 0) -> DataFrame:
    """Every transaction of about `n` customers of `accepted` (canonical transactions), chosen
    by a seeded hash of the id within each stratum of repeat purchase days (capped at
    STRATA_CAP), each stratum in proportion to its size: the same customers for the same
    data, seed and n. All of `accepted` when it has n customers or fewer.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    days = F.count_distinct(F.when(~F.col("is_return"), F.to_date("timestamp")))
    customers = (accepted.groupBy("customer_id").agg(days.alias("_days"))
                 .withColumn("_stratum", F.least(F.greatest(F.col("_days") - 1, F.lit(0)),
                                                 F.lit(STRATA_CAP))))
    total = customers.count()
    if total <= n:
        return accepted
    order = Window.partitionBy("_stratum").orderBy(
        F.xxhash64("customer_id", F.lit(seed)), "customer_id")
    chosen = (customers.withColumn("_rank", F.row_number().over(order))
              .withColumn("_size", F.count(F.lit(1)).over(Window.partitionBy("_stratum")))
              .where(F.col("_rank") <= F.round(F.col("_size") * F.lit(n / total)))
              .select("customer_id"))
    return accepted.join(chosen, "customer_id", "left_semi")


def collect_transactions(table: DataFrame) -> pd.DataFrame:
    """Canonical transactions held by Spark as the pandas frame `features.validate` gives
    (text as strings, timestamps in microseconds), in a fixed order."""
    frame = table.toPandas()
    text = [c for c in frame.columns if frame[c].dtype == object or c.endswith("_id")]
    frame = frame.astype({c: "string" for c in text})
    frame["timestamp"] = frame["timestamp"].astype("datetime64[us]")
    keys = [c for c in ("customer_id", "timestamp", "order_id", "product_id") if c in frame]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def sampled_transactions(src: SourceConfig, n: int | None, *, master: str | None = None,
                         seed: int = 0) -> tuple[pd.DataFrame, dt.date, int]:
    """The source read and validated on Spark, and the transactions of a seeded sample of
    about `n` customers (all when None) collected to the driver: (transactions, data end,
    customers in the whole source). The data end is the source's `extracted_at`, else the day
    after its last transaction (of every customer, not only the sampled ones)."""
    from pyspark.sql import functions as F

    from features import spark as on_spark

    with on_spark.session(master, app="retention-train") as spark:
        checked = on_spark.validate(on_spark.read_source(spark, src), src)
        accepted = checked.accepted
        total = accepted.select("customer_id").distinct().count()
        if src.extracted_at:
            data_end = src.extracted_at.date()
        else:
            last = accepted.agg(F.max("timestamp")).collect()[0][0]
            if last is None:
                raise DataError(f"{src.location}: no accepted transactions")
            data_end = last.date() + dt.timedelta(days=1)
        chosen = accepted if n is None else sample_transactions(accepted, n, seed=seed)
        return collect_transactions(chosen), data_end, total
