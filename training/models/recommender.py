"""Product recommendations: item-to-item co-purchase neighbours with a popularity fallback.

`ItemRecommender` learns, from canonical transaction lines before `as_of`, which products are
bought by the same customers (or in the same orders): co-occurrence counts from a sparse
customer x item matrix, turned into a shrunk asymmetric cosine

    sim(i, j) = c_ij / (n_i ** alpha * n_j ** (1 - alpha)) * c_ij / (c_ij + shrinkage)

(c_ij = customers who bought both, n_i = customers who bought i; alpha = 0.5 is the cosine,
lower alpha damps popular candidates j), keeping pairs with c_ij >= `min_support` and the top
`n_neighbors` j per item. Co-occurrences are summed sparsely (X.T @ X) in blocks of items sized
by the pairs they sum and pruned to the kept neighbours block by block, so a fit's memory is
bounded by the block size and the model by items x `n_neighbors`, whatever the catalogue.

A customer's candidates are scored by the sum of their similarities to the items the customer
bought, each item's weight halved every `recency_half_life_days` since
its last purchase; that sum, divided by the customer's best, plus `popularity_weight` times the
candidate's popularity (customers in the window / the most popular product's), ranks the
co-purchase candidates. Each names the bought item that contributed most ("bought with X by 41
customers"). Customers without history, and lists shorter than k, are filled from the products
bought by the most customers in the last `popularity_window_days`. `PopularityRecommender` is
that fallback alone, the baseline the co-purchase model is graded against.

The defaults were chosen on Online Retail II at as_of 2011-06-12 (90 days of new purchases),
before the 2011-09-10 test cutoff (`bench/bench_recommender.py`).

Evaluation (`new_purchases`, `recall_at_k`, `recall_per_customer`, `hit_rate_at_k`,
`evaluate_recommender`) is out of time: fit on lines before as_of, score against the *new*
products (never bought before as_of) each customer buys in the following horizon.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

Recommendation = dict[str, object]
Explain = Callable[[int, np.ndarray, np.ndarray], list[str]]
AsOf = dt.date | dt.datetime | pd.Timestamp | str | None

_DAY = pd.Timedelta(days=1)
# Co-occurrence pairs (with repeats, before summing) computed per block of items: bounds the
# memory of a fit (about 100 bytes a pair at most) whatever the size of the catalogue.
_BLOCK_PAIRS = 4_000_000
_BATCH = 256  # customers scored per sparse product in `recommend`


def _n(count: int, unit: str) -> str:
    return f"{count} {unit}" + ("" if count == 1 else "s")


def _blocks(work: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) ranges of items whose summed `work` stays within `budget`
    (an item above it alone gets its own block)."""
    cum = np.concatenate([[0], np.cumsum(work, dtype=np.int64)])
    out, start = [], 0
    while start < len(work):
        stop = int(np.searchsorted(cum, cum[start] + budget, side="right")) - 1
        stop = min(max(stop, start + 1), len(work))
        out.append((start, stop))
        start = stop
    return out


def purchase_lines(
    transactions: pd.DataFrame, as_of: AsOf = None, exclude_items: Iterable[str] = ()
) -> pd.DataFrame:
    """Sale lines (no returns) before `as_of` as customer_id, order_id, timestamp, product_id.

    Returns are lines with `is_return` or a negative `quantity` when those columns exist; lines
    without a customer or product id and the products in `exclude_items` are dropped.
    """
    cols = [c for c in ("customer_id", "order_id", "timestamp", "product_id")
            if c in transactions]
    keep = transactions["customer_id"].notna() & transactions["product_id"].notna()
    if "is_return" in transactions:
        keep &= ~transactions["is_return"].fillna(False).astype(bool)
    if "quantity" in transactions:
        keep &= ~(transactions["quantity"] < 0).fillna(False).astype(bool)
    if as_of is not None:
        keep &= transactions["timestamp"] < pd.Timestamp(as_of)
    excluded = list(exclude_items)
    if excluded:
        keep &= ~transactions["product_id"].isin(excluded)
    out = transactions.loc[keep.to_numpy(dtype=bool), cols]
    return out.astype({"customer_id": "str", "product_id": "str"}).reset_index(drop=True)


class PopularityRecommender(BaseEstimator):
    """The products bought by the most customers in the last `popularity_window_days` before
    as_of, minus what the customer already bought: the baseline, and the co-purchase model's
    fallback.

    Learned: `items_` (product ids, sorted), `customers_` (customer ids, sorted), `history_`
    (CSR customers x items: days from the customer's last purchase of the item to as_of),
    `popularity_` (product ids, most popular first: customers in the window, then customers
    ever, then product id), `popularity_counts_` (customers in the window, same order),
    `n_window_customers_` (customers who bought in the window), `as_of_` (the reference time:
    as_of, or one second after the last line when none is given).
    """

    def __init__(
        self, *, popularity_window_days: int = 90, exclude_items: Sequence[str] = ()
    ) -> None:
        self.popularity_window_days = popularity_window_days
        self.exclude_items = exclude_items

    # ------------------------------------------------------------------------------ fitting

    def fit(self, transactions: pd.DataFrame, as_of: AsOf = None) -> PopularityRecommender:
        """Learn histories and popularity from the sale lines before `as_of` (all when None)."""
        lines = purchase_lines(transactions, as_of, self.exclude_items)
        if lines.empty:
            raise ValueError("no purchase lines to fit on (before as_of, after exclusions)")
        self.as_of_ = (pd.Timestamp(as_of) if as_of is not None
                       else lines["timestamp"].max() + pd.Timedelta(seconds=1))
        cust_code, customers = pd.factorize(lines["customer_id"], sort=True)
        item_code, items = pd.factorize(lines["product_id"], sort=True)
        self.customers_ = pd.Index(np.asarray(customers, dtype=object), name="customer_id")
        self.items_ = pd.Index(np.asarray(items, dtype=object), name="product_id")
        n_cust, n_items = len(customers), len(items)

        age = ((self.as_of_ - lines["timestamp"]) / _DAY).to_numpy(dtype=np.float64)
        pair = cust_code.astype(np.int64) * n_items + item_code
        last = pd.Series(age).groupby(pair).min()  # sorted by (customer, item)
        keys = last.index.to_numpy()
        self.history_ = sp.csr_matrix(
            (last.to_numpy(), (keys // n_items, keys % n_items)), shape=(n_cust, n_items)
        )
        ever = np.bincount(keys % n_items, minlength=n_items)
        window = age <= self.popularity_window_days
        recent = np.unique(pair[window])
        in_window = np.bincount(recent % n_items, minlength=n_items)
        self.n_window_customers_ = int(len(np.unique(recent // n_items)))
        order = np.lexsort((np.arange(n_items), -ever, -in_window))
        self.popularity_ = self.items_.to_numpy()[order]
        self.popularity_counts_ = in_window[order]
        self._pop_order_ = order
        self._in_window_ = in_window
        self._pop_score_ = in_window / max(int(in_window.max()), 1)
        self._ever_ = ever
        self._fit_items(lines, cust_code, item_code)
        return self

    def _fit_items(self, lines: pd.DataFrame, cust_code: np.ndarray, item_code: np.ndarray) -> None:
        """Hook for models that learn more than popularity."""

    # --------------------------------------------------------------------------- predicting

    def recommend(
        self,
        customer_ids: Sequence[str],
        k: int = 10,
        repeatable: set[str] | None = None,
        exclude_bought: bool = True,
    ) -> dict[str, list[Recommendation]]:
        """Up to k products per customer id: `{"product_id", "score", "reason"}`, best first.

        Histories are those of the fit (lines before `as_of_`); `recommend_history` takes a
        fresher one. Products the customer bought are left out unless in `repeatable` (or when
        `exclude_bought` is False). Unknown customers get the popularity list. Duplicate ids
        are answered once. Output is JSON-ready (str, float, str).
        """
        check_is_fitted(self, "items_")
        ids = list(dict.fromkeys(str(c) for c in customer_ids))
        codes = self.customers_.get_indexer(ids)
        known = codes >= 0
        rows = sp.csr_matrix((len(ids), len(self.items_)))
        if known.any():
            sub = self.history_[codes[known]]
            pad = np.zeros(len(ids), dtype=np.int64)
            pad[known] = np.arange(int(known.sum()))
            rows = sp.vstack([sub, sp.csr_matrix((1, len(self.items_)))]).tocsr()
            rows = rows[np.where(known, pad, sub.shape[0])]
        out: dict[str, list[Recommendation]] = {}
        for start in range(0, len(ids), _BATCH):
            part = rows[start:start + _BATCH]
            lists = self._recommend_rows(part, k, repeatable, exclude_bought)
            out.update(zip(ids[start:start + _BATCH], lists, strict=True))
        return out

    def recommend_history(
        self,
        items: Sequence[str],
        k: int = 10,
        repeatable: set[str] | None = None,
        exclude_bought: bool = True,
        days_ago: Sequence[float] | None = None,
    ) -> list[Recommendation]:
        """Recommendations for a history or basket given directly (e.g. fresher than the fit).

        `days_ago` (same length as `items`) weights items by recency as in `recommend`; by
        default every item counts as bought now. Unknown products are ignored for scoring.
        """
        check_is_fitted(self, "items_")
        codes = self.items_.get_indexer([str(i) for i in items])
        ages = np.full(len(codes), 1e-9) if days_ago is None else np.asarray(days_ago, float)
        if len(ages) != len(codes):
            raise ValueError("days_ago must have one value per item")
        ok = codes >= 0
        age = pd.Series(np.maximum(ages[ok], 1e-9)).groupby(codes[ok]).min()
        row = sp.csr_matrix(
            (age.to_numpy(), (np.zeros(len(age), dtype=np.int64), age.index.to_numpy())),
            shape=(1, len(self.items_)),
        )
        return self._recommend_rows(row, k, repeatable, exclude_bought)[0]

    def items_bought(self, customer_id: str) -> list[str]:
        """The products a customer bought before as_of (sorted); empty when unknown."""
        check_is_fitted(self, "items_")
        code = self.customers_.get_indexer([str(customer_id)])[0]
        if code < 0:
            return []
        row = self.history_[code]
        return list(self.items_.to_numpy()[row.indices[np.argsort(row.indices)]])

    def _recommend_rows(
        self, rows: sp.csr_matrix, k: int, repeatable: set[str] | None, exclude_bought: bool
    ) -> list[list[Recommendation]]:
        """Top-k lists for rows of a customers x items matrix of days since last purchase."""
        if k < 0:
            raise ValueError("k must be >= 0")
        scores, explain = self._scores(rows)
        blockable = np.ones(len(self.items_), dtype=bool)  # left out once bought
        if repeatable:
            again = self.items_.get_indexer(list(repeatable))
            blockable[again[again >= 0]] = False
        items = self.items_.to_numpy()
        order = self._pop_order_
        result = []
        for r in range(rows.shape[0]):
            bought = rows.indices[rows.indptr[r]:rows.indptr[r + 1]]
            blocked = bought[blockable[bought]] if exclude_bought else bought[:0]
            chosen = np.zeros(0, dtype=np.int64)
            recs: list[Recommendation] = []
            if scores is not None and k:
                lo, hi = scores.indptr[r], scores.indptr[r + 1]
                cand, val = scores.indices[lo:hi], scores.data[lo:hi]
                ok = (val > 0) & ~np.isin(cand, blocked)
                cand, val = cand[ok], val[ok]
                if len(cand) > k:
                    kth = np.partition(val, len(cand) - k)[len(cand) - k]
                    cand, val = cand[val >= kth], val[val >= kth]
                best = np.lexsort((cand, -val))[:k]
                chosen, val = cand[best].astype(np.int64), val[best]
                if len(chosen):
                    recs = [{"product_id": items[j], "score": round(float(v), 6),
                             "reason": why}
                            for j, v, why in zip(chosen, val, explain(r, chosen, val),
                                                 strict=True)]
            if len(recs) < k:
                need = k - len(recs)
                skip = np.union1d(blocked, chosen)
                head = order[:need + len(skip)]  # enough to fill past every skipped item
                fill = head[~np.isin(head, skip)][:need]
                recs += [{"product_id": items[j], "score": round(float(self._pop_score_[j]), 6),
                          "reason": self._popular(int(j))} for j in fill]
            result.append(recs)
        return result

    def _popular(self, j: int) -> str:
        n = int(self._in_window_[j])
        if n:
            return f"popular in the last {self.popularity_window_days} days ({_n(n, 'customer')})"
        return f"popular overall ({_n(int(self._ever_[j]), 'customer')})"

    def _scores(self, rows: sp.csr_matrix) -> tuple[sp.csr_matrix | None, Explain | None]:
        """Co-purchase scores (sparse rows x items) and their reasons; None for popularity."""
        return None, None


class ItemRecommender(PopularityRecommender):
    """Item-to-item co-purchase recommender with the popularity fallback (see the module doc).

    Hyper-parameters: `n_neighbors` kept per item; `min_support` customers (or orders) who must
    have bought both items; `shrinkage` of the similarity of rare pairs, c / (c + shrinkage);
    `alpha` of the asymmetric cosine (0.5 = cosine, lower damps popular candidates);
    `recency_half_life_days` halves a bought item's weight in the customer's score every so many
    days since its last purchase (None: all bought items count the same); `popularity_weight`
    times the candidate's popularity (1 = the most popular product) is added to its co-purchase
    score (1 = the customer's best candidate);
    `context` "customer" (co-occurrence in whole histories) or "order" (in the same basket);
    `popularity_window_days` and `exclude_items` as for `PopularityRecommender`.

    Learned, besides the popularity state: `similarity_` and `support_` (CSR items x items: the
    kept neighbours' scores and co-occurrence counts) and `neighbors_` (a frame of product_id,
    neighbor_id, rank, score, support).

    Examples
    --------
    >>> import pandas as pd
    >>> lines = pd.DataFrame({
    ...     "customer_id": ["a", "a", "b", "b", "c", "d"],
    ...     "order_id": ["1", "1", "2", "3", "4", "5"],
    ...     "timestamp": pd.to_datetime(["2024-01-05", "2024-01-05", "2024-01-10",
    ...                                  "2024-01-20", "2024-01-25", "2024-01-26"]),
    ...     "product_id": ["tea", "cups", "tea", "cups", "tea", "jam"]})
    >>> model = ItemRecommender(min_support=2).fit(lines, as_of="2024-02-01")
    >>> for r in model.recommend(["c"], k=2)["c"]:
    ...     print(r["product_id"], "-", r["reason"])
    cups - bought with tea by 2 customers
    jam - popular in the last 90 days (1 customer)
    >>> [r["product_id"] for r in model.recommend(["someone new"], k=2)["someone new"]]
    ['tea', 'cups']
    """

    def __init__(
        self,
        *,
        n_neighbors: int = 20,
        min_support: int = 2,
        shrinkage: float = 10.0,
        alpha: float = 0.2,
        recency_half_life_days: float | None = 90.0,
        popularity_weight: float = 1.0,
        context: Literal["customer", "order"] = "customer",
        popularity_window_days: int = 90,
        exclude_items: Sequence[str] = (),
    ) -> None:
        super().__init__(popularity_window_days=popularity_window_days,
                         exclude_items=exclude_items)
        self.n_neighbors = n_neighbors
        self.min_support = min_support
        self.shrinkage = shrinkage
        self.alpha = alpha
        self.recency_half_life_days = recency_half_life_days
        self.popularity_weight = popularity_weight
        self.context = context

    def _fit_items(self, lines: pd.DataFrame, cust_code: np.ndarray, item_code: np.ndarray) -> None:
        if self.context not in ("customer", "order"):
            raise ValueError("context must be 'customer' or 'order'")
        if self.context == "order":
            if "order_id" not in lines:
                raise ValueError("context='order' needs an order_id column")
            row_code = pd.factorize(lines["customer_id"] + "\x1f" + lines["order_id"])[0]
        else:
            row_code = cust_code
        n_items = len(self.items_)
        n_rows = int(row_code.max()) + 1
        pairs = np.unique(row_code.astype(np.int64) * n_items + item_code)
        x = sp.csr_matrix(
            (np.ones(len(pairs), dtype=np.int32), (pairs // n_items, pairs % n_items)),
            shape=(n_rows, n_items),
        )
        n = np.bincount(x.indices, minlength=n_items).astype(np.float64)
        xt = x.T.tocsr()
        m = min(int(self.n_neighbors), max(n_items - 1, 0))
        work = xt @ np.diff(x.indptr).astype(np.int64)  # co-occurrences to sum, per item
        blocks = _blocks(work, _BLOCK_PAIRS) if m > 0 else []
        parts = [self._neighbours(xt[b0:b1] @ x, b0, n, m) for b0, b1 in blocks]
        cols = ([np.concatenate(a) for a in zip(*parts, strict=True)] if parts
                else [np.zeros(0, dtype=np.int64)] * 3 + [np.zeros(0)] * 2)
        src, dst, rank = (a.astype(np.int64) for a in cols[:3])
        sim, support = cols[3].astype(np.float64), cols[4].astype(np.int64)
        shape = (n_items, n_items)
        self.similarity_ = sp.csr_matrix((sim, (src, dst)), shape=shape)
        self.support_ = sp.csr_matrix((support, (src, dst)), shape=shape)
        items = self.items_.to_numpy()
        self.neighbors_ = pd.DataFrame({"product_id": items[src], "neighbor_id": items[dst],
                                        "rank": rank, "score": sim, "support": support})

    def _neighbours(
        self, counts: sp.csr_matrix, b0: int, n: np.ndarray, m: int
    ) -> tuple[np.ndarray, ...]:
        """The top-m neighbours of the items b0, b0 + 1, ... whose co-occurrence rows are
        `counts`: (item, neighbour, rank from 1, similarity, support), by item then rank.

        Only pairs with the minimum support are scored; ties keep the lower product id first.
        Each row is cut to its top m by a partition before the (small) sort.
        """
        per_row = np.diff(counts.indptr)
        src = np.repeat(np.arange(b0, b0 + counts.shape[0], dtype=np.int64), per_row)
        dst = counts.indices.astype(np.int64)
        c = counts.data.astype(np.float64)
        keep = (dst != src) & (c >= max(self.min_support, 1))
        src, dst, c = src[keep], dst[keep], c[keep]
        norm = (n ** self.alpha)[src] * (n ** (1.0 - self.alpha))[dst]
        s = c / norm * (c / (c + self.shrinkage)) if self.shrinkage > 0 else c / norm
        bounds = np.concatenate([[0], np.cumsum(np.bincount(src - b0,
                                                            minlength=counts.shape[0]))])
        picked, ranks = [], []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            if hi == lo:
                continue
            row = s[lo:hi]
            sel = np.arange(hi - lo)
            if hi - lo > m:  # the m best and their ties, then sort those
                kth = np.partition(row, hi - lo - m)[hi - lo - m]
                sel = sel[row >= kth]
            sel = sel[np.lexsort((dst[lo:hi][sel], -row[sel]))][:m]
            sel = sel[row[sel] > 0]
            picked.append(sel + lo)
            ranks.append(np.arange(1, len(sel) + 1))
        if not picked:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, np.zeros(0), np.zeros(0)
        top = np.concatenate(picked)
        return src[top], dst[top], np.concatenate(ranks), s[top], c[top]

    def _weights(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        """Days since purchase -> weight of the bought item in the customer's score."""
        w = rows.copy().astype(np.float64)
        if self.recency_half_life_days:
            w.data = 0.5 ** (w.data / self.recency_half_life_days)
        else:
            w.data = np.ones_like(w.data)
        return w

    def _scores(self, rows: sp.csr_matrix) -> tuple[sp.csr_matrix, Explain]:
        w = self._weights(rows)
        scores = (w @ self.similarity_).tocsr()
        scores.eliminate_zeros()
        row = np.repeat(np.arange(scores.shape[0]), np.diff(scores.indptr))
        top = np.zeros(scores.shape[0])
        np.maximum.at(top, row, scores.data)
        scores.data = scores.data / top[row]
        if self.popularity_weight:
            scores.data = scores.data + self.popularity_weight * self._pop_score_[scores.indices]
        items = self.items_.to_numpy()

        def explain(r: int, cand: np.ndarray, score: np.ndarray) -> list[str]:
            """Name the bought item contributing most to each candidate (and popularity when
            it weighs more than the co-purchases)."""
            lo, hi = w.indptr[r], w.indptr[r + 1]
            bought, weight = w.indices[lo:hi], w.data[lo:hi]
            order = np.argsort(bought, kind="stable")
            bought, weight = bought[order], weight[order]
            contrib = self.similarity_[bought][:, cand].toarray() * weight[:, None]
            pick = np.argmax(contrib, axis=0)  # ties: lower product id
            src = bought[pick]
            support = np.asarray(self.support_[src, cand]).ravel()
            unit = self.context
            pop = self.popularity_weight * self._pop_score_[cand]
            return [(f"{self._popular(int(j))}; " if p > v - p else "")
                    + f"bought with {items[i]} by {_n(int(n), unit)}"
                    for j, i, n, p, v in zip(cand, src, support, pop, score, strict=True)]

        return scores, explain


# ------------------------------------------------------------------------------ evaluation


def new_purchases(
    transactions: pd.DataFrame,
    as_of: AsOf,
    horizon_days: int = 90,
    exclude_items: Iterable[str] = (),
) -> dict[str, set[str]]:
    """Per customer, the products bought in [as_of, as_of + horizon) never bought before as_of.

    Only customers with at least one such product are returned (sale lines only, no returns).
    """
    start = pd.Timestamp(as_of)
    lines = purchase_lines(transactions, start + pd.Timedelta(days=horizon_days), exclude_items)
    before = lines["timestamp"] < start
    old = set(zip(lines.loc[before, "customer_id"], lines.loc[before, "product_id"], strict=True))
    after = lines.loc[~before, ["customer_id", "product_id"]].drop_duplicates()
    out: dict[str, set[str]] = {}
    for c, p in zip(after["customer_id"], after["product_id"], strict=True):
        if (c, p) not in old:
            out.setdefault(c, set()).add(p)
    return out


def recall_per_customer(
    recommendations: Mapping[str, Sequence[str]], actual: Mapping[str, set[str]], k: int = 10
) -> dict[str, float]:
    """|top-k hits| / min(k, |relevant|) per customer with at least one relevant product.

    `actual` maps each evaluated customer to the products that count as hits (usually the new
    products bought in the horizon: `new_purchases`); customers with an empty set are skipped,
    customers missing from `recommendations` score 0. The capped denominator makes 1.0
    reachable for every customer.
    """
    return {c: len(set(list(recommendations.get(c, ()))[:k]) & rel) / min(k, len(rel))
            for c, rel in actual.items() if rel}


def recall_at_k(
    recommendations: Mapping[str, Sequence[str]], actual: Mapping[str, set[str]], k: int = 10
) -> float:
    """Mean of `recall_per_customer`: the recall@k of a recommender; NaN when nobody counts."""
    vals = list(recall_per_customer(recommendations, actual, k).values())
    return float(np.mean(vals)) if vals else float("nan")


def hit_rate_at_k(
    recommendations: Mapping[str, Sequence[str]], actual: Mapping[str, set[str]], k: int = 10
) -> float:
    """Share of customers with relevant items who have at least one of them in their top k."""
    vals = [bool(set(list(recommendations.get(c, ()))[:k]) & rel)
            for c, rel in actual.items() if rel]
    return float(np.mean(vals)) if vals else float("nan")


def evaluate_recommender(
    model: PopularityRecommender, actual: Mapping[str, set[str]], k: int = 10
) -> dict[str, float]:
    """recall@k, hit rate@k and the number of customers, for the customers in `actual`."""
    recs = model.recommend(list(actual), k=k)
    ids = {c: [r["product_id"] for r in lst] for c, lst in recs.items()}
    return {f"recall@{k}": recall_at_k(ids, actual, k),
            f"hit_rate@{k}": hit_rate_at_k(ids, actual, k),
            "customers": float(sum(1 for v in actual.values() if v))}
