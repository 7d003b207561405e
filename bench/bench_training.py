"""Training time: the stages of `retention train` and the item recommender alone.

Each scenario runs in a fresh child process (so its peak RSS is its own) and makes the library
calls `retention train` makes, in the same order: `features.validate.load` of the source
config, `training.train.train`, `training.registry.log_training` with `training.report.figures`
into a throw-away MLflow store, then `training.cli.fit_recommender` and
`training.registry.log_recommender`. Every stage is timed in wall and CPU seconds (CPU counts
every thread of the process; on a shared machine it is the steadier of the two).

Data: Online Retail II (read by path from the shared datasets folder) and a seeded synthetic
retailer with a 100,000-product catalogue and about 1.5M lines (`features.synthetic`, written
as Parquet with its source config, so it is read and validated like any source). The
recommender-alone scenarios read, fit and answer `recommend` for up to 2,000 customers.
Writes the "training" section of bench/RESULTS.md.

    python bench/bench_training.py            # the real run
    python bench/bench_training.py --quick    # smoke run (small synthetic data only); writes
                                              # to a temp file unless --out
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import RESULTS, environment, environment_table, fmt, write_section

ROOT = Path(__file__).resolve().parents[1]
ORII = ROOT / "configs" / "sources" / "online_retail_ii.yaml"
TARGET_S = 60.0  # `retention train` on Online Retail II, wall seconds on 2 cores
BIG = {"n_customers": 150_000, "n_products": 100_000, "seed": 0}
QUICK = {"n_customers": 3_000, "n_products": 5_000, "seed": 0}
RECOMMEND_CUSTOMERS = 2_000


class Clock:
    """Wall and CPU seconds per stage, from `clock(key)` calls (each ends the previous)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._at: tuple[str, float, float] | None = None

    def __call__(self, key: str | None) -> None:
        now = (time.perf_counter(), time.process_time())
        if self._at is not None:
            name, wall, cpu = self._at
            self.wall[name] = self.wall.get(name, 0.0) + now[0] - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + now[1] - cpu
        self._at = None if key is None else (key, *now)


def synthetic_source(params: dict, folder: Path) -> Path:
    """The seeded synthetic retailer written as Parquet; returns its transactions config."""
    from features.synthetic import SyntheticConfig, generate, write

    return write(generate(SyntheticConfig(**params)), folder)["transactions"]


def run_train(source: Path, store: Path, quick: bool) -> dict:
    """`retention train` by its library calls; stage keys as the CLI logs them."""
    from features.config import load_source_config
    from features.validate import load
    from training import registry
    from training.cli import fit_recommender
    from training.report import figures
    from training.train import TrainConfig, train

    clock = Clock()
    # train() reports its stages through `step`, in this order (TrainResult.stage_seconds).
    inner = iter(["features", "btyd", "fit_select", "refit", "evaluate"])
    cfg = TrainConfig(n_estimators=60) if quick else TrainConfig()
    src = load_source_config(source)
    clock("read")
    result = load(src)
    data_end = src.extracted_at.date() if src.extracted_at else None
    trained = train(result.accepted, cfg, data_end=data_end, step=lambda _: clock(next(inner)))
    clock("log")
    registry.configure(home=store)
    lineage = {"source": src.name, "rows": len(result.accepted), "digest": "bench",
               "as_of": trained.cutoffs.test.isoformat(), "horizon_days": cfg.horizon_days}
    run_id, _ = registry.log_training(trained, cfg, lineage,
                                      figures(trained, interval_target=cfg.interval_target))
    clock("recommender")
    model = fit_recommender(result.accepted, src)
    registry.log_recommender(run_id, model)
    clock(None)
    return {"wall": clock.wall, "cpu": clock.cpu, "lines": len(result.accepted),
            "customers": int(result.accepted["customer_id"].nunique()),
            "products": len(model.items_), "library_stage_seconds": trained.stage_seconds}


def run_recommender(source: Path) -> dict:
    """Read, fit the recommender alone, answer `recommend` for up to 2,000 customers."""
    from features.config import load_source_config
    from features.validate import load
    from training.cli import fit_recommender

    clock = Clock()
    src = load_source_config(source)
    clock("read")
    result = load(src)
    clock("fit")
    model = fit_recommender(result.accepted, src)
    clock("recommend")
    ids = list(model.customers_[:RECOMMEND_CUSTOMERS])
    model.recommend(ids, k=10)
    clock(None)
    return {"wall": clock.wall, "cpu": clock.cpu, "lines": len(result.accepted),
            "customers": len(model.customers_), "products": len(model.items_),
            "neighbour_pairs": len(model.neighbors_), "recommended": len(ids)}


def child(kind: str, source: Path, store: Path, quick: bool) -> None:
    """One scenario in this process; prints its result (with peak RSS) as JSON."""
    out = run_train(source, store, quick) if kind == "train" else run_recommender(source)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def scenario(kind: str, source: Path, store: Path, quick: bool) -> dict:
    """Run one scenario in a fresh interpreter; its parsed result."""
    cmd = [sys.executable, __file__, "--child", kind, "--source", str(source),
           "--store", str(store), *(["--quick"] if quick else [])]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    if proc.returncode != 0:
        raise SystemExit(f"{kind} on {source}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    res = json.loads(line.removeprefix("RESULT "))
    res["process_wall"] = time.perf_counter() - start
    return res


def stage_table(res: dict) -> list[str]:
    wall, cpu = res["wall"], res["cpu"]
    total_w, total_c = sum(wall.values()), sum(cpu.values())
    rows = ["| stage | wall s | CPU s | share of wall |", "|---|---:|---:|---:|"]
    rows += [f"| {k} | {fmt(wall[k])} | {fmt(cpu[k])} | {wall[k] / total_w:.0%} |"
             for k in wall]
    rows.append(f"| **total** | **{fmt(total_w)}** | **{fmt(total_c)}** | |")
    return rows


def describe(name: str, res: dict) -> str:
    return (f"{name}: {res['lines']:,} accepted lines, {res['customers']:,} customers, "
            f"{res['products']:,} products bought; peak RSS {res['peak_rss_mb']:,.0f} MB; "
            f"child process {fmt(res['process_wall'])} s wall including imports.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small synthetic data only")
    p.add_argument("--out", type=Path, default=None,
                   help=f"report path (default {RESULTS}; a temp file with --quick)")
    p.add_argument("--child", choices=["train", "recommender"], help=argparse.SUPPRESS)
    p.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.source, args.store, args.quick)
        return
    out = args.out or (Path(tempfile.gettempdir()) / "RESULTS-quick.md" if args.quick
                       else RESULTS)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    params = QUICK if args.quick else BIG
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"generating the synthetic retailer {params}", flush=True)
        big = synthetic_source(params, Path(tmp) / "synthetic")
        sources = {"synthetic": big} if args.quick else {"Online Retail II": ORII,
                                                           "synthetic": big}
        for name, source in sources.items():
            for kind in ("recommender", "train"):
                print(f"{name}: {kind}", flush=True)
                results[f"{name}/{kind}"] = scenario(kind, source, Path(tmp) / "mlruns",
                                                     args.quick)
                print(json.dumps(results[f"{name}/{kind}"]["wall"]), flush=True)
    config = ", ".join(f"{k}={v:_}" for k, v in params.items())
    synth = f"synthetic retailer (`SyntheticConfig({config})`{', 60 trees' if args.quick else ''})"
    lines = [
        "## Training time (`bench/bench_training.py`)", "",
        f"One run on {started}{' (--quick)' if args.quick else ''}. Each scenario is a fresh "
        "process making the library calls of `retention train` (read + validate, "
        "`train`, plots + MLflow logging into a throw-away store, item recommender), not a "
        "subprocess of the CLI; wall and CPU seconds per stage (CPU counts all threads). "
        "Timings on a shared 2-core machine are indicative.", "",
    ]
    if "Online Retail II/train" in results:
        res = results["Online Retail II/train"]
        total = sum(res["wall"].values())
        lines += ["### Target", "", "| target | measured | |", "|---|---|---|",
                  f"| `retention train` on Online Retail II <= {TARGET_S:g} s wall | "
                  f"{fmt(total)} s ({fmt(sum(res['cpu'].values()))} CPU s) | "
                  f"{'met' if total <= TARGET_S else '**MISSED**'} |", ""]
    for name in sources:
        label = name if name != "synthetic" else synth
        res = results[f"{name}/train"]
        lines += [f"### `retention train` stages: {label}", "", *stage_table(res), "",
                  describe(name, res), ""]
        rec = results[f"{name}/recommender"]
        lines += [f"### Item recommender alone: {label}", "", *stage_table(rec), "",
                  describe(name, rec) + f" {rec['neighbour_pairs']:,} neighbour pairs kept; "
                  f"`recommend` answered {rec['recommended']:,} customers (k = 10, with "
                  "reasons).", ""]
    env = environment(["numpy", "scipy", "pandas", "xgboost-cpu", "mlflow"])
    lines += [*environment_table(env), "",
              "Reproduce: `python bench/bench_training.py` (`--quick` for a smoke run)."]
    write_section("training", "\n".join(lines), out)
    print(f"wrote the training section to {out}")


if __name__ == "__main__":
    main()
