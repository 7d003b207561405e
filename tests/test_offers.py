"""Offer decisions without HTTP: consent (property-tested), control hold-out, caps, cool-downs,
and the catalogue's validation messages."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.contract import CHANNELS
from features.errors import DataError
from serving import answers
from serving.offers import in_control, load_catalogue
from serving.schemas import RecommendRequest
from serving.state import Served

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = load_catalogue(ROOT / "configs/offers/demo.yaml")
NOW = dt.datetime(2024, 1, 2, 12)


def served(n: int, consent: np.ndarray, seed: int = 0, first: dict | None = None) -> Served:
    """A served population of `n` random customers; `first` sets columns of the first one."""
    rng = np.random.default_rng(seed)
    ids = [f"c{i:04d}" for i in range(n)]
    churn = rng.random(n)
    scores = pd.DataFrame({
        "churn_probability": churn,
        "risk_band": np.where(churn >= 0.6, "high", np.where(churn >= 0.3, "medium", "low")),
        "clv": rng.gamma(2.0, 300.0, n), "avg_order_value": rng.gamma(2.0, 30.0, n),
        "value_tier": rng.choice(["platinum", "gold", "silver", "bronze"], n),
        "rfm_segment": "At Risk", "days_since_last": rng.integers(0, 400, n),
    }, index=pd.Index(ids, name="customer_id"))
    for column, value in (first or {}).items():
        scores.loc[ids[0], column] = value
    flags = pd.DataFrame(consent, index=scores.index, columns=list(CHANNELS))
    return Served(scorer=None, scores=scores, churn_sorted=np.sort(churn), model_version="1",
                  model_run_id="r", features_version="f", as_of="2024-01-01", recommender=None,
                  catalogue=CATALOGUE, consent=flags,
                  columns={c: scores[c].to_numpy() for c in scores.columns})


class Log:
    """Stands in for the campaign log's read side: `sent` events given up front."""

    def __init__(self, sent: list[tuple[str, str, dt.datetime]]) -> None:
        self.sent = sent

    def contacts(self, ids: list[str], since: dt.datetime) -> pd.DataFrame:
        rows = [s for s in self.sent if s[0] in ids and s[2] >= since]
        return pd.DataFrame(rows, columns=["customer_id", "offer_id", "at"])


@settings(max_examples=60, deadline=None)
@given(consent=st.lists(st.lists(st.booleans(), min_size=4, max_size=4), min_size=1,
                        max_size=40),
       channel=st.sampled_from([None, *CHANNELS]),
       # what the API accepts as an id: printable, with a non-space
       campaign=st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1,
                        max_size=12).filter(str.strip),
       seed=st.integers(0, 1000))
def test_no_offer_ever_goes_out_without_consent_on_its_channel(consent, channel, campaign,
                                                               seed):
    s = served(len(consent), np.array(consent, dtype=bool), seed)
    req = RecommendRequest(customer_ids=list(s.scores.index), k=0, channel=channel,
                           campaign_id=campaign)
    results, assigned = answers.recommend(s, req, None, NOW)
    for rec in results:
        for offer in rec.offers:
            assert s.consent.loc[rec.customer_id, offer.channel], (rec, offer)
            assert channel is None or offer.channel == channel
        if rec.status == "control":
            assert not rec.offers
    assert {a["customer_id"] for a in assigned} == set(s.scores.index)


def test_control_share_is_stable_and_close_to_the_catalogue_share():
    ids = [f"c{i}" for i in range(20_000)]
    first = [in_control("spring", i, 0.1) for i in ids]
    assert first == [in_control("spring", i, 0.1) for i in ids]
    assert abs(np.mean(first) - 0.1) < 0.01
    assert first != [in_control("autumn", i, 0.1) for i in ids]


def test_contact_cap_and_cool_down_come_from_the_log():
    s = served(1, np.ones((1, 4), dtype=bool), first={
        "churn_probability": 0.7, "risk_band": "high", "value_tier": "gold",
        "days_since_last": 200, "clv": 2000.0})
    cid, campaign = "c0000", next(c for c in (f"x{i}" for i in range(100))
                                  if not in_control(c, "c0000", CATALOGUE.control_share))
    req = RecommendRequest(customer_ids=[cid], campaign_id=campaign)
    free, _ = answers.recommend(s, req, Log([]), NOW)
    assert free[0].status == "ok"
    offered = {o.offer_id for o in free[0].offers}
    assert "retention-15" in offered
    cooled, _ = answers.recommend(
        s, req, Log([(cid, "retention-15", NOW - dt.timedelta(days=10))]), NOW)
    assert "retention-15" not in {o.offer_id for o in cooled[0].offers}
    capped, _ = answers.recommend(
        s, req, Log([(cid, "x", NOW - dt.timedelta(days=d)) for d in (1, 2)]), NOW)
    assert capped[0].status == "contact_capped" and not capped[0].offers


@pytest.mark.parametrize(("edit", "says"), [
    (lambda c: c["offers"][1].update(channels=["fax"]), "offer winback-10: channels.0"),
    (lambda c: c["offers"][0]["prior"].pop("response_with_contact"),
     "offer retention-15: prior.response_with_contact"),
    (lambda c: c["offers"][2]["cost"].update(discount_share=1.5),
     "offer cross-sell: cost.discount_share"),
    (lambda c: c["offers"].append(dict(c["offers"][0])), "duplicate id"),
    (lambda c: c.update(control_share=1.0), "control_share"),
])
def test_an_invalid_catalogue_names_the_offer_and_the_field(tmp_path, edit, says):
    import copy

    import yaml

    raw = copy.deepcopy(yaml.safe_load((ROOT / "configs/offers/demo.yaml").read_text()))
    edit(raw)
    path = tmp_path / "offers.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match="offers.yaml") as err:
        load_catalogue(path)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_what_if_rows_value_tier_is_its_rank_among_the_snapshots_spend():
    import ibis

    from features.segments import add_value_tier
    from serving.state import tier_floors

    rng = np.random.default_rng(3)
    spend = np.round(rng.lognormal(5, 1.5, 2000), 0)  # rounded: ties at tier edges
    spend[:50] = 0.0
    snapshot = add_value_tier(ibis.memtable(pd.DataFrame({"spend_365d": spend}))).to_pandas()
    floors = tier_floors(snapshot)
    assert [name for name, _ in floors] == ["platinum", "gold", "silver", "bronze"]
    got = [answers.tier_of(v, floors) for v in snapshot["spend_365d"]]
    assert got == snapshot["value_tier"].tolist()
    assert answers.tier_of(spend.max() * 10, floors) == "platinum"
    assert answers.tier_of(-5.0, floors) == "bronze"
