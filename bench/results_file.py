"""bench/RESULTS.md holds one section per benchmark script; each run rewrites only its own."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TITLE = "# Benchmark results\n\nEach section below is written whole by one run of its script.\n"


def write_section(name: str, markdown: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section of benchmark `name` in the results file."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else TITLE
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def environment(packages: Iterable[str], cores_note: str = "") -> dict[str, str]:
    """Machine (CPU, cores, RAM), OS, Python, the packages' versions and the date."""
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as fh:
        kb = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
    env = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": f"{cpu} (/proc/cpuinfo model name)",
        "cores": f"{os.cpu_count()} logical{cores_note}",
        "RAM": f"{kb / 1024**2:.1f} GiB",
        "OS": platform.platform(),
        "Python": f"{platform.python_version()} ({sys.executable})",
    }
    env.update({p: metadata.version(p) for p in packages})
    return env


def environment_table(env: dict[str, str]) -> list[str]:
    """The "Environment" subsection of a results section, as markdown lines."""
    rows = [f"| {k} | {v} |" for k, v in env.items()]
    return ["### Environment", "", "| | |", "|---|---|", *rows]


def fmt(x: float) -> str:
    """Seconds for a table: 3 decimals below 10 s, 2 above."""
    return f"{x:.3f}" if x < 10 else f"{x:.2f}"
