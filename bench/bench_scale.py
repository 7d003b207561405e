"""Scale benchmark of the feature build: `retention features build` on DuckDB (the default
engine) against `--engine spark` on local[2], at 1M and 10M transaction lines, and Spark's
throughput per core (local[1] against local[2]).

Setup (not timed), in a temp dir: a seeded synthetic retailer (`retention demo-data`, ~10
lines per customer, 1% dirty rows) of the size asked, as Parquet with its source config.

Timed, one run each: the whole CLI command (`retention features build` with two as_of dates
and 90-day labels): reading, validation and quarantine, features, Parquet partitions; for
Spark this includes starting the session (JVM). Peak RSS is the largest sum, sampled every
0.2 s, of the resident memory of the command's process tree (for Spark: the Python driver,
the JVM and the Python workers).

Results are checked: the Spark table equals DuckDB's on every column (numbers to 1e-9) and
the validation counts are the same. The report replaces the "scale-features" section of
bench/RESULTS.md.

    python bench/bench_scale.py                   # 1M and 10M lines
    python bench/bench_scale.py --quick           # ~100k lines; writes to a temp file
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from results_file import RESULTS, environment, environment_table, fmt, write_section

from features.engine import read_features

BIN = Path(sys.executable).parent
PACKAGES = ("duckdb", "ibis-framework", "pyspark", "pandas", "pyarrow")
SECTION = "scale-features"
AS_OF = "2023-07-01,2024-01-01"
LINES_PER_CUSTOMER = 10  # the synthetic retailer's default, about


@dataclass
class Run:
    """One timed command: wall seconds, peak RSS of its process tree (bytes), its output."""

    engine: str
    master: str
    lines: int
    seconds: float
    peak_rss: int
    out: Path


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status", encoding="utf-8") as fh:
                rss = next((int(line.split()[1]) for line in fh if line.startswith("VmRSS")), 0)
            total += rss * 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="utf-8") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def timed(args: list[str], cwd: Path) -> tuple[float, int]:
    """Run a command; its wall time and the peak RSS of its process tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{err[-3000:]}")
    return seconds, peak[0]


def make_source(home: Path, customers: int) -> tuple[Path, int]:
    """A synthetic retailer of `customers`; (its transactions source config, lines)."""
    data = home / f"data-{customers}"
    subprocess.run([str(BIN / "retention"), "demo-data", "--out", str(data), "--customers",
                    str(customers), "--seed", "0"], cwd=home, check=True, capture_output=True)
    import pyarrow.parquet as pq

    lines = pq.read_metadata(data / "transactions.parquet").num_rows
    return data / "transactions.yaml", lines


def build(source: Path, home: Path, engine: str, master: str, lines: int) -> Run:
    out = home / f"features-{engine}-{master.replace('[', '').replace(']', '')}-{lines}"
    args = [str(BIN / "retention"), "features", "build", "--source", str(source), "--as-of",
            AS_OF, "--horizon", "90d", "--out", str(out)]
    if engine == "spark":
        args += ["--engine", "spark", "--spark-master", master]
    seconds, rss = timed(args, home)
    return Run(engine, master if engine == "spark" else "-", lines, seconds, rss, out)


def parity(a: Path, b: Path) -> str:
    """'equal' (with the largest difference of a float column) or what differs."""
    x, y = read_features(a), read_features(b)
    if list(x.columns) != list(y.columns) or len(x) != len(y):
        return f"DIFFERENT shape {x.shape} vs {y.shape}"
    worst = 0.0
    for col in x.columns:
        if x[col].dtype.kind == "f":
            u, v = x[col].to_numpy(), y[col].to_numpy()
            if not np.array_equal(np.isnan(u), np.isnan(v)):
                return f"DIFFERENT nulls in {col}"
            diff = float(np.nanmax(np.abs(u - v), initial=0.0))
            if diff > 1e-9:
                return f"DIFFERENT {col} (max abs diff {diff:.3g})"
            worst = max(worst, diff)
        elif not x[col].equals(y[col]):
            return f"DIFFERENT {col}"
    counts = [json.loads((p / "_validation" / "validation.json").read_text())["reasons"]
              for p in (a, b)]
    if counts[0] != counts[1]:
        return "DIFFERENT validation counts"
    return f"equal ({len(x):,} rows; max abs float diff {worst:.1g})"


def per_core(run: Run) -> float:
    cores = 1 if run.master == "local[1]" else 2
    return run.lines / run.seconds / cores


def report(runs: list[Run], checks: dict[int, str], cores: list[Run], quick: bool) -> str:
    env = environment(PACKAGES, " (shared with other work while measured: indicative)")
    lines = [
        "## Feature build at scale: DuckDB vs Spark (`bench/bench_scale.py`)",
        "",
        "`retention features build` (two as_of dates, 90-day labels, validation and quarantine "
        "included) on the seeded synthetic retailer, one run each; Spark times include the "
        "session start. Peak RSS: the command's whole process tree (Spark: driver, JVM and "
        "Python workers)." + (" **Quick smoke run.**" if quick else ""),
        "",
        "| lines | engine | master | seconds | lines/s | peak RSS (MiB) | Spark = DuckDB |",
        "|---:|---|---|---:|---:|---:|---|",
    ]
    for r in runs:
        check = checks.get(r.lines, "") if r.engine == "spark" else ""
        lines.append(f"| {r.lines:,} | {r.engine} | {r.master} | {fmt(r.seconds)} | "
                     f"{r.lines / r.seconds:,.0f} | {r.peak_rss / 2**20:,.0f} | {check} |")
    if cores:
        lines += ["", "Spark throughput per core (same data):", "",
                  "| lines | master | seconds | lines/s per core |", "|---:|---|---:|---:|"]
        for r in cores:
            lines.append(f"| {r.lines:,} | {r.master} | {fmt(r.seconds)} | "
                         f"{per_core(r):,.0f} |")
    lines += ["", *environment_table(env), "",
              "Re-run: `python bench/bench_scale.py` (`--quick` for a smoke run)."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="~100k lines; report to a temp file")
    p.add_argument("--customers", type=int, nargs="+",
                   help="retailer sizes (default 100000 1000000: ~1M and ~10M lines)")
    p.add_argument("--out", type=Path, help=f"report path (default {RESULTS}; a temp file "
                                            "with --quick)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = args.customers or ([10_000] if args.quick else [100_000, 1_000_000])
    runs: list[Run] = []
    checks: dict[int, str] = {}
    cores: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        home = Path(tmp)
        for customers in sizes:
            source, n = make_source(home, customers)
            print(f"{n:,} lines ({customers:,} customers)", flush=True)
            duck = build(source, home, "duckdb", "-", n)
            spark = build(source, home, "spark", "local[2]", n)
            checks[n] = parity(duck.out, spark.out)
            runs += [duck, spark]
            for r in (duck, spark):
                print(f"  {r.engine} {r.master}: {r.seconds:.1f} s, "
                      f"peak RSS {r.peak_rss / 2**20:,.0f} MiB", flush=True)
            print(f"  parity: {checks[n]}", flush=True)
            if customers == sizes[0]:
                one = build(source, home, "spark", "local[1]", n)
                print(f"  spark local[1]: {one.seconds:.1f} s", flush=True)
                cores = [one, spark]
    markdown = report(runs, checks, cores, args.quick)
    out = args.out or (Path(tempfile.gettempdir()) / "RESULTS-quick.md" if args.quick else RESULTS)
    write_section(SECTION, markdown, out)
    print(f"wrote section {SECTION!r} of {out}")
    if any(not c.startswith("equal") for c in checks.values()):
        raise SystemExit("Spark and DuckDB tables differ (see the report)")


if __name__ == "__main__":
    main()
