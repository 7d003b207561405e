"""The answers behind each endpoint, on a `Served` bundle; the BentoML service is a thin shell.

Kept apart from HTTP so that the decision rules (consent, caps, control groups) can be tested
directly, including by property tests.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from features.campaign_log import CampaignLog
from features.contract import CHANNELS, MARGIN
from serving.config import RiskBands
from serving.offers import Catalogue, in_control, offer_value
from serving.schemas import (
    CustomerScore,
    FeatureRow,
    OfferChoice,
    ProductChoice,
    Recommendation,
    RecommendRequest,
    RiskListRequest,
)
from serving.state import Served

FIELDS = [f for f in CustomerScore.model_fields if f not in ("customer_id", "status",
                                                             "model_version")]


def _clean(v: object) -> object:
    if isinstance(v, float | np.floating):
        return None if not math.isfinite(float(v)) else round(float(v), 6)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _row_score(customer_id: str, row: dict, model_version: str) -> CustomerScore:
    values = {k: _clean(row.get(k)) for k in FIELDS if k in row}
    for key in ("reasons_raising", "reasons_lowering"):
        text = row.get(key) or ""
        values[key] = [r for r in str(text).split("; ") if r]
    values["as_of"] = str(row.get("as_of")) if row.get("as_of") is not None else None
    return CustomerScore(customer_id=customer_id, status="ok", model_version=model_version,
                         **values)


def score_ids(served: Served, ids: list[str]) -> list[CustomerScore]:
    """Scores of known customers; an unknown id gets `unknown_customer`, not an error.
    Reads per-customer dicts (`Served.rows`): no DataFrame on the hot path."""
    out = []
    for cid, row in zip(ids, served.rows(ids), strict=True):
        if row is None:
            out.append(CustomerScore(customer_id=cid, status="unknown_customer",
                                     model_version=served.model_version))
        else:
            out.append(_row_score(cid, row, served.model_version))
    return out


def segment_of(r: int, f: int) -> str:
    from features.segments import RFM_SEGMENTS  # imports Ibis: only once a row is scored

    for name, rs, fs in RFM_SEGMENTS:
        if r in rs and f in fs:
            return name
    return "Hibernating"


def tier_of(spend_365d: float, floors: tuple[tuple[str, float], ...]) -> str | None:
    """Value tier of a spend among the served population's tier floors (best first)."""
    for name, floor in floors:
        if spend_365d >= floor:
            return name
    return floors[-1][0] if floors else None


def score_rows(served: Served, rows: list[FeatureRow], bands: RiskBands) -> list[CustomerScore]:
    """Score feature rows sent by the caller, ranked against the served population; each row
    gets the answer it would get alone (the scorer draws per customer), micro-batched or not."""
    from serving.batch import enrich  # imports XGBoost: only once a row is scored

    frame = pd.DataFrame([r.model_dump() for r in rows])
    frame["as_of"] = frame["as_of"].fillna(pd.Timestamp(served.as_of).date())
    frame = frame.astype({c: "float64" for c in frame.columns
                          if c not in ("customer_id", "as_of")})
    scores = served.scorer.score(frame)
    frame["rfm_segment"] = [segment_of(int(r), int(f))
                            for r, f in zip(frame["r_score"], frame["f_score"], strict=True)]
    frame["value_tier"] = [tier_of(v, served.tier_floors) for v in frame["spend_365d"]]
    out = enrich(scores, frame, bands, population=served.churn_sorted)
    return [_row_score(r["customer_id"], r, served.model_version)
            for r in out.to_dict("records")]


def risk_list(served: Served, req: RiskListRequest) -> tuple[int, pd.DataFrame]:
    """Customers ranked by value at risk after the filters; (matched, top rows)."""
    f = req.filters
    if served.index is not None and served.score_store is not None:
        matched, ranks = served.index.select(
            bands=f.bands, tiers=f.tiers, segments=f.segments,
            min_value_at_risk=f.min_value_at_risk, min_clv=f.min_clv, top_n=req.top_n)
        return matched, served.with_costs(served.score_store.ranked(served.published, ranks))
    s = served.scores
    mask = np.ones(len(s), dtype=bool)
    if f.bands:
        mask &= s["risk_band"].isin(f.bands).to_numpy()
    if f.tiers:
        mask &= s["value_tier"].isin(f.tiers).to_numpy()
    if f.segments:
        mask &= s["rfm_segment"].isin(f.segments).to_numpy()
    if f.min_value_at_risk is not None:
        mask &= (s["value_at_risk"] >= f.min_value_at_risk).to_numpy()
    if f.min_clv is not None:
        mask &= (s["clv"] >= f.min_clv).to_numpy()
    matched = s[mask]
    top = matched.sort_values(["value_at_risk", "churn_probability"], ascending=False,
                              kind="stable").head(req.top_n)
    return int(mask.sum()), top


def risk_scores(served: Served, top: pd.DataFrame) -> list[CustomerScore]:
    return [_row_score(str(cid), row, served.model_version)
            for cid, row in top.to_dict("index").items()]


# The hold-out of answers that name no campaign (the same customers on every call).
DEFAULT_CAMPAIGN = "default"


def recommend(served: Served, req: RecommendRequest, log: CampaignLog | None,
              now: dt.datetime) -> tuple[list[Recommendation], list[dict]]:
    """Per customer: control hold-out, consent, caps and eligibility, then offers ranked by
    net expected value, plus products. Returns the answers and the `assigned` events to log
    (none when the request names no campaign)."""
    cat = served.catalogue
    ids = list(dict.fromkeys(req.customer_ids))
    history = _contacts(log, ids, cat, now)
    products = _products(served, ids, req.k, cat)
    rows = dict(zip(ids, served.rows(ids), strict=True))
    answers: dict[str, Recommendation] = {}
    assigned: list[dict] = []
    for cid in ids:
        rec = _decide(served, cat, req, cid, rows[cid], history.get(cid, []), now)
        if rec.status != "control":
            rec.products = products.get(cid, [])
        answers[cid] = rec
        if rec.arm is not None and req.campaign_id is not None:
            top = rec.offers[0] if rec.offers else None
            assigned.append({"event": "assigned", "at": now, "customer_id": cid,
                             "campaign_id": req.campaign_id, "arm": rec.arm,
                             "offer_id": top.offer_id if top else "",
                             "channel": top.channel if top else ""})
    return [answers[cid] for cid in req.customer_ids], assigned


def _contacts(log: CampaignLog | None, ids: list[str], cat: Catalogue | None,
              now: dt.datetime) -> dict[str, list[tuple[str, dt.datetime]]]:
    if log is None or cat is None:
        return {}
    days = max([cat.contact_policy.window_days]
               + [o.cooldown_days for o in cat.offers]
               + [o.eligibility.min_days_since_contact for o in cat.offers])
    frame = log.contacts(ids, now - dt.timedelta(days=days))
    out: dict[str, list[tuple[str, dt.datetime]]] = {}
    for cid, offer, at in frame.itertuples(index=False):
        out.setdefault(cid, []).append((offer, pd.Timestamp(at).to_pydatetime()))
    return out


def _products(served: Served, ids: list[str], k: int,
              cat: Catalogue | None) -> dict[str, list[ProductChoice]]:
    rec = served.recommender
    if rec is None or k == 0:
        return {}
    repeatable = set(cat.repeatable_products) if cat else set()
    found = rec.recommend(ids, k=k, repeatable=repeatable)
    return {cid: [ProductChoice(product_id=str(p["product_id"]), score=float(p["score"]),
                                reason=str(p["reason"])) for p in items]
            for cid, items in found.items()}


def _decide(served: Served, cat: Catalogue | None, req: RecommendRequest, cid: str,
            row: dict | None, sent: list[tuple[str, dt.datetime]], now: dt.datetime
            ) -> Recommendation:
    if row is None:
        return Recommendation(customer_id=cid, status="unknown_customer",
                              reason="no purchase history: popular products only")
    if cat is None:
        return Recommendation(customer_id=cid, status="no_offer",
                              reason="the service runs without an offer catalogue")
    campaign = req.campaign_id or DEFAULT_CAMPAIGN
    if in_control(campaign, cid, cat.control_share):
        return Recommendation(customer_id=cid, status="control", arm="control",
                              reason=f"held out as control for campaign {campaign} "
                                     f"({cat.control_share:.0%} of customers)")
    policy = cat.contact_policy
    window = now - dt.timedelta(days=policy.window_days)
    recent = [at for _, at in sent if at >= window]
    if len(recent) >= policy.max_contacts:
        return Recommendation(customer_id=cid, status="contact_capped", arm="treatment",
                              reason=f"already contacted {len(recent)} times in the last "
                                     f"{policy.window_days} days (cap {policy.max_contacts})")
    consent = served.consent.loc[cid] if cid in served.consent.index else None
    allowed = {ch for ch in CHANNELS
               if consent is not None and bool(consent.get(ch, False))}
    if req.channel is not None:
        allowed &= {req.channel}
    if not allowed:
        which = f" on {req.channel}" if req.channel else " on any channel"
        return Recommendation(customer_id=cid, status="no_consent", arm="treatment",
                              reason=f"no consent to contact{which}")
    last_contact = max((at for _, at in sent), default=None)
    choices = []
    for offer in cat.offers:
        why_not = _ineligible(offer, row, sent, last_contact, now)
        if why_not:
            continue
        channels = [c for c in offer.channels if c in allowed]
        if not channels:
            continue
        channel = min(channels, key=lambda c: offer.cost.per_contact.get(c, 0.0))
        p_with = offer.prior.response_with_contact
        p_without = offer.prior.response_without_contact
        source = "prior"
        if offer.id in served.uplift_offers and served.uplift_outcome != "revenue":
            effect = float(row[f"uplift_{offer.id}"])
            p_with = float(min(max(p_without + effect, 0.0), 1.0))
            source = "uplift"
        order_value = float(row.get("avg_order_value") or 0.0)
        clv = float(row["clv"]) if math.isfinite(float(row["clv"])) else 0.0
        inc, cost, net = offer_value(offer, channel, clv, order_value, p_with, p_without,
                                     margin_rate=_margin_rate(row))
        if net <= 0:
            continue
        choices.append(OfferChoice(
            offer_id=offer.id, kind=offer.kind, channel=channel,
            expected_incremental_value=round(inc, 4), expected_cost=round(cost, 4),
            net_value=round(net, 4), p_response_with_contact=p_with,
            p_response_without_contact=p_without, source=source,
            reason=(f"{row['risk_band']} churn risk ({float(row['churn_probability']):.0%}), "
                    f"{offer.value_basis} {clv if offer.value_basis == 'clv' else order_value:,.0f}"
                    f": {p_with - p_without:+.1%} response ({source}) x value - cost {cost:,.2f}")))
    choices.sort(key=lambda c: (-c.net_value, c.offer_id))
    if not choices:
        return Recommendation(customer_id=cid, status="no_offer", arm="treatment",
                              reason="no eligible offer is worth more than it costs")
    return Recommendation(customer_id=cid, status="ok", arm="treatment", offers=choices,
                          reason=f"best: {choices[0].offer_id} on {choices[0].channel}")


def _margin_rate(row: dict) -> float:
    """The share of an order's revenue the customer's orders keep (1 on the revenue basis)."""
    rate = row.get("margin_rate")
    if row.get("value_basis") != MARGIN or rate is None or not math.isfinite(float(rate)):
        return 1.0
    return float(rate)


def _ineligible(offer, row: dict, sent: list[tuple[str, dt.datetime]],
                last_contact: dt.datetime | None, now: dt.datetime) -> str:
    e = offer.eligibility
    if e.risk_bands and row["risk_band"] not in e.risk_bands:
        return "risk band"
    if e.value_tiers and row.get("value_tier") not in e.value_tiers:
        return "value tier"
    if e.segments and row.get("rfm_segment") not in e.segments:
        return "segment"
    days_since = row.get("days_since_last")
    if (e.min_days_since_last_purchase is not None and days_since is not None
            and float(days_since) < e.min_days_since_last_purchase):
        return "recent purchase"
    if (e.min_days_since_contact and last_contact is not None
            and (now - last_contact).days < e.min_days_since_contact):
        return "recent contact"
    if offer.cooldown_days and any(o == offer.id and (now - at).days < offer.cooldown_days
                                   for o, at in sent):
        return "cool-down"
    return ""
