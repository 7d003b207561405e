"""Hostile HTTP probe: the hand-made cases of tests/test_hostile_http.py and schemathesis with
every check, against the real service on loopback; the figures go to the "hostile_http"
section of bench/RESULTS.md (cases, answers by status, 5xx, schemathesis requests and failures).

Setup (not measured), in a temp dir: the same small synthetic retailer, features and champions
as the service tests (tests/conftest.py `Trained`), served once with formula-like customer ids.

    python bench/bench_hostile_http.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_file import environment, environment_table, write_section  # noqa: E402

from tests.conftest import Deployment, Trained, schemathesis  # noqa: E402
from tests.test_hostile_http import (  # noqa: E402
    a_valid_row,
    formula_snapshot,
    hostile_cases,
    probe,
    tally,
)

PACKAGES = ("bentoml", "pydantic", "starlette", "uvicorn", "schemathesis")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        trained = Trained(Path(tmp))
        d = Deployment(trained.home, trained.serve_config(
            "serve-formulas.yaml", Path(formula_snapshot(trained)), "formulas-log.db"))
        d.start()
        try:
            cases = hostile_cases(trained.snapshot["customer_id"].iloc[10], a_valid_row(trained))
            start = time.perf_counter()
            answers = probe(d.port, cases)
            probe_s = time.perf_counter() - start
            start = time.perf_counter()
            generated, failures, _ = schemathesis(d)
            schemathesis_s = time.perf_counter() - start
        finally:
            d.stop()
    statuses = tally(answers)
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    problems = sum(bool(a.problems) for a in answers)
    lines = [
        "### Hostile HTTP probe (`bench/bench_hostile_http.py`)",
        "",
        "Hand-made cases of tests/test_hostile_http.py (methods, keys, paths, headers, content "
        "types, malformed/huge/deep JSON, wrong types, NaN/Infinity, unicode, boundary "
        "datetimes and numbers, impossible feature rows), then `schemathesis run --checks all "
        "-n 100 --seed 7` on /docs.json.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| hand-made cases | {len(cases):,} |",
        *[f"| answers {status} | {n:,} |" for status, n in statuses.items()],
        f"| 5xx answers | {server_errors} |",
        f"| answers off their case's statuses or error shape | {problems} |",
        f"| probe wall time | {probe_s:.1f} s |",
        f"| schemathesis requests generated | {generated:,} |",
        f"| schemathesis failures | {failures} |",
        f"| schemathesis wall time | {schemathesis_s:.1f} s |",
        "",
        *environment_table(environment(PACKAGES)),
    ]
    write_section("hostile_http", "\n".join(lines))
    print("\n".join(lines[:20]))


if __name__ == "__main__":
    main()
