"""`retention report`: the console's CRM figures as a file, for people who get them by e-mail.

The same functions as the CRM page (`crm.crm_metrics`, `crm.cohort_retention`,
`crm.campaign_results`) and, for HTML, the same charts and tables (`crm_view`), in one
self-contained page (styles inline, nothing fetched). CSV writes the metrics table, and beside
it `<name>-cohorts.csv` and, with a campaign log, `<name>-campaigns.csv`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from features.csv_safe import write_csv
from features.errors import DataError
from serving.console.crm import PERIODS, campaign_results, cohort_retention, crm_metrics
from serving.console.crm_view import crm_context
from serving.console.formats import TEMPLATE_GLOBALS
from serving.console.sources import read_campaign_log, read_transactions

HERE = Path(__file__).resolve().parent


def build_report(source: Path, campaign_log: str | None, period: str) -> dict[str, object]:
    """The CRM figures of a transactions source (and a campaign log) for `period`."""
    if period not in PERIODS:
        raise DataError(f"--period: {period!r} is not one of {', '.join(PERIODS)}")
    tx, end = read_transactions(source)
    campaigns = (campaign_results(read_campaign_log(campaign_log)) if campaign_log
                 else campaign_results(pd.DataFrame()))
    return {"metrics": crm_metrics(tx, period, data_end=end),  # type: ignore[arg-type]
            "cohorts": cohort_retention(tx, period,  # type: ignore[arg-type]
                                        max_age=12 if period == "month" else 8),
            "campaigns": campaigns, "period": period, "source": str(source),
            "transactions": len(tx)}


def render_html(report: dict) -> str:
    """One self-contained HTML page of the report."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["html"]))
    env.globals.update(TEMPLATE_GLOBALS)
    context = crm_context(report["metrics"], report["cohorts"], report["campaigns"],
                          report["period"])
    css = Markup((HERE / "static" / "console.css").read_text(encoding="utf-8"))
    return env.get_template("report.html").render(
        css=css, source=report["source"], transactions=report["transactions"],
        made=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), **context)


def write_report(report: dict, out: Path) -> list[Path]:
    """Write .html or .csv (+ the cohort and campaign CSVs); returns the files written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".html":
        out.write_text(render_html(report), encoding="utf-8")
        return [out]
    if out.suffix != ".csv":
        raise DataError(f"{out}: --out must end in .html or .csv")
    written = [out]
    write_csv(report["metrics"].reset_index(), out)
    cohorts = out.with_name(f"{out.stem}-cohorts.csv")
    write_csv(report["cohorts"].reset_index().rename(columns=str), cohorts)
    written.append(cohorts)
    if not report["campaigns"].empty:
        campaigns = out.with_name(f"{out.stem}-campaigns.csv")
        write_csv(report["campaigns"], campaigns)
        written.append(campaigns)
    return written


def report_cmd(
    source: Annotated[Path, typer.Option(help="Source config of the transactions.")],
    out: Annotated[Path, typer.Option(help="report.html (charts and tables) or report.csv "
                                           "(the metrics; cohorts and campaigns beside it).")],
    campaign_log: Annotated[str | None, typer.Option(
        help="Campaign log: a source config (.yaml/.toml, a past campaign's table) or the "
             "service's log URL (sqlite:///..., postgresql://...).")] = None,
    period: Annotated[str, typer.Option(help="month or quarter.")] = "month",
) -> None:
    """CRM metrics per month or quarter (active, new, retention and churn, repeat purchase,
    sales per customer, order value), cohort retention and campaign results, as HTML or CSV."""
    report = build_report(source, campaign_log, period)
    for path in write_report(report, out):
        typer.echo(f"wrote {path}")
