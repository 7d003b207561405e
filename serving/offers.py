"""The offer catalogue (YAML, validated at start) and the per-customer offer decision.

Each offer's value for a customer is its expected incremental value minus its expected cost:
(P(response | contact) - P(response | no contact)) x the value a response brings - cost.
The response probabilities are the catalogue's priors until an uplift model covers the offer.
Eligibility, consent per channel, contact caps and cool-downs are applied first; a stable,
configurable share of each campaign's customers is held out as `control`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.contract import Channel
from features.errors import DataError, Location, config_error


class Cost(BaseModel):
    """Cost of one offer: per contact sent, plus a discount paid only when the customer responds."""

    model_config = ConfigDict(extra="forbid")
    per_contact: dict[Channel, float] = Field(default_factory=dict)
    discount_share: float = Field(0.0, ge=0, le=1, description="share of the order value given "
                                                               "back when redeemed")
    fixed_on_response: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _non_negative(self) -> Cost:
        for channel, value in self.per_contact.items():
            if value < 0:
                raise ValueError(f"per_contact.{channel} must be >= 0")
        return self


class Eligibility(BaseModel):
    model_config = ConfigDict(extra="forbid")
    risk_bands: list[Literal["low", "medium", "high"]] | None = None
    value_tiers: list[str] | None = None
    segments: list[str] | None = None
    min_days_since_last_purchase: int | None = Field(None, ge=0)
    min_days_since_contact: int = Field(0, ge=0)


class Prior(BaseModel):
    """Expected response with and without contact, before an uplift model replaces them."""

    model_config = ConfigDict(extra="forbid")
    response_with_contact: float = Field(ge=0, le=1)
    response_without_contact: float = Field(ge=0, le=1)


class Offer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    kind: Literal["retention_discount", "win_back", "cross_sell", "loyalty_reward",
                  "reactivation", "other"]
    description: str = ""
    channels: list[Channel] = Field(min_length=1)
    value_basis: Literal["clv", "order"] = Field(
        "order", description="what a response is worth: the customer's CLV (retention offers) "
                             "or one average order (cross-sell)")
    value_share: float = Field(1.0, gt=0, le=1, description="share of the basis a response "
                                                            "brings")
    cost: Cost = Cost()
    eligibility: Eligibility = Eligibility()
    cooldown_days: int = Field(0, ge=0)
    prior: Prior


class ContactPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_contacts: int = Field(2, ge=0)
    window_days: int = Field(7, ge=1)


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1)
    control_share: float = Field(0.1, ge=0, lt=1)
    contact_policy: ContactPolicy = ContactPolicy()
    repeatable_products: list[str] = Field(default_factory=list)
    offers: list[Offer] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Catalogue:
        seen: set[str] = set()
        for offer in self.offers:
            if offer.id in seen:
                raise ValueError(f"offer {offer.id!r}: duplicate id")
            seen.add(offer.id)
        return self


def load_catalogue(path: Path) -> Catalogue:
    """Read and validate the catalogue; an error names the offer and the field."""
    if not Path(path).is_file():
        raise DataError(f"{path}: offer catalogue not found")
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        return Catalogue.model_validate(raw)
    except ValidationError as exc:

        def offer(loc: Location) -> str | None:
            """'offer <id>: <field>' for a field of one offer, by its id when it has one."""
            if len(loc) < 2 or loc[0] != "offers" or not isinstance(loc[1], int):
                return None
            item = (raw.get("offers") or [])[loc[1]]
            ident = item.get("id") if isinstance(item, dict) else None
            return f"offer {ident or '#' + str(loc[1] + 1)!s}: " + ".".join(map(str, loc[2:]))

        raise config_error(exc, path, locate=offer) from None


def in_control(campaign_id: str, customer_id: str, share: float) -> bool:
    """Stable hold-out: the same (campaign, customer) always lands in the same arm."""
    digest = hashlib.sha256(f"{campaign_id}\x1f{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def offer_value(offer: Offer, channel: str, clv: float, order_value: float,
                p_with: float, p_without: float, *, margin_rate: float = 1.0
                ) -> tuple[float, float, float]:
    """(expected incremental value, expected cost, net) of sending `offer` on `channel`.

    `clv` is counted as the answers count it (margin or revenue); an order is worth its
    `margin_rate` share of `order_value` (1: revenue), while a discount gives back revenue."""
    order_worth = order_value * margin_rate
    basis = (clv if offer.value_basis == "clv" else order_worth) * offer.value_share
    incremental = (p_with - p_without) * basis
    cost = (offer.cost.per_contact.get(channel, 0.0)  # type: ignore[call-overload]
            + p_with * (offer.cost.discount_share * order_value + offer.cost.fixed_on_response))
    return incremental, cost, incremental - cost


def contact_cost(catalogue: Catalogue, offer_id: str, channel: str) -> float:
    """What one contact of `offer_id` on `channel` cost, by the catalogue: the channel's
    `per_contact`, or the offer's cheapest channel when the log did not say which; 0 for an
    offer the catalogue no longer has."""
    offer = next((o for o in catalogue.offers if o.id == offer_id), None)
    if offer is None:
        return 0.0
    per_contact = offer.cost.per_contact
    if channel in per_contact:
        return float(per_contact[channel])  # type: ignore[index]
    return min((float(per_contact.get(c, 0.0)) for c in offer.channels),  # type: ignore[call-overload]
               default=0.0)


def cost_to_serve(sent: pd.DataFrame, catalogue: Catalogue) -> pd.Series:
    """Per customer, the contact cost of the `sent` events given (`CampaignLog.sent` over a
    window before as_of): each contact at its catalogue cost (`contact_cost`)."""
    if sent.empty:
        return pd.Series(dtype="float64", name="cost_to_serve")
    pairs = sent[["offer_id", "channel"]].astype(str).drop_duplicates()
    price = {(o, c): contact_cost(catalogue, o, c) for o, c in pairs.itertuples(index=False)}
    costs = [price[(str(o), str(c))] for o, c in zip(sent["offer_id"], sent["channel"],
                                                     strict=True)]
    frame = pd.DataFrame({"customer_id": sent["customer_id"].astype(str), "cost": costs})
    return frame.groupby("customer_id")["cost"].sum().rename("cost_to_serve")
