"""Dirty-source probe: every case of tests/test_dirty_sources.py through validate and build.

Each case (a small data file and a source config with one kind of dirt) goes through
`retention data validate` and `retention features build` in a temp folder, in process as the CLI
runs them (a DataError is exit 2, anything else a traceback), and the cases named in the test
module's CLI_CASES also through the real `retention` program in a subprocess (`--cli` sends every
case there). Counted: tracebacks (must be 0), runs that loaded a source whose
rows_in != accepted + quarantined (must be 0), and exits by code. The report replaces the
"dirty_sources" section of bench/RESULTS.md.

    python bench/bench_dirty_sources.py          # in process, plus CLI_CASES as subprocesses
    python bench/bench_dirty_sources.py --cli    # every case through the real CLI (slower)
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from results_file import RESULTS, environment_table, write_section
from results_file import environment as machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the cases live in the test module

from tests.test_dirty_sources import (  # noqa: E402
    CASES,
    CLI_CASES,
    COMMANDS,
    Case,
    Outcome,
    check,
    run_in_process,
    run_subprocess,
)

PACKAGES = ("pandas", "pyarrow", "pydantic", "PyYAML", "duckdb", "ibis-framework")


@dataclass
class Run:
    """One case through one command, in process or through the real CLI."""

    case: Case
    command: str
    how: str
    outcome: Outcome

    @property
    def unbalanced(self) -> bool:
        return self.outcome.code == 0 and not self.outcome.balanced


def probe(cases: Sequence[Case], cli_names: set[str], folder: Path
          ) -> tuple[list[Run], list[str]]:
    """Every case through both commands; the runs, and the test's failed checks, if any."""
    runs, failed = [], []
    for i, case in enumerate(cases):
        ways = [("in process", run_in_process)]
        if case.name in cli_names:
            ways.append(("cli", run_subprocess))
        for how, run in ways:
            outcomes = {command: run(case, folder / f"{i}" / how.replace(" ", "-") / command,
                                     command) for command in COMMANDS}
            runs += [Run(case, command, how, outcome) for command, outcome in outcomes.items()]
            try:
                check(case, outcomes)
            except AssertionError:
                failed.append(f"{case.name} ({how})")
        print(f"{i + 1:>3}/{len(cases)} {case.name}", flush=True)
    return runs, failed


def _cell(text: str, width: int = 90) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def report(runs: list[Run], failed: list[str], cases: Sequence[Case], env: dict[str, str],
           argv: str) -> str:
    tracebacks = [r for r in runs if r.outcome.traceback or r.outcome.code not in (0, 2)]
    unbalanced = [r for r in runs if r.unbalanced]
    validate = {r.case.name: r.outcome for r in runs
                if r.command == "validate" and r.how == "in process"}
    exits = Counter((r.how, r.command, r.outcome.code) for r in runs)
    n_cli = len({r.case.name for r in runs if r.how == "cli"})
    lines = [
        "## Dirty sources (`bench/bench_dirty_sources.py`)",
        "",
        f"Written by `bench/bench_dirty_sources.py` on {env['date']}; every number below comes "
        f"from that one run (`python bench/bench_dirty_sources.py{argv}`). The cases are "
        "`CASES` of `tests/test_dirty_sources.py`: tiny data files and source configs, each with "
        "one kind of dirt (encodings, byte order marks, empty and header-only files, ragged "
        "rows, separators, mixed and implausible timestamps, decimal commas, NaN/inf/huge "
        "numbers, returns, duplicates, missing columns, unknown keys, bad YAML/TOML, config "
        "mistakes). Each goes through `data validate` and `features build` (as_of 2024-03-01) "
        f"in process; {n_cli} of them also through the real `retention` program.",
        "",
        "### Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| no traceback: every run exits 0 or 2 | {len(tracebacks)} tracebacks in "
        f"{len(runs)} runs | {'yes' if not tracebacks else 'no'} |",
        f"| rows_in = accepted + quarantined (per reason, and the quarantine file's rows) "
        f"whenever a source loads | {len(unbalanced)} runs off | "
        f"{'yes' if not unbalanced else 'no'} |",
        f"| each case ends as the test expects (exit codes, counts where given) | "
        f"{len(failed)} cases off | {'yes' if not failed else 'no'} |",
        "",
        f"### Exits by code ({len(cases)} cases, {len(runs)} runs)",
        "",
        "| how | command | exit 0 | exit 2 | other |",
        "|---|---|---|---|---|",
    ]
    for how in ("in process", "cli"):
        for command in COMMANDS:
            if any((how, command, c) in exits for c in (0, 1, 2)) or how == "in process":
                other = sum(n for (h, cmd, code), n in exits.items()
                            if h == how and cmd == command and code not in (0, 2))
                lines.append(f"| {how} | {command} | {exits[(how, command, 0)]} | "
                             f"{exits[(how, command, 2)]} | {other} |")
    lines += [
        "",
        "### Per case (in process)",
        "",
        "| case | validate | rows in | accepted | quarantined by reason | build | "
        "message (validate, else build) |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        v = validate[case.name]
        b = next(r.outcome for r in runs if r.case is case and r.command == "build"
                 and r.how == "in process")
        s = v.summary or {}
        reasons = s.get("reasons") or {}
        assert isinstance(reasons, dict)
        counts = ", ".join(f"{k} {n}" for k, n in reasons.items()) or ("none" if s else "")
        message = (v.message or b.message).strip().splitlines() or [""]
        message = re.sub(r"\S*/(?=[^/\s]+: )", "", message[-1])  # without the temp folders
        lines.append(f"| {_cell(case.name, 40)} | {v.code} | {s.get('rows_in', '')} | "
                     f"{s.get('accepted', '')} | {counts} | {b.code} | {_cell(message)} |")
    if tracebacks or unbalanced or failed:
        lines += ["", "### Problems", ""]
        lines += [f"- traceback: {r.case.name} ({r.how} {r.command}): "
                  f"{_cell(r.outcome.message.strip().splitlines()[-1], 200)}" for r in tracebacks]
        lines += [f"- unbalanced: {r.case.name} ({r.how} {r.command}): {r.outcome.summary}"
                  for r in unbalanced]
        lines += [f"- not as the test expects: {text}" for text in failed]
    lines += ["", *environment_table(env)]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--cli", action="store_true",
                   help="every case through the real CLI too, not only CLI_CASES")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"report path (default {RESULTS})")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    cli_names = {c.name for c in CASES} if args.cli else set(CLI_CASES)
    with tempfile.TemporaryDirectory() as folder:
        runs, failed = probe(CASES, cli_names, Path(folder))
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    markdown = report(runs, failed, CASES, machine(PACKAGES), f" {argv_text}" if argv_text else "")
    write_section("dirty_sources", markdown, args.out)
    print(markdown.split("### Per case")[0])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
