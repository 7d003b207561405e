"""Canonical table names and column types: the data contract of DESIGN.md.

Every source is mapped onto these names by a source config; everything downstream
(features, labels, models, serving) reads only these columns.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import pandas as pd

TableKind = Literal["transactions", "customers", "campaign_log"]

# name -> pandas dtype of the canonical (validated) table. Timestamps are naive UTC.
TRANSACTIONS: dict[str, str] = {
    "customer_id": "string",
    "order_id": "string",
    "timestamp": "datetime64[us]",
    "product_id": "string",
    "quantity": "float64",
    "amount": "float64",
    "is_return": "bool",
}
TRANSACTIONS_OPTIONAL: dict[str, str] = {
    "cost": "float64",
    "channel": "string",
    "store_id": "string",
    "category": "string",
}
# `cost` is the line's cost of goods, signed like `amount` (a return's is negative: the goods
# come back). A source without it has no cost; features then value customers by revenue.
COST = "cost"
# What a customer's value is counted in: margin when every line before as_of has a cost.
ValueBasis = Literal["margin", "revenue"]
MARGIN, REVENUE = get_args(ValueBasis)
# Feature columns about profit (features.pointintime); not inputs of the trained models.
PROFIT_COLUMNS: tuple[str, ...] = ("gross_margin", "margin_rate", "returns_cost", "margin_365d",
                                   "value_basis")
# The columns the feature expressions read: the required lines, plus their cost when known.
FEATURE_INPUT: tuple[str, ...] = (*TRANSACTIONS, COST)

CUSTOMERS: dict[str, str] = {
    "customer_id": "string",
    "signup_at": "datetime64[us]",
}
# The channels an offer can go out on. Consent columns are `consent_<channel>`; unknown
# consent means no consent.
Channel = Literal["email", "sms", "push", "direct_mail"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)
CONSENT_PREFIX = "consent_"

CAMPAIGN_LOG: dict[str, str] = {
    "customer_id": "string",
    "campaign_id": "string",
    "offer_id": "string",
    "sent_at": "datetime64[us]",
    "arm": "string",
    "visit": "float64",
    "converted": "float64",
    "revenue": "float64",
}
ARMS: tuple[str, ...] = ("treatment", "control")

REQUIRED: dict[str, tuple[str, ...]] = {
    "transactions": ("customer_id", "timestamp", "amount"),
    "customers": ("customer_id",),
    "campaign_log": ("customer_id", "campaign_id", "arm"),
}

SCHEMAS: dict[str, dict[str, str]] = {
    "transactions": {**TRANSACTIONS, **TRANSACTIONS_OPTIONAL},
    "customers": CUSTOMERS,
    "campaign_log": CAMPAIGN_LOG,
}


def feature_input(transactions: pd.DataFrame) -> pd.DataFrame:
    """The columns of FEATURE_INPUT from canonical transactions, `cost` null when unknown."""
    frame = transactions[[c for c in FEATURE_INPUT if c in transactions.columns]]
    if COST not in frame.columns:
        frame = frame.assign(**{COST: np.full(len(frame), np.nan)})
    return frame.astype({COST: "float64"})
