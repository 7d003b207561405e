"""Batch benchmark: `serving.batch.score_population` (what `retention score` and the service's
reload run) on 100k and 1M customers, with and without reasons, against the code of a peer
commit on the same model and rows.

Setup (not timed), in a temp dir unless --home names one that already has a champion: the
demo retailer of `make run` (`retention demo-data --customers 5000 --seed 0`), its feature
snapshot at 2024-01-01 and `retention train --horizon 90d --promote`. The champion's scorer is
saved once with joblib; the snapshot is tiled to each size with fresh customer ids.
Each measurement runs in a fresh Python process that loads the scorer and the rows and times
`score_population` (default chunk and workers) --runs times: the median is reported. The peer
is `git archive <--peer>` of training/, features/ and serving/, first on the path of its
process (the same model file: the scorer's classes unpickle in both).

    python bench/bench_batch.py            # the real run
    python bench/bench_batch.py --population DIR   # and 1M distinct customers of a snapshot
    python bench/bench_batch.py --quick    # smoke run (small sizes, one run, no reasons
                                           # runs of the peer); writes to a temp file
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from results_file import RESULTS, environment_table, fmt, write_section
from results_file import environment as machine

from features.engine import read_features

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGES = ("numpy", "numba", "scipy", "pandas", "xgboost-cpu", "scikit-learn", "mlflow")
AS_OF = "2024-01-01"
GOAL_SECONDS = 20.0  # 1M customers with reasons

# Runs in a fresh process: load the scorer and the base rows, tile, time score_population.
MEASURE = """
import json, sys, time
import joblib
import pandas as pd
from serving.batch import score_population
from serving.config import RiskBands

scorer_path, rows_path, n, reasons, runs = sys.argv[1:]
n, runs, reasons = int(n), int(runs), reasons == "1"
scorer = joblib.load(scorer_path)
base = pd.read_parquet(rows_path)
if len(base) >= n:  # a population of its own: its first n customers, as they are
    rows = base.iloc[:n].reset_index(drop=True)
else:
    rows = pd.concat([base] * -(-n // len(base)), ignore_index=True).iloc[:n].copy()
    rows["customer_id"] = [f"B{i:08d}" for i in range(n)]
seconds = []
for _ in range(runs):
    start = time.perf_counter()
    out = score_population(scorer, rows, RiskBands(), reasons=reasons)
    seconds.append(time.perf_counter() - start)
    assert len(out) == n
print(json.dumps(seconds))
"""


def retention(*args: str, cwd: Path) -> None:
    subprocess.run([str(BIN / "retention"), *args], cwd=cwd, check=True,
                   env={**os.environ, "RETENTION_HOME": str(cwd)}, capture_output=True)


def prepare(home: Path, customers: int, quick: bool) -> tuple[Path, Path]:
    """The champion's scorer (joblib) and the snapshot rows at AS_OF, trained if missing."""
    scorer, rows = home / "bench_scorer.joblib", home / "bench_rows.parquet"
    if scorer.exists() and rows.exists():
        return scorer, rows
    demo = home / "demo"
    if not (home / "mlruns").exists():
        retention("demo-data", "--out", str(demo), "--customers", str(customers), "--seed", "0",
                  cwd=home)
        config = []
        if quick:
            (home / "train.yaml").write_text("n_estimators: 60\n")
            config = ["--config", str(home / "train.yaml")]
        retention("train", "--source", str(demo / "transactions.yaml"), "--horizon", "90d",
                  "--promote", *config, cwd=home)
    retention("features", "build", "--source", str(demo / "transactions.yaml"), "--as-of",
              AS_OF, "--horizon", "90d", "--out", str(home / "features"), cwd=home)
    import joblib

    from training import configure, load_champion

    configure(home=home / "mlruns")
    joblib.dump(load_champion().unwrap_python_model().scorer, scorer)
    snapshot = pd.read_parquet(home / "features" / f"as_of={AS_OF}")
    snapshot.assign(as_of=AS_OF).to_parquet(rows)
    return scorer, rows


def peer_tree(commit: str, where: Path) -> Path:
    """training/, features/ and serving/ as of `commit`, extracted under `where`."""
    where.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "training", "features",
                              "serving"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def measure(scorer: Path, rows: Path, n: int, reasons: bool, runs: int,
            code: Path | None) -> float:
    """Median seconds of `runs` score_population calls in a fresh process (`code` first on
    its path when given)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    done = subprocess.run([sys.executable, "-c", MEASURE, str(scorer), str(rows), str(n),
                           "1" if reasons else "0", str(runs)], cwd=code or ROOT, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return statistics.median(json.loads(done.stdout.strip().splitlines()[-1]))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sizes", default="100000,1000000", help="customers per measurement")
    p.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    p.add_argument("--peer", default="54b991d", help="commit whose code is the peer")
    p.add_argument("--no-peer", action="store_true", help="measure this checkout only")
    p.add_argument("--home", type=Path, help="reuse/keep the trained home here")
    p.add_argument("--customers", type=int, default=5000, help="demo customers to train on")
    p.add_argument("--quick", action="store_true",
                   help="sizes 20000,100000, one run, a small model; writes to a temp file")
    p.add_argument("--population", type=Path,
                   help="also score the first 1M customers of this feature snapshot (a "
                        "`features build` output folder at one as_of, e.g. `retention "
                        "demo-data --customers 1000000`'s): distinct customers, not tiles")
    p.add_argument("--out", type=Path, help=f"report path (default {RESULTS}; temp if --quick)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.runs = "20000,100000", 1
        args.customers = min(args.customers, 1500)
        args.out = args.out or Path(tempfile.mkdtemp()) / "RESULTS-batch-quick.md"
    args.out = args.out or RESULTS
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        home.mkdir(parents=True, exist_ok=True)
        scorer, rows = prepare(home.resolve(), args.customers, args.quick)
        peer = None if args.no_peer else peer_tree(args.peer, Path(tmp) / "peer")
        lines = ["| customers | reasons | this checkout (s) | peer (s) | peer / this |",
                 "|---:|---|---:|---:|---:|"]

        def row(label: str, rows_path: Path, n: int, reasons: bool) -> float:
            """Time this checkout and the peer; add their report row; this checkout's time."""
            ours = measure(scorer, rows_path, n, reasons, args.runs, None)
            theirs = None if peer is None else measure(scorer, rows_path, n, reasons,
                                                        args.runs, peer)
            ratio = "" if theirs is None else f"{theirs / ours:.2f}"
            lines.append(f"| {label} | {'yes' if reasons else 'no'} | {fmt(ours)} | "
                         f"{'' if theirs is None else fmt(theirs)} | {ratio} |")
            print(lines[-1], flush=True)
            return ours

        best = None
        for n in sizes:
            for reasons in (True, False):
                ours = row(f"{n:,}", rows, n, reasons)
                if n == 1_000_000 and reasons:
                    best = ours
        if args.population is not None:
            population = Path(tmp) / "population.parquet"
            frame = read_features(args.population)
            frame = frame[frame["as_of"].astype(str) == AS_OF].head(1_000_000)
            frame.to_parquet(population)
            row(f"{len(frame):,} distinct (`--population`)", population, len(frame), True)
    goal = ("not measured (no 1M run)" if best is None else
            f"{fmt(best)} s: {'met' if best <= GOAL_SECONDS else 'not met'}")
    markdown = "\n".join([
        "## Batch scoring (`bench/bench_batch.py`)", "",
        f"`serving.batch.score_population` on the `make run` demo model, rows tiled from its "
        f"{AS_OF} snapshot (rows marked distinct: a generated population's own customers); "
        f"median of {args.runs} run(s) each in a fresh process; peer = the code of commit "
        f"`{args.peer}` on the same model and rows.", "",
        f"Goal: 1M customers with reasons in <= {GOAL_SECONDS:.0f} s — {goal}.", "",
        *lines, "", *environment_table(machine(PACKAGES))])
    write_section("batch", markdown, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
