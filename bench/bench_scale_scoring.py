"""Scale-out scoring benchmark: rows per second per core of `retention score --engine spark`
(the registered model as an MLflow Spark UDF) on Spark local[1] and local[2], against
`serving.batch.score_population` (what `retention score` runs in one process) on the same
snapshot and model, in the same run.

Setup (not timed), in a temp dir: a seeded synthetic retailer of --train-customers, trained
and promoted with the default TrainConfig (600 trees per model) into a temp SQLite MLflow
store; a second seeded retailer of --customers and its feature snapshot at the data end
(`retention features build --horizon 90d`), which is what is scored.

Timed, median of --runs each, reasons on (the default of `retention score`):
- `score_population` with 1 worker and XGBoost on 1 thread (one core), then with its default
  (2 workers);
- Spark local[1] and local[2]: `spark_scoring.score_snapshot` written to Parquet in a session
  already started (the JVM start is reported apart), model loaded from the registry.

Results are checked: the Spark rows equal `score_population`'s for every customer (numbers to
1e-9) before any timing is reported. The report replaces the "scale-scoring" section of
bench/RESULTS.md.

    python bench/bench_scale_scoring.py           # the real run (200k customers)
    python bench/bench_scale_scoring.py --quick   # smoke run; writes to a temp file unless --out
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from bench_serving import retention
from results_file import RESULTS, environment, environment_table, fmt, write_section

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("numpy", "pandas", "xgboost-cpu", "mlflow", "pyspark", "pyarrow")
TARGET_CUSTOMERS = 50_000_000


def retailer(home: Path, name: str, customers: int, seed: int) -> tuple[Path, str]:
    """Synthetic data and its feature snapshot at the data end; (features dir, as_of)."""
    data = home / name
    retention("demo-data", "--out", str(data), "--customers", str(customers), "--seed",
              str(seed), "--dirty", "0", cwd=home)
    end = str(yaml.safe_load((data / "transactions.yaml").read_text())["extracted_at"])[:10]
    retention("features", "build", "--source", str(data / "transactions.yaml"), "--as-of", end,
              "--horizon", "90d", "--out", str(home / f"{name}-features"), cwd=home)
    return home / f"{name}-features", end


def local_runs(version: str, features: Path, runs: int, workers: int) -> tuple[list[float],
                                                                                pd.DataFrame]:
    """Wall seconds of `score_population` (1 worker: XGBoost on one thread too)."""
    import xgboost as xgb

    from serving.batch import score_population
    from serving.config import RiskBands
    from serving.store import MemoryStore
    from training.registry import load_scorer

    snapshot = MemoryStore(features).snapshot()
    scorer = load_scorer(version)
    walls, scores = [], None
    for _ in range(runs):
        start = time.perf_counter()
        with xgb.config_context(nthread=workers):
            scores = score_population(scorer.for_population(snapshot), snapshot, RiskBands(),
                                      workers=workers)
        walls.append(time.perf_counter() - start)
        print(f"  score_population workers={workers}: {walls[-1]:.2f} s", flush=True)
    return walls, scores


def spark_runs(version: str, features: Path, runs: int, cores: int, out: Path
               ) -> tuple[list[float], float, pd.DataFrame]:
    """(wall seconds per run, session start seconds, the scores) on local[cores]."""
    import mlflow

    from features.spark import session
    from serving import spark_scoring
    from serving.config import RiskBands
    from training.registry import RegisteredModel
    from training.spark_frames import for_population

    uri = f"models:/{RegisteredModel.SCORER}/{version}"
    model = mlflow.pyfunc.load_model(uri)
    casts, result_type = spark_scoring.spark_types(model)
    start = time.perf_counter()
    with session(f"local[{cores}]", app="bench-scale-scoring") as spark, \
            tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter() - start
        walls = []
        for i in range(runs):
            t0 = time.perf_counter()
            table, as_of = spark_scoring.read_snapshot(spark, features)
            registered = model.unwrap_python_model().scorer
            scorer = for_population(registered, table, as_of)
            model_uri = uri if scorer is registered else spark_scoring.population_model(
                uri, model, scorer, Path(tmp) / str(i))
            scores = spark_scoring.score_snapshot(spark, table, model_uri, casts, result_type,
                                                  RiskBands())
            scores.write.mode("overwrite").parquet(str(out))
            walls.append(time.perf_counter() - t0)
            spark.catalog.clearCache()
            print(f"  spark local[{cores}]: {walls[-1]:.2f} s", flush=True)
    return walls, started, pd.read_parquet(out)


def check_equal(expected: pd.DataFrame, got: pd.DataFrame) -> list[str]:
    """Columns whose values differ between the two (numbers beyond 1e-9)."""
    exp = expected.set_index("customer_id").sort_index()
    out = got.set_index("customer_id").sort_index()
    if not out.index.equals(exp.index):
        return ["customer_id"]
    bad = []
    for col in exp.columns:
        a, b = exp[col], out[col]
        if pd.api.types.is_numeric_dtype(a):
            x, y = a.to_numpy(dtype="float64"), b.to_numpy(dtype="float64")
            if not np.all((np.isnan(x) & np.isnan(y)) | (np.abs(x - y) <= 1e-9)):
                bad.append(col)
        elif not ((a.isna() & b.isna()) | (a.astype(object) == b.astype(object))).all():
            bad.append(col)
    return bad


def report(rows: list[dict], n: int, started: dict[int, float], differing: list[str],
           args: argparse.Namespace) -> str:
    env = environment(PACKAGES)
    command = " ".join(["python bench/bench_scale_scoring.py", *sys.argv[1:]])
    lines = [
        "### Scale-out scoring (`bench/bench_scale_scoring.py`)", "",
        f"Written by `bench/bench_scale_scoring.py` on {env['date']}; every number below comes "
        f"from that one run (`{command}`). {n:,} customers (a synthetic retailer of "
        f"{args.customers:,}, snapshot at its data end), scored with reasons by a model trained "
        f"with the default TrainConfig on {args.train_customers:,} other customers; median of "
        f"{args.runs} runs. Rows per second per core = customers / wall seconds / cores.", "",
        "| engine | cores | median s | min s | max s | rows/s | rows/s per core |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        med = statistics.median(r["walls"])
        lines.append(f"| {r['name']} | {r['cores']} | {fmt(med)} | {fmt(min(r['walls']))} | "
                     f"{fmt(max(r['walls']))} | {n / med:,.0f} | {n / med / r['cores']:,.0f} |")
    best = max((r for r in rows if r["spark"]),
               key=lambda r: n / statistics.median(r["walls"]) / r["cores"])
    per_core = n / statistics.median(best["walls"]) / best["cores"]
    core_hours = TARGET_CUSTOMERS / per_core / 3600
    lines += [
        "", "Spark session start (JVM, not in the timings): " + ", ".join(
            f"local[{c}] {s:.1f} s" for c, s in started.items()) + ".",
        "Spark timings include reading the snapshot, the population steps on the driver (BTYD "
        "counts and refit when the snapshot is not at the model's data end, the exact "
        "percentile ranks), the UDF, the sort by value at risk and the Parquet write.", "",
        "Checked before reporting: the Spark rows equal `score_population`'s for every "
        "customer and column (numbers to 1e-9): "
        + ("yes." if not differing else f"**no**, differing columns: {differing} (the value "
           "simulation depends on the batch a customer is scored in until it is seeded per "
           "customer)."),
        "", f"Sizing, indicative: at {per_core:,.0f} rows/s per core ({best['name']}), "
        f"{TARGET_CUSTOMERS / 1e6:.0f}M customers take {core_hours:,.1f} core-hours, e.g. "
        f"{core_hours * 60 / 64:,.1f} minutes on 64 cores, plus the driver's population "
        "steps and the shuffle of the sort.", "",
        *environment_table(env),
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=None, help="customers scored")
    p.add_argument("--train-customers", type=int, default=None)
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="smoke run to a temp file")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    q = args.quick
    args.customers = args.customers or (5_000 if q else 200_000)
    args.train_customers = args.train_customers or (1_500 if q else 20_000)
    args.runs = args.runs or (1 if q else 3)
    out = args.out or (Path(tempfile.gettempdir()) / "RESULTS-quick.md" if q else RESULTS)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        home = Path(tmp)
        tracking = f"sqlite:///{home / 'mlruns' / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = tracking
        env = {**os.environ, "RETENTION_HOME": str(home)}
        print("setup: training retailer", flush=True)
        small = home / "train"
        retention("demo-data", "--out", str(small), "--customers", str(args.train_customers),
                  "--seed", "1", "--dirty", "0", cwd=home)
        train_args = ["--config", str(home / "quick.yaml")] if q else []
        (home / "quick.yaml").write_text("n_estimators: 60\n")
        retention("train", "--source", str(small / "transactions.yaml"), "--promote",
                  "--no-recommender", *train_args, cwd=home, env=env)
        print(f"setup: snapshot of {args.customers:,} customers", flush=True)
        features, _ = retailer(home, "score", args.customers, seed=2)
        from training import registry
        from training.registry import RegisteredModel

        registry.configure(tracking)
        version = str(registry.aliased_version(RegisteredModel.SCORER, "champion").version)
        rows, started = [], {}
        walls, expected = local_runs(version, features, args.runs, workers=1)
        rows.append({"name": "`score_population`, 1 worker", "cores": 1, "walls": walls,
                     "spark": False})
        walls, _ = local_runs(version, features, args.runs, workers=2)
        rows.append({"name": "`score_population`, 2 workers", "cores": 2, "walls": walls,
                     "spark": False})
        differing: list[str] = []
        for cores in (1, 2):
            walls, started[cores], got = spark_runs(version, features, args.runs, cores,
                                                    home / f"spark-{cores}")
            differing = sorted(set(differing) | set(check_equal(expected, got)))
            rows.append({"name": f"Spark local[{cores}], `spark_udf`", "cores": cores,
                         "walls": walls, "spark": True})
        n = len(expected)
    write_section("scale-scoring", report(rows, n, started, differing, args), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
