"""The README's Python API examples run as written (on the synthetic retailer)."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np

from features.synthetic import SyntheticConfig, generate
from tests.conftest import ROOT


def api_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_shows_btyd_features_and_scoring():
    blocks = api_blocks()
    assert len(blocks) == 3
    assert "BetaGeoModel" in blocks[0] and "feature_frames" in blocks[1]
    assert "load_champion" in blocks[2]


def test_features_then_btyd_examples_run():
    raw = generate(SyntheticConfig(n_customers=400, seed=1)).transactions.rename(columns={
        "customer_id": "customer", "order_id": "invoice", "timestamp": "ts",
        "product_id": "sku", "quantity": "qty", "price": "unit_price"})
    features_block, btyd_block = api_blocks()[1], api_blocks()[0]
    space: dict[str, object] = {"raw": raw}
    exec(features_block, space)  # noqa: S102 - the README's own example
    rows = space["rows"]
    assert len(rows) > 100 and (rows["as_of"] == dt.date(2024, 1, 1)).all()
    assert sum(space["result"].counts.values()) + len(space["result"].accepted) == len(raw)
    space = {"summary": rows}
    exec(btyd_block, space)  # noqa: S102 - the README's own example
    assert set(space["bg"].params_) == {"r", "alpha", "a", "b"}
    assert np.isfinite(list(space["gg"].params_.values())).all()
