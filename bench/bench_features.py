"""Feature-build benchmark: the project's pipeline vs a hand-written DuckDB query and lifetimes.

Two seeded synthetic sets (`features.synthetic`):

* large (default 1M customers, ~10M lines): validation, then `engine.prepare` + `engine.build` of
  the full feature table (features + 90-day labels) for one as_of, written to Parquet in a temp
  dir. Target: prepare + build <= 60 s.
* small (default 100k customers, ~1M lines): the core BTYD columns (frequency, recency, T,
  monetary_value) by the pipeline, by one hand-written DuckDB query and by lifetimes'
  `summary_data_from_transaction_data`. Targets: pipeline <= 2x the query, faster than lifetimes.

Every timing is the median (min, max) of several runs; the methods' runs are interleaved and each
run gets a fresh in-memory DuckDB connection, created before the clock starts. The results, a
profile of the pipeline's steps and the environment go to bench/RESULTS.md (overwritten).

    python bench/bench_features.py            # the real run (what `make bench` does)
    python bench/bench_features.py --quick    # smoke run; writes to a temp file unless --out
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import duckdb
import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from results_file import RESULTS, fmt, write_section
from results_file import environment as machine
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from features import engine
from features import pointintime as pit
from features.config import SourceConfig
from features.contract import TRANSACTIONS
from features.synthetic import NON_PRODUCT, SyntheticConfig, generate
from features.validate import validate

with warnings.catch_warnings():  # lifetimes sets a pandas option that pandas 3 deprecates
    warnings.simplefilter("ignore")
    from lifetimes.utils import summary_data_from_transaction_data

AS_OF = dt.date(2023, 10, 1)
HORIZON_DAYS = 90
CORE = ("frequency", "recency", "T", "monetary_value")
CANONICAL = list(TRANSACTIONS)
PACKAGES = ("duckdb", "ibis-framework", "sqlglot", "pandas", "pyarrow", "numpy", "lifetimes",
            "rich")
TARGET_BUILD_S = 60.0
TARGET_CORE_RATIO = 2.0

# Day level, lifetimes' convention, over the sale lines before as_of: frequency = purchase days
# - 1, recency = last - first day, T = (as_of - 1 day) - first day, monetary = mean sales of the
# repeat days (all days' sales minus the first day's).
HAND_SQL = """
WITH d AS (
    SELECT customer_id, CAST("timestamp" AS DATE) AS day, sum(amount) AS sales
    FROM tx
    WHERE NOT is_return AND "timestamp" < TIMESTAMP '{as_of}'
    GROUP BY ALL
)
SELECT
    customer_id,
    CAST(count(*) - 1 AS INTEGER) AS frequency,
    CAST(max(day) - min(day) AS INTEGER) AS recency,
    CAST(DATE '{last_day}' - min(day) AS INTEGER) AS "T",
    CASE WHEN count(*) > 1
        THEN (sum(sales) - arg_min(sales, day)) / (count(*) - 1) ELSE 0.0 END AS monetary_value
FROM d
GROUP BY customer_id
"""

console = Console()
Runner = Callable[["Stopwatch"], object]
Check = Callable[[dict[str, object]], None]


# ------------------------------------------------------------------------------------ timing


class Stopwatch:
    """Named laps of one run; only the time from `start()` to the last `lap()` counts."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def start(self) -> None:
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._t
        self._t = now

    @property
    def total(self) -> float:
        return sum(self.laps.values())


@dataclass
class Method:
    """One contender: `run` sets up (untimed), calls `sw.start()`, laps, returns its output."""

    key: str
    label: str
    includes: str
    run: Runner


@dataclass
class Timing:
    """Run totals and laps of one method."""

    method: Method
    runs: list[float] = field(default_factory=list)
    laps: list[dict[str, float]] = field(default_factory=list)

    def lap(self, name: str) -> list[float]:
        return [laps[name] for laps in self.laps]


def measure(methods: Sequence[Method], repeats: int, progress: Progress, *, warmup: bool,
            check: Check | None = None) -> dict[str, Timing]:
    """Run each method `repeats` times (after one untimed warm-up run if `warmup`), interleaved.

    `check` gets the outputs of the first round (the warm-up, if any) by method key before the
    next round starts.
    """
    timings = {m.key: Timing(m) for m in methods}
    tasks = {m.key: progress.add_task(m.label, total=repeats + warmup) for m in methods}
    for i in range(repeats + warmup):
        outputs: dict[str, object] = {}
        for m in methods:
            gc.collect()
            sw = Stopwatch()
            out = m.run(sw)
            if i == 0:
                outputs[m.key] = out
            if i >= warmup:
                timings[m.key].runs.append(sw.total)
                timings[m.key].laps.append(dict(sw.laps))
            del out
            progress.advance(tasks[m.key])
        if check and outputs:
            check(outputs)
        del outputs
    return timings


# -------------------------------------------------------------------------------- contenders


def synthetic_source() -> SourceConfig:
    """The source config `features.synthetic.write` writes for the transactions table."""
    cols = ["customer_id", "order_id", "timestamp", "product_id", "quantity", "price", "channel"]
    return SourceConfig(
        name="synthetic-transactions", table="transactions", format="parquet",
        path="transactions.parquet", columns={c: c for c in cols},
        derive={"amount": "quantity * price"}, non_product_codes=[NON_PRODUCT],
        extracted_at=dt.datetime.combine(SyntheticConfig().end, dt.time()),
    )


def sales_before(df: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Sale lines (not returns) with timestamp < as_of."""
    return df[(df["timestamp"] < pd.Timestamp(as_of)) & ~df["is_return"]]


def validation(raw: pd.DataFrame, cfg: SourceConfig) -> Runner:
    """`features.validate.validate(raw, cfg)`: source frame to accepted + quarantined rows."""

    def run(sw: Stopwatch) -> pd.DataFrame:
        sw.start()
        result = validate(raw, cfg)
        sw.lap("validate")
        return result.accepted

    return run


def pipeline_core(df: pd.DataFrame, *, table: bool) -> Runner:
    """(a) `pit.core_features(tx, as_of)` to Arrow, `tx` being the DataFrame.

    Not `table`: `ibis.memtable(df)`, which Ibis registers in DuckDB as a zero-copy Arrow view
    when the query runs (how the project's tests call it). `table`: first copied into a DuckDB
    table by `con.create_table` of the canonical columns, as `engine.prepare` loads it.
    """

    def run(sw: Stopwatch) -> pa.Table:
        con = engine.connect()
        sw.start()
        if table:
            tx = con.create_table("transactions", df[CANONICAL], overwrite=True)
            sw.lap("load (create_table)")
        else:
            tx = ibis.memtable(df)
        out = con.to_pyarrow(pit.core_features(tx, AS_OF))
        sw.lap("core to Arrow")
        con.disconnect()
        return out

    return run


def pipeline_build(df: pd.DataFrame, data_end: dt.date, out_root: Path) -> Runner:
    """`engine.prepare` + `engine.build` (one as_of, 90-day labels) into a fresh folder."""
    runs = count()

    def run(sw: Stopwatch) -> Path:
        con = engine.connect()
        out = out_root / f"build-{next(runs)}"
        sw.start()
        tables = engine.prepare(con, df, data_end=data_end)
        sw.lap("prepare")
        written = engine.build(con, tables, [AS_OF], out, horizon_days=HORIZON_DAYS)
        sw.lap("build")
        con.disconnect()
        return written[AS_OF]

    return run


def pipeline_steps(df: pd.DataFrame, data_end: dt.date, out_root: Path) -> Runner:
    """The calls of `engine.prepare` and `engine.build`, one lap each.

    Load (`create_table` of the canonical columns), purchase days, first purchases, the feature
    table to Arrow, its Parquet write into a fresh folder under `out_root`.
    """
    runs = count()

    def run(sw: Stopwatch) -> pa.Table:
        con = engine.connect()
        sw.start()
        tx = con.create_table("transactions", df[CANONICAL], overwrite=True)
        sw.lap("load (create_table)")
        days = con.create_table("transactions_days", pit.purchase_days(tx), overwrite=True)
        sw.lap("purchase days")
        prods = con.create_table("transactions_products", pit.first_purchases(tx),
                                 overwrite=True)
        sw.lap("first purchases")
        tables = engine.FeatureTables(days=days, products=prods, data_end=data_end)
        table = con.to_pyarrow(engine.feature_table(tables, AS_OF, HORIZON_DAYS))
        sw.lap("feature table to Arrow")
        part = out_root / f"steps-{next(runs)}"
        part.mkdir(parents=True)
        pq.write_table(table.drop_columns(["as_of"]), part / "part-0.parquet")
        sw.lap("Parquet write")
        con.disconnect()
        return table.select(["customer_id", *CORE])

    return run


def hand_sql(as_of: dt.date) -> str:
    """The hand-written query for one as_of."""
    last_day = as_of - dt.timedelta(days=1)
    return HAND_SQL.format(as_of=as_of.isoformat(), last_day=last_day.isoformat())


def hand_written(df: pd.DataFrame, *, arrow: bool) -> Runner:
    """(b) One DuckDB query over the DataFrame: as a zero-copy Arrow view, or the pandas frame."""
    sql = hand_sql(AS_OF)

    def run(sw: Stopwatch) -> pa.Table:
        con = duckdb.connect()
        con.execute("SET preserve_insertion_order = false")  # as engine.connect does
        sw.start()
        con.register("tx", pa.Table.from_pandas(df, preserve_index=False) if arrow else df)
        sw.lap("register")
        out = con.sql(sql).to_arrow_table()
        sw.lap("query to Arrow")
        con.close()
        return out

    return run


def lifetimes_summary(df: pd.DataFrame) -> Runner:
    """(c) lifetimes' summary of the sale lines before as_of (the pandas filter is timed too)."""
    end = pd.Timestamp(AS_OF) - pd.Timedelta(days=1)

    def run(sw: Stopwatch) -> pd.DataFrame:
        sw.start()
        cut = sales_before(df, AS_OF)
        sw.lap("filter")
        out = summary_data_from_transaction_data(
            cut, "customer_id", "timestamp", monetary_value_col="amount",
            observation_period_end=end, freq="D")
        sw.lap("summary")
        return out

    return run


# ------------------------------------------------------------------------------ verification


def core_frame(out: object) -> pd.DataFrame:
    """The core columns of an output (Arrow, pandas or a written partition), by customer_id."""
    if isinstance(out, Path):
        out = pq.read_table(out / "part-0.parquet", columns=["customer_id", *CORE])
    if isinstance(out, pa.Table):
        out = out.to_pandas()
    assert isinstance(out, pd.DataFrame)
    if "customer_id" in out.columns:
        out = out.set_index("customer_id")
    frame = out[list(CORE)].copy()
    frame.index = frame.index.astype(str)
    return frame.sort_index()


def check_same(name: str, ours: pd.DataFrame, ref: pd.DataFrame) -> None:
    """Raise unless the customers match, frequency/recency/T are equal and monetary_value is
    equal to 1e-9 relative (sums in another order may differ in the last bits)."""
    if not ours.index.equals(ref.index):
        raise AssertionError(f"{name}: other customers ({len(ours):,} vs {len(ref):,} rows)")
    for col in ("frequency", "recency", "T"):
        a, b = ours[col].to_numpy(), ref[col].to_numpy()
        if not np.array_equal(a, b):
            raise AssertionError(f"{name}: {col} differs in {int((a != b).sum()):,} rows")
    np.testing.assert_allclose(ours["monetary_value"].to_numpy(), ref["monetary_value"].to_numpy(),
                               rtol=1e-9, atol=1e-9, err_msg=f"{name}: monetary_value differs")


def verifier(methods: Sequence[Method], ref_key: str, keys: Sequence[str],
             facts: dict[str, str]) -> Check:
    """A check of the outputs in `keys` against the reference's; counts the output rows."""
    labels = {m.key: m.label for m in methods}

    def check(outputs: dict[str, object]) -> None:
        ref = core_frame(outputs[ref_key])
        for key in keys:
            check_same(labels[key], core_frame(outputs[key]), ref)
        facts["customers in the output"] = f"{len(ref):,}"

    return check


# --------------------------------------------------------------------------------- the sets


@dataclass
class Row:
    """A reported timing: run values in seconds and what they include."""

    label: str
    values: list[float]
    includes: str

    @property
    def median(self) -> float:
        return statistics.median(self.values)


@dataclass
class SetResult:
    """The rows of one data set, its reference row, profile, facts and verified outputs."""

    title: str
    rows: dict[str, Row]
    reference: str
    profile: list[Row]
    facts: dict[str, str]
    checked: list[str]
    checked_when: str
    profile_note: str


def row(t: Timing) -> Row:
    return Row(t.method.label, t.runs, t.method.includes)


def lap_rows(t: Timing) -> list[Row]:
    """One row per lap of a method, in lap order."""
    return [Row(name, t.lap(name), "") for name in t.laps[0]]


def generate_set(n_customers: int, seed: int, progress: Progress) -> pd.DataFrame:
    """The synthetic transactions (source form) for n customers."""
    task = progress.add_task(f"generate {n_customers:,} customers", total=1)
    raw = generate(SyntheticConfig(n_customers=n_customers, seed=seed)).transactions
    progress.advance(task)
    return raw


def run_large(n_customers: int, seed: int, repeats: int, progress: Progress,
              tmp: Path) -> SetResult:
    """Validation, then the full feature table (prepare + build) on the large set."""
    cfg = synthetic_source()
    assert cfg.extracted_at is not None
    data_end = cfg.extracted_at.date()
    raw = generate_set(n_customers, seed, progress)
    facts = {"customers generated": f"{n_customers:,}", "lines generated": f"{len(raw):,}"}
    first: dict[str, object] = {}
    v = measure([Method("validate", "validate (not in the target)",
                        "`features.validate.validate(raw, cfg)` on the generated source frame",
                        validation(raw, cfg))], repeats, progress, warmup=False,
                check=first.update)["validate"]
    accepted, validate_row = first.pop("validate"), row(v)
    assert isinstance(accepted, pd.DataFrame)
    del raw, v  # the validation closure holds the raw frame
    facts["accepted lines"] = f"{len(accepted):,}"
    facts["sale lines before as_of"] = f"{len(sales_before(accepted, AS_OF)):,}"
    methods = [
        Method("build", "engine.prepare + engine.build", (
            "accepted DataFrame -> `engine.prepare` -> `engine.build` for one as_of, 90-day "
            "labels: `feature_table` to Arrow (`con.to_pyarrow`), Parquet in a temp dir"),
            pipeline_build(accepted, data_end, tmp)),
        Method("steps", "profile: the same, step by step", (
            "the calls of prepare and build one by one"),
            pipeline_steps(accepted, data_end, tmp)),
        Method("a", "(a) pipeline core: core_features(memtable(df))", (
            "as (a) in the small-set table"), pipeline_core(accepted, table=False)),
        Method("b", "(b) hand-written DuckDB SQL, core columns", (
            "as (b) in the small-set table: the reference of the ratios"),
            hand_written(accepted, arrow=True)),
    ]
    checked = ["build", "steps", "a"]
    timings = measure(methods, repeats, progress, warmup=False,
                      check=verifier(methods, "b", checked, facts))
    build = timings["build"]
    rows = {
        "validate": validate_row,
        "prepare": Row("engine.prepare", build.lap("prepare"), (
            "load into DuckDB (pandas->Arrow, CREATE TABLE of the 7 canonical columns), "
            "materialise purchase days and first purchases")),
        "build": Row("engine.build", build.lap("build"), (
            "`feature_table(as_of 2023-10-01, horizon 90 d)` to Arrow, drop as_of, write Parquet")),
        "total": Row("**prepare + build** (target <= 60 s)", build.runs, build.method.includes),
        "a": row(timings["a"]),
        "b": row(timings["b"]),
    }
    return SetResult(f"Large set: {facts['lines generated']} lines, {n_customers:,} customers",
                     rows, "b", lap_rows(timings["steps"]), facts,
                     [timings[k].method.label for k in checked],
                     "first timed round, before the others",
                     "the calls of `engine.prepare` and `engine.build` one by one, in separate "
                     "runs (the *profile* method above, same number of runs)")


def run_small(n_customers: int, seed: int, repeats: int, progress: Progress) -> SetResult:
    """The core columns: pipeline vs hand-written query vs lifetimes, plus candidate fixes."""
    cfg = synthetic_source()
    assert cfg.extracted_at is not None
    raw = generate_set(n_customers, seed, progress)
    facts = {"customers generated": f"{n_customers:,}", "lines generated": f"{len(raw):,}"}
    accepted = validate(raw, cfg).accepted
    del raw
    facts["accepted lines"] = f"{len(accepted):,}"
    facts["sale lines before as_of"] = f"{len(sales_before(accepted, AS_OF)):,}"
    methods = [
        Method("a", "(a) pipeline: core_features(memtable(df))", (
            "`pit.core_features(ibis.memtable(df), as_of)` to Arrow (`con.to_pyarrow`): Ibis "
            "registers the DataFrame as an Arrow view (no copy) and runs one query; "
            "`engine.prepare` is not involved, `core_features` reads the transaction lines"),
            pipeline_core(accepted, table=False)),
        Method("a_table", "(a-table) pipeline: core_features on a DuckDB table", (
            "`con.create_table` of the 7 canonical columns (a copy into DuckDB, as "
            "`engine.prepare` loads), then `pit.core_features(tx, as_of)` to Arrow"),
            pipeline_core(accepted, table=True)),
        Method("b", "(b) hand-written DuckDB SQL", (
            "`pa.Table.from_pandas(df)` registered as a view (no copy, no table), one SQL "
            "query to Arrow: the reference of the ratios"), hand_written(accepted, arrow=True)),
        Method("b2", "(b2) hand-written SQL, pandas frame registered", (
            "`con.register('tx', df)` (DuckDB's pandas scan), the same query to Arrow"),
            hand_written(accepted, arrow=False)),
        Method("c", "(c) lifetimes summary_data_from_transaction_data", (
            "pandas filter to the sale lines before as_of, lifetimes' summary "
            "(single-threaded pandas)"), lifetimes_summary(accepted)),
    ]
    checked = ["a", "a_table", "b2", "c"]
    timings = measure(methods, repeats, progress, warmup=True,
                      check=verifier(methods, "b", checked, facts))
    rows = {k: row(t) for k, t in timings.items()}
    return SetResult(f"Small set: {facts['lines generated']} lines, {n_customers:,} customers",
                     rows, "b", lap_rows(timings["a_table"]), facts,
                     [timings[k].method.label for k in checked],
                     "untimed warm-up round, before any timed run",
                     "the laps of the (a-table) runs: loading into a table, then the query")


# ---------------------------------------------------------------------------------- report


def environment() -> dict[str, str]:
    """Machine, Python, package versions and the date (with DuckDB's thread count)."""
    con = duckdb.connect()
    threads = con.sql("SELECT current_setting('threads')").fetchone()
    con.close()
    return machine(PACKAGES, f" (DuckDB threads: {threads[0] if threads else '?'})")


def timing_table(res: SetResult) -> list[str]:
    """Markdown rows: median, min, max and the ratio to the reference median."""
    ref = res.rows[res.reference].median
    lines = ["| timing | median s | min s | max s | x hand-written | includes |",
             "|---|---:|---:|---:|---:|---|"]
    for r in res.rows.values():
        lines.append(f"| {r.label} | {fmt(r.median)} | {fmt(min(r.values))} | "
                     f"{fmt(max(r.values))} | {r.median / ref:.2f} | {r.includes} |")
    return lines


def profile_table(res: SetResult) -> list[str]:
    total = sum(r.median for r in res.profile)
    lines = ["| step | median s | min s | max s | share |", "|---|---:|---:|---:|---:|"]
    for r in res.profile:
        lines.append(f"| {r.label} | {fmt(r.median)} | {fmt(min(r.values))} | "
                     f"{fmt(max(r.values))} | {r.median / total:.0%} |")
    lines.append(f"| sum of the medians | {fmt(total)} | | | |")
    return lines


@dataclass
class Target:
    name: str
    measured: str
    met: bool


def targets(large: SetResult, small: SetResult) -> list[Target]:
    total = large.rows["total"]
    a, a_table, b, c = (small.rows[k].median for k in ("a", "a_table", "b", "c"))
    return [
        Target("large set: prepare + build <= 60 s (median)",
               f"{fmt(total.median)} s (max {fmt(max(total.values))} s)",
               total.median <= TARGET_BUILD_S),
        Target("small set: pipeline core (a) <= 2x hand-written (b)",
               f"{a / b:.2f}x ({fmt(a)} s vs {fmt(b)} s); loading into a table first "
               f"(a-table): {a_table / b:.2f}x", a <= TARGET_CORE_RATIO * b),
        Target("small set: pipeline core (a) faster than lifetimes (c)",
               f"{fmt(a)} s vs {fmt(c)} s ({c / a:.2f}x faster)" if a < c
               else f"{fmt(a)} s vs {fmt(c)} s ({a / c:.2f}x slower)", a < c),
    ]


def findings(large: SetResult, small: SetResult, goals: list[Target]) -> list[str]:
    """Where the time goes, from the measured profiles, and the missed targets if any."""
    lp = {r.label: r.median for r in large.profile}
    top = max(lp, key=lambda k: lp[k])
    sp = {r.label: r.median for r in small.profile}
    b = small.rows["b"].median
    lines = [
        "## Where the time goes", "",
        "- Large set, prepare + build step by step: "
        + ", ".join(f"{k} {fmt(v)} s" for k, v in lp.items())
        + f". The largest step is {top} ({lp[top] / sum(lp.values()):.0%}).",
        f"- Small set, core columns: copying the DataFrame into a DuckDB table "
        f"(`create_table`, as `engine.prepare` loads) takes {fmt(sp['load (create_table)'])} s, "
        f"the `core_features` query on it {fmt(sp['core to Arrow'])} s. Over the Arrow view of "
        f"the DataFrame (a), the whole job takes {fmt(small.rows['a'].median)} s, the "
        f"hand-written query {fmt(b)} s.", "",
    ]
    missed = [g for g in goals if not g.met]
    if missed:
        lines += ["## Missed targets", "", *[f"- **missed**: {g.name}: {g.measured}"
                                             for g in missed], "",
                  "See the profiles above for the step that dominates.", ""]
    return lines


def write_report(path: Path, large: SetResult, small: SetResult, env: dict[str, str],
                 args: argparse.Namespace, repeats: tuple[int, int]) -> None:
    """Write RESULTS.md: targets, timing tables, profiles, findings, method, environment."""
    goals = targets(large, small)
    cmd = " ".join(["python bench/bench_features.py", *sys.argv[1:]])
    lines = [
        "### Feature build (`bench/bench_features.py`)", "",
        f"Written by `bench/bench_features.py` on {env['date']}; every number below comes from "
        f"that one run (`{cmd}`). Times in seconds: median, min and max of {repeats[0]} runs "
        f"(large set) and {repeats[1]} runs (small set); x = median / median of the "
        "hand-written query on the same set.", "",
        "### Targets", "", "| target | measured | |", "|---|---|---|",
        *[f"| {g.name} | {g.measured} | {'met' if g.met else '**MISSED**'} |" for g in goals], "",
    ]
    for res in (large, small):
        lines += [f"### {res.title}", "", *timing_table(res), ""]
        lines += ["Data: " + "; ".join(f"{k} {v}" for k, v in res.facts.items()) + ".", ""]
        lines += [
            f"Outputs checked ({res.checked_when}) against the hand-written query's: same "
            "customers, frequency/recency/T equal, monetary_value equal to 1e-9 relative: "
            + "; ".join(res.checked) + ".", "",
            f"Profile of the {res.title.split(':')[0].lower()}: {res.profile_note}.", "",
            *profile_table(res), "",
        ]
    lines += findings(large, small, goals)
    lines += [
        "### What each timing includes", "",
        "- Input: `features.synthetic.generate(SyntheticConfig(n_customers=N, seed="
        f"{args.seed}))`, validated with `features.validate.validate` against the source config "
        "`features.synthetic.write` produces (extracted_at = 2024-01-01, also `data_end`). The "
        "accepted (canonical) DataFrame is the common input of every contender; generating and "
        "validating it is not timed, except the *validate* row of the large set.",
        f"- as_of {AS_OF}: only lines with timestamp < as_of count; labels use "
        f"[as_of, as_of + {HORIZON_DAYS} d).",
        "- Each run gets a fresh in-memory DuckDB connection (`engine.connect()`, or "
        "`duckdb.connect()` with the same `preserve_insertion_order = false` for the "
        "hand-written query), created before the clock starts; the clock stops when the result "
        "is in memory as an Arrow table (pandas for lifetimes) or written as Parquet.",
        "- Core columns: `pit.core_features(transactions, as_of)` reads the transaction lines "
        "itself, so `engine.prepare` (purchase days, first purchases) is not on the core path "
        "and is not timed there; it is timed in the full build of the large set.",
        "- Loading is counted the same way for (a) and (b), inside the timed region: both start "
        "from the same pandas DataFrame and register it in DuckDB as a zero-copy Arrow view "
        "(Ibis does that for `ibis.memtable(df)` when the query runs; (b) calls "
        "`pa.Table.from_pandas` and `register`), the practical lower bound. (a-table) "
        "additionally copies the DataFrame into a DuckDB table first, as `engine.prepare` does "
        "for the full build. (b2) registers the pandas frame itself (DuckDB's pandas scan): "
        f"{fmt(small.rows['b2'].median)} s vs {fmt(small.rows['b'].median)} s for the Arrow "
        "view (b), the reference, on the small set.",
        "- lifetimes gets the same DataFrame; the pandas filter to sale lines before as_of is "
        "timed with it. It runs single-threaded; DuckDB uses all cores.",
        "- Runs of the methods are interleaved (a, a-table, b, ..., a, a-table, b, ...). The "
        "small set has "
        "one untimed warm-up round first, whose outputs are checked equal before any timed run; "
        "the large set has none (the first timed round's outputs are checked before the "
        "second round). A failed check stops the script.",
        "- Parquet goes to a temporary directory outside the repo, deleted at the end.", "",
        "### Environment", "",
        *[f"- {k}: {v}" for k, v in env.items()], "",
        "### Reproduce", "",
        "```bash",
        "make bench                               # = .venv/bin/python bench/bench_features.py",
        "python bench/bench_features.py --quick   # smoke run, report to a temp file",
        "python bench/bench_features.py --customers-large 1000000 --customers-small 100000"
        "  # the defaults; --repeats N sets the runs of both sets",
        "```", "",
    ]
    write_section("features", "\n".join(lines), path)


def print_summary(large: SetResult, small: SetResult) -> None:
    for res in (large, small):
        ref = res.rows[res.reference].median
        table = Table(title=res.title)
        for col in ("timing", "median s", "min s", "max s", "x hand-written"):
            table.add_column(col, justify="left" if col == "timing" else "right")
        for r in res.rows.values():
            table.add_row(r.label, fmt(r.median), fmt(min(r.values)), fmt(max(r.values)),
                          f"{r.median / ref:.2f}")
        console.print(table)
    for g in targets(large, small):
        style = "green" if g.met else "bold red"
        console.print(f"[{style}]{'met' if g.met else 'MISSED'}[/]: {g.name}: {g.measured}")


# ------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--customers-large", type=int, default=None,
                   help="customers of the large set (default 1,000,000: ~10M lines)")
    p.add_argument("--customers-small", type=int, default=None,
                   help="customers of the small set (default 100,000: ~1M lines)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per method on both sets (default 3 large, 5 small)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 20k / 5k customers, 2 runs, report to a temp file")
    p.add_argument("--out", type=Path, default=None,
                   help=f"report path (default {RESULTS}; a temp file with --quick)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    large_n = args.customers_large or (20_000 if args.quick else 1_000_000)
    small_n = args.customers_small or (5_000 if args.quick else 100_000)
    repeats = (args.repeats or (2 if args.quick else 3), args.repeats or (2 if args.quick else 5))
    out = args.out or (Path(tempfile.gettempdir()) / "RESULTS-quick.md" if args.quick
                       else RESULTS)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, \
            tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        small = run_small(small_n, args.seed, repeats[1], progress)
        gc.collect()
        large = run_large(large_n, args.seed, repeats[0], progress, Path(tmp))
    env = environment()
    write_report(out, large, small, env, args, repeats)
    print_summary(large, small)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
