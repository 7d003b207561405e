"""Profit: line costs and margin rates in source configs, the profit features on a hand-computed
fixture, value in margin terms in the answers (`serving.profit`), offers worth their margin,
cost to serve from the campaign log (in the service's answers and the batch scores), and the
fields over real HTTP."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from features import feature_frames
from features.campaign_log import CampaignLog
from features.config import SourceConfig, load_source_config
from features.contract import PROFIT_COLUMNS
from features.errors import DataError
from features.validate import load, validate
from serving.batch import enrich
from serving.config import RiskBands
from serving.offers import Catalogue, cost_to_serve, offer_value
from serving.profit import (
    COST_TO_SERVE_DAYS,
    VALUE_COLUMNS,
    cost_window,
    in_margin_terms,
    value_basis,
    with_cost_to_serve,
)
from tests.conftest import END, ROOT, Deployment, run

AS_OF = dt.date(2024, 3, 1)
COLUMNS = {"customer_id": "customer", "order_id": "invoice", "timestamp": "ts",
           "product_id": "sku", "quantity": "qty", "price": "unit_price"}

# Hand-computed: a buys 2 x 10 (cost 6 each) and 1 x 30 (cost 12), then returns one 10 (its
# cost comes back, given in the source as a positive number); b buys 1 x 50 at a loss (cost 60)
# and 1 x 40 (cost 10) a year and a half before as_of (outside the 365 days); c buys 1 x 100
# (cost 90).
RAW = pd.DataFrame({
    "customer": ["a", "a", "a", "b", "b", "c"],
    "invoice": ["1", "1", "C2", "3", "0", "4"],
    "ts": ["2024-01-10", "2024-01-10", "2024-02-01", "2024-02-15", "2022-09-01", "2024-02-20"],
    "sku": ["p", "q", "p", "r", "q", "s"],
    "qty": ["2", "1", "-1", "1", "1", "1"],
    "unit_price": ["10", "30", "10", "50", "40", "100"],
    "line_cost": ["12", "12", "6", "60", "10", "90"],
})
EXPECTED = pd.DataFrame({
    "customer_id": ["a", "b", "c"],
    # a: sales 50 - cost 24 = 26, the return gives back 10 - 6 = 4: 22 on net revenue 40
    "gross_margin": [22.0, 20.0, 10.0],
    "margin_rate": [22.0 / 40.0, 20.0 / 90.0, 0.1],
    "returns_cost": [4.0, 0.0, 0.0],
    "margin_365d": [22.0, -10.0, 10.0],
    "total_spend": [40.0, 90.0, 100.0],
})


def config(**settings: object) -> SourceConfig:
    return SourceConfig.model_validate({
        "name": "shop", "format": "csv", "path": "unused.csv", "columns": dict(COLUMNS),
        "derive": {"amount": "quantity * price"}, "return_order_prefix": "C", **settings})


def rows(cfg: SourceConfig, raw: pd.DataFrame = RAW) -> pd.DataFrame:
    result = validate(raw, cfg, now=dt.datetime(2024, 6, 1))
    assert result.counts == {}, result.counts
    return feature_frames(result.accepted, [AS_OF])[AS_OF].set_index("customer_id")


def test_profit_features_by_hand_from_line_costs() -> None:
    got = rows(config(columns={**COLUMNS, "cost": "line_cost"}))
    want = EXPECTED.set_index("customer_id")
    for col in want.columns:
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), err_msg=col)
    assert set(got["value_basis"]) == {"margin"}
    # identity: margin on sales minus what returns gave back
    np.testing.assert_allclose(got["gross_margin"], [26.0 - 4.0, 20.0, 10.0])
    # tiers rank on the year's margin: c (margin 10, revenue 100) is not above a (22, 40),
    # b's loss in the year puts it last although its year's revenue (50) beats a's
    ranked = got.sort_values("margin_365d", ascending=False).index.tolist()
    assert ranked == ["a", "c", "b"]
    tiers = got["value_tier"].to_dict()
    assert tiers["a"] == "platinum" and tiers["b"] == "bronze"
    assert list(PROFIT_COLUMNS) == [c for c in got.columns if c in PROFIT_COLUMNS]


def test_no_cost_means_revenue_basis_and_neutral_values() -> None:
    got = rows(config())
    assert set(got["value_basis"]) == {"revenue"}
    np.testing.assert_allclose(got["margin_rate"], 1.0)
    np.testing.assert_allclose(got["gross_margin"], got["total_spend"])
    np.testing.assert_allclose(got["margin_365d"], got["spend_365d"])
    np.testing.assert_allclose(got["returns_cost"], [10.0, 0.0, 0.0])  # the refunded value
    # tiers then rank on revenue, as before costs existed: c first
    assert got["value_tier"].to_dict()["c"] == "platinum"


def test_margin_rate_for_the_whole_source_and_by_category() -> None:
    flat = rows(config(margin_rate=0.25))
    np.testing.assert_allclose(flat["margin_rate"], 0.25)
    np.testing.assert_allclose(flat["gross_margin"], flat["total_spend"] * 0.25)
    np.testing.assert_allclose(flat["returns_cost"], [2.5, 0.0, 0.0])  # 10 x 0.25 given back
    raw = RAW.assign(dept=["toys", "food", "toys", "food", "misc", "misc"])
    by_cat = rows(config(columns={**COLUMNS, "category": "dept"}, margin_rate=0.5,
                         margin_rates={"toys": 0.2, "food": 0.1}), raw)
    # a: toys 20 at 0.2 and food 30 at 0.1, then toys -10 back at 0.2; b: food and misc (0.5)
    np.testing.assert_allclose(by_cat.loc["a", "gross_margin"], 20 * 0.2 + 30 * 0.1 - 10 * 0.2)
    np.testing.assert_allclose(by_cat.loc["b", "gross_margin"], 50 * 0.1 + 40 * 0.5)
    np.testing.assert_allclose(by_cat.loc["c", "margin_rate"], 0.5)


@pytest.mark.parametrize(("settings", "says"), [
    ({"margin_rate": 1.5}, "margin_rate: 1.5 is not a margin rate; expected a share of revenue"),
    ({"margin_rate": -0.1}, "margin_rate: -0.1 is not a margin rate"),
    ({"margin_rates": {"toys": 2}, "margin_rate": 0.3}, "margin_rates.toys: 2.0 is not a margin"),
    ({"margin_rates": {"toys": 0.2}, "margin_rate": 0.3}, "needs the `category` column"),
    ({"margin_rates": {"toys": 0.2}, "columns": {**COLUMNS, "category": "dept"}},
     "`margin_rates` needs `margin_rate` too"),
    ({"margin_rate": 0.3, "columns": {**COLUMNS, "cost": "line_cost"}},
     "`cost` is mapped and a margin rate is set"),
])
def test_config_mistakes_are_one_line(tmp_path: Path, settings: dict, says: str) -> None:
    doc = {"name": "shop", "format": "csv", "path": "x.csv", "columns": COLUMNS,
           "derive": {"amount": "quantity * price"}, **settings}
    path = tmp_path / "source.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_source_config(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert says in message, message


def test_a_missing_cost_column_is_one_line(tmp_path: Path) -> None:
    RAW.drop(columns="line_cost").to_csv(tmp_path / "x.csv", index=False)
    cfg = config(columns={**COLUMNS, "cost": "line_cost"}, path=str(tmp_path / "x.csv"))
    with pytest.raises(DataError) as err:
        load(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert "missing column 'line_cost' (expected for cost)" in message


def test_a_cost_beyond_exact_money_is_quarantined_not_summed() -> None:
    raw = RAW.assign(line_cost=["1e15", "12", "6", "60", "10", "90"])
    result = validate(raw, config(columns={**COLUMNS, "cost": "line_cost"}),
                      now=dt.datetime(2024, 6, 1))
    assert result.counts == {"amount_out_of_range": 1}
    assert result.rows_in == len(result.accepted) + result.n_quarantined


def scored(rates: list[float], basis: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = len(rates)
    scores = pd.DataFrame({
        "customer_id": [f"c{i}" for i in range(n)], "as_of": str(AS_OF), "horizon_days": 90,
        "churn_probability": np.linspace(0.2, 0.8, n), "expected_purchases": 1.0,
        "expected_spend": 50.0, "clv": 200.0, "clv_p10": 50.0, "clv_p50": 150.0,
        "clv_p90": 400.0})
    scores["value_at_risk"] = scores["churn_probability"] * scores["clv"]
    features = pd.DataFrame({"margin_rate": rates, "value_basis": basis,
                             "gross_margin": np.multiply(rates, 100.0)})
    return scores, features


def test_value_in_margin_terms_is_revenue_value_times_the_margin_rate() -> None:
    scores, features = scored([0.3, 1.0, -0.5], ["margin", "revenue", "margin"])
    out = enrich(scores, features, RiskBands())
    assert out["value_basis"].tolist() == ["margin", "revenue", "margin"]
    np.testing.assert_allclose(out["clv"], [60.0, 200.0, -100.0])
    np.testing.assert_allclose(out["value_at_risk"], out["churn_probability"] * out["clv"])
    np.testing.assert_allclose(out.loc[0, ["clv_p10", "clv_p50", "clv_p90"]].astype(float),
                               [15.0, 45.0, 120.0])
    # a loss-making customer: the interval's ends swap so that p10 <= p50 <= p90 still holds
    np.testing.assert_allclose(out.loc[2, ["clv_p10", "clv_p50", "clv_p90"]].astype(float),
                               [-200.0, -75.0, -25.0])
    np.testing.assert_allclose(out["expected_spend"], 50.0)  # spend stays what is paid
    assert out["margin_rate"].tolist() == [0.3, 1.0, -0.5]


def test_a_snapshot_without_profit_columns_answers_on_revenue() -> None:
    scores, _ = scored([0.3], ["margin"])
    features = pd.DataFrame({"spend_365d": [1.0]})
    out = in_margin_terms(scores, features)
    assert value_basis(features).tolist() == ["revenue"]
    pd.testing.assert_frame_equal(out[list(VALUE_COLUMNS)], scores[list(VALUE_COLUMNS)])
    assert enrich(scores, features, RiskBands())["value_basis"].tolist() == ["revenue"]


CATALOGUE = Catalogue.model_validate({"version": "t", "offers": [
    {"id": "cross", "kind": "cross_sell", "channels": ["email", "sms"], "value_basis": "order",
     "cost": {"per_contact": {"email": 0.1, "sms": 0.5}, "discount_share": 0.1},
     "prior": {"response_with_contact": 0.2, "response_without_contact": 0.1}}]})


def test_an_order_is_worth_its_margin_and_a_discount_costs_revenue() -> None:
    offer = CATALOGUE.offers[0]
    inc, cost, net = offer_value(offer, "email", 0.0, 100.0, 0.2, 0.1, margin_rate=0.3)
    assert inc == pytest.approx(0.1 * 30.0)
    assert cost == pytest.approx(0.1 + 0.2 * 0.1 * 100.0)
    assert net == pytest.approx(inc - cost)
    revenue = offer_value(offer, "email", 0.0, 100.0, 0.2, 0.1)
    assert revenue[0] == pytest.approx(10.0)


def test_cost_to_serve_counts_contacts_in_the_window_before_as_of(tmp_path: Path) -> None:
    log = CampaignLog(f"sqlite:///{tmp_path / 'log.db'}")
    day = dt.datetime(2024, 2, 1)
    log.append([
        {"event": "sent", "customer_id": "a", "campaign_id": "w", "offer_id": "cross",
         "channel": "sms", "at": day},
        {"event": "sent", "customer_id": "a", "campaign_id": "w", "offer_id": "cross",
         "channel": "email", "at": day + dt.timedelta(days=1)},
        {"event": "sent", "customer_id": "b", "campaign_id": "w", "offer_id": "cross",
         "channel": "", "at": day},  # no channel logged: the offer's cheapest
        {"event": "sent", "customer_id": "b", "campaign_id": "w", "offer_id": "gone",
         "channel": "sms", "at": day},  # an offer the catalogue no longer has: no known cost
        {"event": "sent", "customer_id": "a", "campaign_id": "w", "offer_id": "cross",
         "channel": "sms", "at": dt.datetime(2024, 3, 1)},  # on as_of: after the window
        {"event": "opened", "customer_id": "a", "campaign_id": "w", "at": day},
    ])
    sent = log.sent(dt.datetime(2024, 1, 1), dt.datetime(2024, 3, 1))
    costs = cost_to_serve(sent, CATALOGUE)
    assert costs.to_dict() == pytest.approx({"a": 0.6, "b": 0.1})
    assert cost_to_serve(log.sent(day, day, ["a"]), CATALOGUE).empty


def test_synthetic_source_has_costs_and_margins() -> None:
    from features.synthetic import SyntheticConfig, generate

    tx = generate(SyntheticConfig(n_customers=300, seed=4, dirty_fraction=0.0)).transactions
    share = tx["cost"] / tx["amount"]
    assert share.between(0, 1).all() and 0.3 < share.mean() < 0.8
    assert (tx["cost"] * tx["quantity"] >= 0).all()  # a return's cost is negative


def test_score_and_risk_list_carry_the_value_basis(dep) -> None:
    snap = dep.snapshot.set_index("customer_id")
    assert set(snap["value_basis"]) == {"margin"}  # the synthetic retailer has line costs
    ids = snap.index[:3].tolist()
    r = dep.post("/score", {"customer_ids": [*ids, "nobody"]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    for x in results[:3]:
        assert x["value_basis"] == "margin"
        assert x["margin_rate"] == pytest.approx(snap.loc[x["customer_id"], "margin_rate"],
                                                 abs=1e-6)
        assert x["gross_margin"] == pytest.approx(snap.loc[x["customer_id"], "gross_margin"],
                                                  abs=1e-6)
        assert x["value_at_risk"] == pytest.approx(x["churn_probability"] * x["clv"], rel=1e-4)
    assert results[3]["value_basis"] is None
    risk = dep.post("/risk_list", {"top_n": 5}).json()["results"]
    assert {x["value_basis"] for x in risk} == {"margin"}
    var = [x["value_at_risk"] for x in risk]
    assert var == sorted(var, reverse=True)
    csv = dep.post("/risk_list.csv", {"top_n": 5})
    assert csv.status_code == 200
    table = pd.read_csv(io.StringIO(csv.text))
    assert {"value_basis", "margin_rate", "gross_margin"} <= set(table.columns)
    assert set(table["value_basis"]) == {"margin"}
    assert table["customer_id"].tolist() == [x["customer_id"] for x in risk]


def test_the_cost_window_ends_before_as_of_and_net_value_subtracts_it() -> None:
    since, before = cost_window("2024-03-01")
    assert before == dt.datetime(2024, 3, 1)
    assert before - since == dt.timedelta(days=COST_TO_SERVE_DAYS)
    scores = pd.DataFrame({"clv": [10.0, 5.0]}, index=pd.Index(["a", "b"], name="customer_id"))
    out = with_cost_to_serve(scores, pd.Series({"a": 0.6}))
    assert out["cost_to_serve"].tolist() == [0.6, 0.0]  # no contact: no cost
    np.testing.assert_allclose(out["net_value"], [9.4, 5.0])
    assert with_cost_to_serve(scores, None) is scores  # no log or catalogue: no columns


def sent(cid: str, offer: str, channel: str, at: dt.datetime) -> dict:
    return {"event": "sent", "customer_id": cid, "campaign_id": "profit", "offer_id": offer,
            "channel": channel, "at": at}


@pytest.fixture(scope="module")
def costed(trained):
    """The service over the trained snapshot (as_of END) with its own campaign log: contacts
    before as_of, on it and after it, and from before the window."""
    ids = trained.snapshot["customer_id"].astype(str).tolist()[:3]
    a, b, c = ids
    as_of = dt.datetime.fromisoformat(END)
    name = trained.serve_config("serve-costs.yaml", trained.home / "snapshot", "costs-log.db")
    CampaignLog(f"sqlite:///{trained.home / 'costs-log.db'}").append([
        sent(a, "winback-10", "direct_mail", as_of - dt.timedelta(days=30)),  # 0.90
        sent(a, "retention-15", "sms", as_of - dt.timedelta(seconds=1)),  # 0.15
        sent(a, "winback-10", "direct_mail", as_of),  # on as_of: not before it
        sent(a, "winback-10", "direct_mail", as_of + dt.timedelta(days=40)),  # after
        sent(b, "cross-sell", "push", as_of - dt.timedelta(days=COST_TO_SERVE_DAYS)),  # 0.01
        sent(b, "cross-sell", "push", as_of - dt.timedelta(days=COST_TO_SERVE_DAYS + 1)),
        {"event": "opened", "customer_id": b, "campaign_id": "profit",
         "at": as_of - dt.timedelta(days=3)},
    ])
    d = Deployment(trained.home, name)
    d.start()
    yield d, {a: 0.90 + 0.15, b: 0.01, c: 0.0}
    d.stop()


def test_answers_carry_the_cost_to_serve_before_as_of_and_the_net_value(costed, trained):
    d, want = costed
    r = d.post("/score", {"customer_ids": [*want, "nobody"]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    for x in results[:3]:
        assert x["cost_to_serve"] == pytest.approx(want[x["customer_id"]], abs=1e-9)
        assert x["net_value"] == pytest.approx(x["clv"] - x["cost_to_serve"], abs=1e-5)
    assert results[3]["cost_to_serve"] is None and results[3]["net_value"] is None
    everyone = d.post("/risk_list", {"top_n": 10_000}).json()["results"]
    assert len(everyone) == len(trained.snapshot)
    got = {x["customer_id"]: x["cost_to_serve"] for x in everyone}
    assert got == pytest.approx({**dict.fromkeys(got, 0.0), **want})
    csv = d.post("/risk_list.csv", {"top_n": 10_000})
    assert csv.status_code == 200
    table = pd.read_csv(io.StringIO(csv.text), dtype={"customer_id": str})
    costs = table.set_index("customer_id")["cost_to_serve"]
    assert costs.loc[list(want)].tolist() == pytest.approx(list(want.values()))
    np.testing.assert_allclose(table["net_value"], table["clv"] - table["cost_to_serve"],
                               atol=1e-9)
    spec = d.client.get("/docs.json").json()["components"]["schemas"]["CustomerScore"]
    assert {"cost_to_serve", "net_value"} <= set(spec["properties"])
    # batch scores: the same costs with --campaign-log and --offers, no columns without
    home = trained.home
    log = f"sqlite:///{home / 'costs-log.db'}"
    run("score", "--features", str(home / "snapshot"), "--out", str(home / "costs.parquet"),
        "--campaign-log", log, "--offers", str(ROOT / "configs/offers/demo.yaml"),
        "--no-reasons", "--tracking-uri", d.tracking, cwd=home)
    batch = pd.read_parquet(home / "costs.parquet").set_index("customer_id")
    assert batch.loc[list(want), "cost_to_serve"].tolist() == pytest.approx(list(want.values()))
    assert (batch["cost_to_serve"] >= 0).all() and batch["cost_to_serve"].sum() == \
        pytest.approx(sum(want.values()))
    np.testing.assert_allclose(batch["net_value"], batch["clv"] - batch["cost_to_serve"])


def test_batch_cost_to_serve_needs_both_options(trained) -> None:
    import subprocess

    from tests.conftest import BIN, clean_env

    done = subprocess.run([str(BIN / "retention"), "score", "--features",
                           str(trained.home / "snapshot"), "--out", "x.csv", "--campaign-log",
                           "sqlite:///nowhere.db"], cwd=trained.home, capture_output=True,
                          text=True, env=clean_env())
    assert done.returncode == 2
    assert "--campaign-log: cost to serve needs --offers too" in done.stderr, done.stderr


COSTS_DB = 11  # a database of the test Redis no other test uses


def test_a_store_backed_service_answers_the_same_cost_to_serve(costed, trained, redis_url):
    import redis

    from serving import answers
    from serving.config import load_config
    from serving.schemas import RiskListRequest
    from serving.state import Live

    d, want = costed
    ids = [*want, "nobody"]
    expected = {x["customer_id"]: (x["cost_to_serve"], x["net_value"])
                for x in d.post("/score", {"customer_ids": ids}).json()["results"]}
    home = trained.home
    url = redis_url.rsplit("/", 1)[0] + f"/{COSTS_DB}"
    redis.Redis.from_url(url).flushdb()
    cfg = load_config(home / "serve-costs.yaml").model_copy(update={"scores": url})
    log = CampaignLog(f"sqlite:///{home / 'costs-log.db'}", create=False)

    def answered(live: Live) -> dict[str, tuple]:
        got = {x.customer_id: (x.cost_to_serve, x.net_value)
               for x in answers.score_ids(live.current, ids)}
        _, top = answers.risk_list(live.current, RiskListRequest(top_n=10_000))
        assert top["cost_to_serve"].loc[list(want)].tolist() == pytest.approx(
            list(want.values()))
        return got

    # published without costs: the service adds its own, from its log and catalogue
    run("score", "--features", str(home / "snapshot"), "--publish", url, "--tracking-uri",
        d.tracking, cwd=home)
    assert answered(Live(cfg, watch=False, campaign_log=log)) == expected
    # published with costs: they travel with the scores (no log needed to answer them)
    run("score", "--features", str(home / "snapshot"), "--publish", url, "--tracking-uri",
        d.tracking, "--campaign-log", f"sqlite:///{home / 'costs-log.db'}", "--offers",
        str(ROOT / "configs/offers/demo.yaml"), cwd=home)
    live = Live(cfg, watch=False)
    assert "cost_to_serve" in live.current.published.columns
    assert answered(live) == expected
