"""CRM metrics against values computed by hand on a tiny fixture, the campaign results'
intervals by hand, and `retention report` writing the same figures."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.campaign_log import CampaignLog
from serving.cli import app
from serving.console.crm import Z95, campaign_results, cohort_retention, crm_metrics
from serving.console.sources import read_campaign_log

NAN = float("nan")


def tx(rows: list[tuple[str, str, str, float, bool]]) -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": [r[0] for r in rows], "order_id": [r[1] for r in rows],
        "timestamp": pd.to_datetime([r[2] for r in rows]), "product_id": "p",
        "quantity": 1.0, "amount": [r[3] for r in rows], "is_return": [r[4] for r in rows]})


# A: Jan order o1 (two lines), Feb orders o2 and o3. B: Jan o4, Mar o5 and a refund on o5.
# C: Feb o6.
FIXTURE = tx([
    ("A", "o1", "2024-01-05 10:00", 10.0, False), ("A", "o1", "2024-01-05 10:00", 20.0, False),
    ("B", "o4", "2024-01-20 09:00", 40.0, False),
    ("A", "o2", "2024-02-02 12:00", 50.0, False), ("A", "o3", "2024-02-25 12:00", 30.0, False),
    ("C", "o6", "2024-02-14 08:00", 25.0, False),
    ("B", "o5", "2024-03-03 15:00", 60.0, False), ("B", "o5", "2024-03-20 15:00", -10.0, True),
])


def assert_column(frame: pd.DataFrame, column: str, expected: list[float]) -> None:
    got = frame[column].astype(float).tolist()
    assert len(got) == len(expected), column
    for g, e in zip(got, expected, strict=True):
        assert (math.isnan(g) and math.isnan(e)) or g == pytest.approx(e), (column, got)


def test_monthly_metrics_match_hand_computed_values():
    m = crm_metrics(FIXTURE, "month")
    assert list(m.index) == ["2024-01", "2024-02", "2024-03"]
    assert_column(m, "active_customers", [2, 2, 1])            # {A,B}, {A,C}, {B}
    assert_column(m, "new_customers", [2, 1, 0])
    assert_column(m, "retention_rate", [NAN, 1 / 2, 0 / 2])    # A kept; nobody of {A,C}
    assert_column(m, "churn_rate", [NAN, 1 / 2, 1.0])
    assert_column(m, "repeat_purchase_rate", [0 / 2, 1 / 2, 0 / 1])  # A: o2 and o3 in Feb
    assert_column(m, "net_sales", [70, 105, 50])                # March: 60 - 10 refunded
    assert_column(m, "sales_per_customer", [35, 52.5, 50])
    assert_column(m, "orders", [2, 3, 1])
    assert_column(m, "average_order_value", [70 / 2, 105 / 3, 60 / 1])  # refund left out
    assert m["partial"].tolist() == [False, False, True]  # data stops 2024-03-20


def test_the_last_period_is_complete_when_the_data_runs_to_its_end():
    m = crm_metrics(FIXTURE, "month", data_end=dt.datetime(2024, 4, 1))
    assert not m["partial"].any()


def test_quarterly_metrics_match_hand_computed_values():
    q = crm_metrics(FIXTURE, "quarter")
    assert list(q.index) == ["2024Q1"]
    assert_column(q, "active_customers", [3])
    assert_column(q, "new_customers", [3])
    assert_column(q, "retention_rate", [NAN])
    assert_column(q, "repeat_purchase_rate", [2 / 3])  # A three orders, B two, C one
    assert_column(q, "sales_per_customer", [225 / 3])
    assert_column(q, "average_order_value", [235 / 6])


def test_an_empty_period_is_kept_and_breaks_retention():
    gap = tx([("A", "o1", "2024-01-05", 10.0, False), ("A", "o2", "2024-03-05", 10.0, False)])
    m = crm_metrics(gap, "month")
    assert list(m.index) == ["2024-01", "2024-02", "2024-03"]
    assert_column(m, "active_customers", [1, 0, 1])
    assert_column(m, "retention_rate", [NAN, 0.0, NAN])
    assert_column(m, "sales_per_customer", [10, NAN, 10])


def test_cohort_retention_matches_hand_computed_shares():
    c = cohort_retention(FIXTURE, "month")
    assert list(c.index) == ["2024-01", "2024-02"]
    assert c["customers"].tolist() == [2, 1]
    assert_column(c, 0, [1.0, 1.0])
    assert_column(c, 1, [1 / 2, 0.0])   # Jan cohort in Feb: A; Feb cohort in Mar: nobody
    assert_column(c, 2, [1 / 2, NAN])   # Jan cohort in Mar: B; Feb cohort: past the data


def campaign_log() -> pd.DataFrame:
    rows = []
    for i, (conv, rev) in enumerate([(1, 10.0), (0, 0.0), (1, 30.0), (0, 0.0)]):
        rows.append((f"t{i}", "treatment", "o", conv, rev))
    for i, (conv, rev) in enumerate([(0, 0.0), (0, 0.0), (1, 6.0)]):
        rows.append((f"c{i}", "control", "", conv, rev))
    rows += [("p0", "treatment", "p", 0, 0.0), ("p1", "treatment", "p", 0, 0.0)]
    return pd.DataFrame({"customer_id": [r[0] for r in rows], "campaign_id": "c1",
                         "arm": [r[1] for r in rows], "offer_id": [r[2] for r in rows],
                         "converted": [float(r[3]) for r in rows],
                         "revenue": [r[4] for r in rows]})


def test_campaign_results_match_hand_computed_lifts_and_intervals():
    r = campaign_results(campaign_log()).set_index("offer_id")
    assert list(r.index) == ["o", "p"]
    o = r.loc["o"]
    assert (o["treated"], o["control"]) == (4, 3)
    assert o["conversion_treated"] == pytest.approx(0.5)
    assert o["conversion_control"] == pytest.approx(1 / 3)
    # sample variances: treated [1,0,1,0] 1/3, control [0,0,1] 1/3
    se = math.sqrt((1 / 3) / 4 + (1 / 3) / 3)
    assert o["conversion_lift"] == pytest.approx(1 / 6)
    assert o["conversion_lift_low"] == pytest.approx(1 / 6 - Z95 * se)
    assert o["conversion_lift_high"] == pytest.approx(1 / 6 + Z95 * se)
    # revenue: treated mean 10 (variance 200), control mean 2 (variance 12)
    se_rev = math.sqrt(200 / 4 + 12 / 3)
    assert o["revenue_lift"] == pytest.approx(8.0)
    assert o["incremental_revenue"] == pytest.approx(32.0)
    assert o["incremental_revenue_low"] == pytest.approx(4 * (8 - Z95 * se_rev))
    assert o["incremental_revenue_high"] == pytest.approx(4 * (8 + Z95 * se_rev))
    p = r.loc["p"]  # shares the campaign's control group
    assert p["control"] == 3 and p["revenue_lift"] == pytest.approx(-2.0)


def test_campaign_results_read_from_the_services_event_log(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    at = dt.datetime(2024, 1, 1)
    events = []
    for row in campaign_log().itertuples():
        events.append({"event": "assigned", "at": at, "customer_id": row.customer_id,
                       "campaign_id": row.campaign_id, "arm": row.arm,
                       "offer_id": row.offer_id})
        if row.converted:
            events.append({"event": "converted", "at": at, "customer_id": row.customer_id,
                           "campaign_id": row.campaign_id, "revenue": row.revenue})
    CampaignLog(url).append(events)
    from_log = campaign_results(read_campaign_log(url)).set_index("offer_id")
    direct = campaign_results(campaign_log()).set_index("offer_id")
    pd.testing.assert_frame_equal(from_log, direct, check_dtype=False)


def test_report_writes_the_same_figures_as_csv_and_html(tmp_path):
    raw = FIXTURE.assign(quantity=FIXTURE["is_return"].map({True: -1.0, False: 1.0}))
    raw.drop(columns="is_return").to_parquet(tmp_path / "tx.parquet")
    (tmp_path / "tx.yaml").write_text(
        "name: tiny\nformat: parquet\npath: tx.parquet\nextracted_at: '2024-04-01'\n"
        "columns: {customer_id: customer_id, order_id: order_id, timestamp: timestamp,\n"
        "          product_id: product_id, quantity: quantity, amount: amount}\n")
    source = str(tmp_path / "tx.yaml")
    runner = CliRunner()
    done = runner.invoke(app, ["report", "--source", source, "--out",
                               str(tmp_path / "r.csv")])
    assert done.exit_code == 0, done.output
    written = pd.read_csv(tmp_path / "r.csv").set_index("period")
    assert written["active_customers"].tolist() == [2, 2, 1]
    assert written["sales_per_customer"].tolist() == pytest.approx([35, 52.5, 50])
    assert (tmp_path / "r-cohorts.csv").is_file()
    done = runner.invoke(app, ["report", "--source", source, "--period", "quarter", "--out",
                               str(tmp_path / "r.html")])
    assert done.exit_code == 0, done.output
    html = (tmp_path / "r.html").read_text()
    assert "2024Q1" in html and "<svg" in html
    assert 'src="http' not in html and 'href="http' not in html  # self-contained
