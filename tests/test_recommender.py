"""Item-to-item recommender: hand-checkable neighbours, exclusions, fallback, time, evaluation."""

from __future__ import annotations

import io
import math

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from features.synthetic import NON_PRODUCT, SyntheticConfig, generate
from training.models import recommender
from training.models.recommender import (
    ItemRecommender,
    PopularityRecommender,
    evaluate_recommender,
    hit_rate_at_k,
    new_purchases,
    purchase_lines,
    recall_at_k,
)

AS_OF = pd.Timestamp("2024-01-01")
# Plain cosine, no shrinkage, no recency or popularity terms: every score is checkable by hand.
PLAIN = {"alpha": 0.5, "shrinkage": 0.0, "min_support": 1, "recency_half_life_days": None,
         "popularity_weight": 0.0}


def _tx(rows: list[tuple[str, str, str, int]]) -> pd.DataFrame:
    """(customer, order, product, days before AS_OF) -> canonical transaction lines."""
    return pd.DataFrame({
        "customer_id": pd.Series([r[0] for r in rows], dtype="string"),
        "order_id": pd.Series([r[1] for r in rows], dtype="string"),
        "timestamp": pd.Series([AS_OF - pd.Timedelta(days=r[3]) for r in rows],
                               dtype="datetime64[us]"),
        "product_id": pd.Series([r[2] for r in rows], dtype="string"),
        "quantity": [1.0] * len(rows),
        "amount": [10.0] * len(rows),
        "is_return": [False] * len(rows),
    })


# n(p1) = 3, n(p2) = 2, n(p3) = n(p4) = 1 in the last 90 days; p5: 2 customers, 200 days ago.
# Co-occurrence: c(p1, p2) = 2 (A, B), c(p1, p3) = 1 (C); nothing else.
SMALL = [
    ("A", "o1", "p1", 10), ("A", "o1", "p2", 10),
    ("B", "o2", "p1", 20), ("B", "o3", "p2", 5),
    ("C", "o4", "p1", 30), ("C", "o4", "p3", 30),
    ("D", "o5", "p4", 40),
    ("F", "o6", "p5", 200), ("G", "o7", "p5", 200),
]
COS_12 = 2 / math.sqrt(3 * 2)
COS_13 = 1 / math.sqrt(3 * 1)


def _ids(recs: list[dict]) -> list[str]:
    return [r["product_id"] for r in recs]


def test_neighbours_are_the_cosine_of_co_purchase_counts() -> None:
    m = ItemRecommender(**PLAIN).fit(_tx(SMALL), AS_OF)
    nb = m.neighbors_.set_index(["product_id", "neighbor_id"])
    assert sorted(nb.index) == [("p1", "p2"), ("p1", "p3"), ("p2", "p1"), ("p3", "p1")]
    assert nb.loc[("p1", "p2"), "score"] == pytest.approx(COS_12)
    assert nb.loc[("p1", "p3"), "score"] == pytest.approx(COS_13)
    assert nb.loc[("p1", "p2"), "support"] == 2 and nb.loc[("p1", "p3"), "support"] == 1
    assert list(m.neighbors_.query("product_id == 'p1'")["neighbor_id"]) == ["p2", "p3"]
    assert list(m.neighbors_.query("product_id == 'p1'")["rank"]) == [1, 2]


def test_min_support_shrinkage_alpha_and_n_neighbors() -> None:
    tx = _tx(SMALL)
    m = ItemRecommender(**{**PLAIN, "min_support": 2}).fit(tx, AS_OF)
    assert set(zip(m.neighbors_.product_id, m.neighbors_.neighbor_id, strict=True)) == {
        ("p1", "p2"), ("p2", "p1")}
    m = ItemRecommender(**{**PLAIN, "shrinkage": 2.0}).fit(tx, AS_OF)
    nb = m.neighbors_.set_index(["product_id", "neighbor_id"])["score"]
    assert nb[("p1", "p2")] == pytest.approx(COS_12 * 2 / 4)
    assert nb[("p1", "p3")] == pytest.approx(COS_13 * 1 / 3)
    # alpha = 0: c_ij / n_j = 2/2 and 1/1, a tie broken by product id.
    m = ItemRecommender(**{**PLAIN, "alpha": 0.0}).fit(tx, AS_OF)
    top = m.neighbors_.query("product_id == 'p1'")
    assert list(top["neighbor_id"]) == ["p2", "p3"] and list(top["score"]) == [1.0, 1.0]
    m = ItemRecommender(**{**PLAIN, "alpha": 0.0, "n_neighbors": 1}).fit(tx, AS_OF)
    assert list(m.neighbors_.query("product_id == 'p1'")["neighbor_id"]) == ["p2"]


def test_recommend_co_purchases_then_popularity_fill() -> None:
    m = ItemRecommender(**PLAIN).fit(_tx(SMALL), AS_OF)
    recs = m.recommend(["C"], k=3)["C"]
    # C bought p1 and p3: p1's neighbour p2 first, then the most popular items not bought.
    assert _ids(recs) == ["p2", "p4", "p5"]
    assert recs[0]["reason"] == "bought with p1 by 2 customers"
    assert recs[0]["score"] == pytest.approx(1.0)  # the customer's best co-purchase score
    assert recs[1]["reason"] == "popular in the last 90 days (1 customer)"
    assert recs[2]["reason"] == "popular overall (2 customers)"
    hist = m.recommend_history(["p1"], k=2)
    assert _ids(hist) == ["p2", "p3"]
    assert [r["reason"] for r in hist] == ["bought with p1 by 2 customers",
                                          "bought with p1 by 1 customer"]
    assert hist[1]["score"] == pytest.approx(COS_13 / COS_12)


def test_bought_items_excluded_unless_repeatable() -> None:
    m = ItemRecommender(**PLAIN).fit(_tx(SMALL), AS_OF)
    assert m.items_bought("A") == ["p1", "p2"]
    assert _ids(m.recommend(["A"], k=5)["A"]) == ["p3", "p4", "p5"]
    again = m.recommend(["A"], k=3, repeatable={"p1"})["A"]
    assert _ids(again) == ["p1", "p3", "p4"]
    # p1 (from p2) and p2 (from p1) tie at the cosine 2/sqrt(6): product id breaks the tie.
    both = m.recommend(["A"], k=3, repeatable={"p1", "p2"})["A"]
    assert _ids(both) == ["p1", "p2", "p3"] and both[0]["score"] == both[1]["score"]
    assert _ids(m.recommend(["A"], k=3, exclude_bought=False)["A"]) == ["p1", "p2", "p3"]
    assert _ids(m.recommend_history(["p1", "p2"], k=2)) == ["p3", "p4"]


def test_unknown_customer_gets_popularity_with_its_reason() -> None:
    tx = _tx(SMALL)
    m = ItemRecommender(**PLAIN).fit(tx, AS_OF)
    recs = m.recommend(["nobody"], k=10)["nobody"]
    assert _ids(recs) == ["p1", "p2", "p3", "p4", "p5"]  # p3/p4 tie at 1 customer: by id
    assert list(m.popularity_) == _ids(recs)
    assert list(m.popularity_counts_) == [3, 2, 1, 1, 0]
    assert recs[0] == {"product_id": "p1", "score": 1.0,
                       "reason": "popular in the last 90 days (3 customers)"}
    assert recs[-1]["reason"] == "popular overall (2 customers)"
    pop = PopularityRecommender().fit(tx, AS_OF)
    assert pop.recommend(["nobody"], k=10) == {"nobody": recs}
    assert _ids(pop.recommend(["A"], k=2)["A"]) == ["p3", "p4"]
    assert all("popular" in r["reason"] for r in pop.recommend(["A"], k=3)["A"])


def test_k_is_respected_and_ids_answered_once() -> None:
    m = ItemRecommender(**PLAIN).fit(_tx(SMALL), AS_OF)
    out = m.recommend(["A", "nobody", "A"], k=2)
    assert list(out) == ["A", "nobody"]
    assert all(len(v) == 2 for v in out.values())
    assert m.recommend(["C"], k=0) == {"C": []}
    full = m.recommend(["C"], k=100)["C"]
    assert sorted(_ids(full)) == ["p2", "p4", "p5"]  # every product not bought, once
    with pytest.raises(ValueError):
        m.recommend(["C"], k=-1)


def test_as_of_excludes_later_rows_and_returns() -> None:
    later = [("A", "o8", "p4", 0), ("H", "o9", "p1", -3), ("H", "o9", "p9", -3),
             ("B", "o10", "p4", -1)]
    tx = _tx(SMALL + later)  # days 0 and below are at or after AS_OF
    ret = _tx([("C", "r1", "p2", 1)]).assign(quantity=-1.0, amount=-10.0, is_return=True)
    tx = pd.concat([tx, ret], ignore_index=True)
    m = ItemRecommender(**PLAIN).fit(tx, AS_OF)
    ref = ItemRecommender(**PLAIN).fit(_tx(SMALL), AS_OF)
    assert "p9" not in m.items_ and "H" not in m.customers_
    assert m.items_bought("A") == ["p1", "p2"] and m.items_bought("C") == ["p1", "p3"]
    pd.testing.assert_frame_equal(m.neighbors_, ref.neighbors_)
    assert list(m.popularity_) == list(ref.popularity_)
    ids = ["A", "B", "C", "D", "nobody"]
    assert m.recommend(ids, k=4) == ref.recommend(ids, k=4)
    assert "p9" in ItemRecommender(**PLAIN).fit(tx).items_  # no as_of: every line


def test_recency_weighting_prefers_recent_purchases() -> None:
    # q1 ~ q3 and q2 ~ q4 equally (each pair bought by two other customers).
    rows = [("X", "x1", "q1", 200), ("X", "x2", "q2", 1)]
    rows += [(c, f"{c}o", p, 50) for c in ("K", "L") for p in ("q1", "q3")]
    rows += [(c, f"{c}o", p, 50) for c in ("M", "N") for p in ("q2", "q4")]
    tx = _tx(rows)
    flat = ItemRecommender(**PLAIN).fit(tx, AS_OF).recommend(["X"], k=2)["X"]
    assert _ids(flat) == ["q3", "q4"] and flat[0]["score"] == flat[1]["score"]
    recent = ItemRecommender(**{**PLAIN, "recency_half_life_days": 30}).fit(tx, AS_OF)
    assert _ids(recent.recommend(["X"], k=2)["X"]) == ["q4", "q3"]
    assert _ids(recent.recommend_history(["q1", "q2"], k=2, days_ago=[1, 200])) == ["q3", "q4"]


def test_order_context_counts_baskets() -> None:
    m = ItemRecommender(**{**PLAIN, "context": "order"}).fit(_tx(SMALL), AS_OF)
    # B bought p1 and p2 in different orders: only A's and C's baskets co-occur.
    assert set(zip(m.neighbors_.product_id, m.neighbors_.neighbor_id, strict=True)) == {
        ("p1", "p2"), ("p2", "p1"), ("p1", "p3"), ("p3", "p1")}
    assert m.neighbors_.set_index(["product_id", "neighbor_id"]).loc[("p1", "p2"), "support"] == 1
    assert m.recommend_history(["p1"], k=1)[0]["reason"] == "bought with p1 by 1 order"


def test_deterministic_and_survives_pickle_and_clone() -> None:
    tx = _tx(SMALL)
    m = ItemRecommender(**PLAIN).fit(tx, AS_OF)
    shuffled = ItemRecommender(**PLAIN).fit(tx.sample(frac=1.0, random_state=3), AS_OF)
    ids = ["A", "B", "C", "D", "F", "nobody"]
    assert m.recommend(ids, k=5) == shuffled.recommend(ids, k=5)
    buf = io.BytesIO()
    joblib.dump(m, buf)
    buf.seek(0)
    assert joblib.load(buf).recommend(ids, k=5) == m.recommend(ids, k=5)
    assert clone(m).get_params() == m.get_params()


def test_exclude_items_and_purchase_lines() -> None:
    tx = _tx(SMALL + [("A", "o1", "POST", 10), ("D", "o5", "POST", 40)])
    m = ItemRecommender(**PLAIN, exclude_items=["POST"]).fit(tx, AS_OF)
    assert "POST" not in m.items_
    assert "POST" not in _ids(m.recommend(["nobody"], k=20)["nobody"])
    assert "POST" in ItemRecommender(**PLAIN).fit(tx, AS_OF).items_
    assert len(purchase_lines(tx, AS_OF, ["POST"])) == len(SMALL)


def test_new_purchases_recall_and_hit_rate_by_hand() -> None:
    after = [("A", "o8", "p3", -1), ("A", "o8", "p1", -1), ("B", "o9", "p2", -2),
             ("E", "o10", "p4", -5), ("E", "o11", "p5", -95)]
    actual = new_purchases(_tx(SMALL + after), AS_OF, horizon_days=90)
    # A: p3 is new, p1 a repeat; B: only a repeat; E: p4 within 90 days, p5 after.
    assert actual == {"A": {"p3"}, "E": {"p4"}}
    recs = {"a": ["x", "y", "z"], "b": ["x"]}
    truth = {"a": {"y", "w"}, "b": {"q"}, "c": set(), "d": {"x"}}
    # a: 1 hit / min(2, 2); b: 0 / 1; c: skipped (nothing relevant); d: no list, 0 / 1.
    assert recall_at_k(recs, truth, k=2) == pytest.approx(0.5 / 3)
    assert recall_at_k(recs, truth, k=3) == pytest.approx(0.5 / 3)
    assert recall_at_k({"a": ["y", "w"]}, {"a": {"y", "w", "v"}}, k=2) == 1.0
    assert hit_rate_at_k(recs, truth, k=2) == pytest.approx(1 / 3)
    assert hit_rate_at_k(recs, truth, k=1) == 0.0
    assert math.isnan(recall_at_k(recs, {"c": set()}, k=2))
    m = ItemRecommender(**PLAIN).fit(_tx(SMALL), AS_OF)
    scores = evaluate_recommender(m, actual, k=1)
    # A's first recommendation is p3 (bought with p1); E is unknown and gets p1: a miss.
    assert scores == {"recall@1": 0.5, "hit_rate@1": 0.5, "customers": 2.0}


def test_item_to_item_beats_popularity_out_of_time_on_synthetic_baskets() -> None:
    """Synthetic customers prefer a product category: co-purchases find it, popularity not."""
    data = generate(SyntheticConfig(n_customers=5000, seed=0, dirty_fraction=0.01))
    tx = data.transactions
    as_of, exclude = pd.Timestamp("2023-10-01"), [NON_PRODUCT]
    assert (tx["product_id"] == NON_PRODUCT).any()
    model = ItemRecommender(exclude_items=exclude).fit(tx, as_of)
    base = PopularityRecommender(exclude_items=exclude).fit(tx, as_of)
    assert NON_PRODUCT not in model.items_ and tx["timestamp"].max() >= as_of
    actual = new_purchases(tx, as_of, 90, exclude)
    known = {c: v for c, v in actual.items() if c in model.customers_}
    assert len(known) > 500
    ours, pop = evaluate_recommender(model, known), evaluate_recommender(base, known)
    assert ours["recall@10"] >= 1.1 * pop["recall@10"], (ours, pop)
    assert ours["hit_rate@10"] > pop["hit_rate@10"]


def _random_lines(n_customers: int, n_items: int, seed: int) -> pd.DataFrame:
    """Customers buying a few of `n_items` products (skewed), dates spread over a year."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 8, n_customers)
    cust = np.repeat(np.arange(n_customers), sizes)
    item = np.minimum(rng.zipf(1.3, len(cust)) - 1, n_items - 1)
    days = rng.integers(1, 365, len(cust))
    return _tx([(f"c{c:04d}", f"o{c}-{d}", f"p{i:03d}", int(d))
                for c, i, d in zip(cust, item, days, strict=True)])


def _dense_neighbours(m: ItemRecommender, tx: pd.DataFrame) -> pd.DataFrame:
    """The neighbour table by brute force: dense co-occurrence, full stable sort per row."""
    lines = purchase_lines(tx, AS_OF).drop_duplicates(["customer_id", "product_id"])
    x = pd.crosstab(lines["customer_id"], lines["product_id"]).reindex(
        columns=m.items_, fill_value=0).to_numpy(dtype=float)
    c = x.T @ x
    n = np.diag(c).copy()
    np.fill_diagonal(c, 0.0)
    c[c < max(m.min_support, 1)] = 0.0
    s = c / (n[:, None] ** m.alpha * n[None, :] ** (1 - m.alpha))
    if m.shrinkage > 0:
        s = s * (c / (c + m.shrinkage))
    rows = []
    for i in range(len(n)):
        top = [j for j in np.argsort(-s[i], kind="stable")[: m.n_neighbors] if s[i, j] > 0]
        rows += [(m.items_[i], m.items_[j], r + 1, s[i, j], int(c[i, j]))
                 for r, j in enumerate(top)]
    return pd.DataFrame(rows, columns=["product_id", "neighbor_id", "rank", "score", "support"])


@pytest.mark.parametrize("params", [
    {}, PLAIN, {"min_support": 3, "n_neighbors": 5}, {"alpha": 0.0, "shrinkage": 1.0},
    {"n_neighbors": 1, "min_support": 1},
])
@pytest.mark.parametrize("budget", [None, 40])
def test_sparse_neighbours_equal_the_dense_brute_force(params, budget, monkeypatch) -> None:
    """Top-k pruning on sparse co-occurrence, in one block or many small ones, keeps exactly
    the neighbours, ranks (ties: lower product id), scores and supports of a dense search."""
    if budget is not None:
        monkeypatch.setattr(recommender, "_BLOCK_PAIRS", budget)
    tx = _random_lines(300, 60, seed=4)
    m = ItemRecommender(**params).fit(tx, AS_OF)
    want = _dense_neighbours(m, tx)
    got = m.neighbors_
    assert len(got) > 0
    pd.testing.assert_frame_equal(got[["product_id", "neighbor_id", "rank", "support"]],
                                  want[["product_id", "neighbor_id", "rank", "support"]],
                                  check_dtype=False)
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-12)


def test_blocks_stay_within_the_pair_budget() -> None:
    assert recommender._blocks(np.array([3, 3, 10, 1, 1, 1]), 6) == [(0, 2), (2, 3), (3, 6)]
    assert recommender._blocks(np.array([5, 5]), 100) == [(0, 2)]
    assert recommender._blocks(np.array([], dtype=int), 10) == []


def test_recommendations_equal_a_dense_scoring_of_the_documented_rule() -> None:
    """Sum of recency-weighted neighbour similarities, over the customer's best, plus
    popularity; bought items left out; ties by product id; popularity fills the rest."""
    tx = _random_lines(200, 40, seed=7)
    m = ItemRecommender(n_neighbors=5).fit(tx, AS_OF)
    sim = m.similarity_.toarray()
    items = list(m.items_)
    pop = m._pop_score_
    ids = list(m.customers_[:80])
    got = m.recommend(ids, k=6)
    for cid in ids:
        row = m.history_[m.customers_.get_loc(cid)]
        w = np.zeros(len(items))
        w[row.indices] = 0.5 ** (row.data / m.recency_half_life_days)
        s = w @ sim
        s = np.where(s > 0, s / s.max() + m.popularity_weight * pop, 0.0) if s.max() > 0 else s
        s[row.indices] = 0.0
        ranked = [j for j in sorted(range(len(items)), key=lambda j: (-s[j], j)) if s[j] > 0][:6]
        fill = [j for j in m._pop_order_ if j not in set(row.indices) | set(ranked)]
        want = [items[j] for j in ranked + fill[: 6 - len(ranked)]]
        assert _ids(got[cid]) == want, cid
        assert [r["score"] for r in got[cid][:len(ranked)]] == pytest.approx(
            [s[j] for j in ranked], abs=1e-6)  # scores are rounded to 6 decimals
