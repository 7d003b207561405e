"""Online store of precomputed scores: what `/score` and `/risk_list` answer, per customer.

`retention score --publish redis://...` (or `postgresql://...`) scores a snapshot once and
writes it here; every replica of the service then answers from the store instead of scoring the
population at start. A publish writes a new version beside the current one and flips one
pointer in a transaction, so a replica reads either the old or the new version, never a
mixture; versions past `keep` are deleted (the store stays bounded to `keep` populations).
Every column of the scored frame is published as it is (a row is the JSON array of its values,
the columns named once in the version's metadata), so a field added to the scores is carried
without a change here.

`RedisScores` is below; `serving.postgres_scores.PostgresScores` keeps the same versions in
PostgreSQL. Both are a `ScoreStore`, which is all the service uses.

Redis layout under `retention:scores` (V a version):
  current, counter, versions  the pointer, the version counter, live versions oldest first
  V:meta    JSON: model and features versions, as_of, columns, categories, BTYD components
  V:rows    hash customer_id -> JSON array of the row's values (the columns of `meta`)
  V:rank    hash rank -> customer_id, rank 0 the first of the risk list (value at risk, then
            churn probability, descending; ties in the population's order)
  V:churn   sorted set customer_id by churn probability (percentiles of /score_features rows)
  V:idx:*   the risk list's filter columns in rank order, packed (bands, tiers, segments as
            int8 codes; value at risk and CLV as float64): 19 bytes per customer
"""

from __future__ import annotations

import datetime as dt
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from features.errors import DataError
from serving.config import POSTGRES_SCHEMES, REDIS_SCHEMES
from serving.versions import retire_redis

if TYPE_CHECKING:  # pandas is imported where a frame is built: `retention serve` needs none
    import pandas as pd

PREFIX = "retention:scores"
RANKED_BY = ["value_at_risk", "churn_probability"]  # the risk list's order, descending
CODED = {"band": "risk_band", "tier": "value_tier", "segment": "rfm_segment"}  # filter columns
FLOORS = ("value_at_risk", "clv")  # filter columns compared with a minimum
CHUNK = 10_000  # rows per pipeline when writing


class StoreUnavailable(Exception):
    """The score store cannot be read now (unreachable, or the version being served was
    retired by newer publishes): answered 503, the request may be retried."""


def risk_order(scores: pd.DataFrame) -> np.ndarray:
    """Row positions in the risk list's order (the order `/risk_list` answers in)."""
    ranked = scores.reset_index(drop=True).sort_values(RANKED_BY, ascending=False,
                                                       kind="stable")
    return ranked.index.to_numpy()


@dataclass(frozen=True)
class Published:
    """One published version's metadata."""

    version: str
    model_version: str
    model_run_id: str
    features_version: str
    as_of: str
    customers: int
    columns: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    tier_floors: tuple[tuple[str, float], ...]
    components: dict[str, dict[str, float]] | None  # BTYD params refitted on the population
    uplift_version: str | None
    uplift_outcome: str | None
    published_at: str


@dataclass(frozen=True)
class RankIndex:
    """The filter columns of one version in rank order: a risk list is a few vectorised
    masks over them and the first `top_n` positions left."""

    codes: dict[str, np.ndarray]
    floors: dict[str, np.ndarray]
    categories: dict[str, tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.floors[FLOORS[0]])

    def select(self, *, bands: Sequence[str] | None = None, tiers: Sequence[str] | None = None,
               segments: Sequence[str] | None = None, min_value_at_risk: float | None = None,
               min_clv: float | None = None, top_n: int) -> tuple[int, np.ndarray]:
        """(customers the filters keep, the ranks of the first `top_n` of them)."""
        mask = np.ones(len(self), dtype=bool)
        for key, chosen in (("band", bands), ("tier", tiers), ("segment", segments)):
            if chosen:
                names = self.categories[key]
                keep = np.zeros(len(names) + 1, dtype=bool)  # the last slot: code -1, missing
                keep[[names.index(c) for c in chosen if c in names]] = True
                mask &= keep[self.codes[key]]
        for col, floor in zip(FLOORS, (min_value_at_risk, min_clv), strict=True):
            if floor is not None:
                mask &= self.floors[col] >= floor
        kept = np.flatnonzero(mask)
        return len(kept), kept[:top_n]


class ScoreStore(ABC):
    """What the service and `retention score --publish` use of a score store; a store writes
    a prepared version (`_write`) and reads it back."""

    url: str

    @abstractmethod
    def version(self) -> str:
        """The current version (StoreUnavailable when unreachable, DataError when empty)."""

    @abstractmethod
    def meta(self, version: str) -> Published: ...

    @abstractmethod
    def index(self, meta: Published) -> RankIndex: ...

    @abstractmethod
    def rows(self, meta: Published, ids: Sequence[str]) -> list[dict | None]: ...

    @abstractmethod
    def ranked(self, meta: Published, ranks: np.ndarray) -> pd.DataFrame: ...

    @abstractmethod
    def at_most(self, meta: Published, churn: np.ndarray, side: str = "right"
                ) -> np.ndarray: ...

    @abstractmethod
    def frame(self, meta: Published) -> pd.DataFrame: ...

    @abstractmethod
    def ping(self) -> None: ...

    @abstractmethod
    def _write(self, prepared: Prepared, keep: int) -> str:
        """Write a prepared version, flip `current` to it, retire all but the last `keep`;
        returns the new version."""

    def publish(self, scores: pd.DataFrame, *, model_version: str, model_run_id: str,
                features_version: str, tier_floors: tuple[tuple[str, float], ...] = (),
                components: dict[str, dict[str, float]] | None = None,
                uplift_version: str | None = None, uplift_outcome: str | None = None,
                keep: int = 2) -> str:
        """Write scores (indexed by customer_id, one row each) as a new version, flip
        `current` to it, and delete versions older than the last `keep`."""
        return self._write(prepare(scores, model_version=model_version,
                                   model_run_id=model_run_id,
                                   features_version=features_version, tier_floors=tier_floors,
                                   components=components, uplift_version=uplift_version,
                                   uplift_outcome=uplift_outcome), keep)


@dataclass(frozen=True)
class Prepared:
    """A scored frame laid out for a publish, whatever the store: rows in rank order, each
    row's values as JSON, the packed risk-list index and the version's metadata."""

    ids: list[str]
    rows: list[str]  # JSON array of each row's values, in `meta["columns"]` order
    churn: np.ndarray  # float64, NaN where not finite
    packed: dict[str, bytes]  # the RankIndex columns: codes (int8) and floors (float64)
    meta: dict

    @property
    def at_most(self) -> np.ndarray:
        """Per row: customers whose churn probability is at or below the row's (0 for a
        missing one), i.e. `searchsorted(sorted, p, side="right")` over the finite ones."""
        finite = np.sort(self.churn[np.isfinite(self.churn)])
        counts = np.searchsorted(finite, self.churn, side="right")
        return np.where(np.isfinite(self.churn), counts, 0).astype(np.int64)


def prepare(scores: pd.DataFrame, *, model_version: str, model_run_id: str,
            features_version: str, tier_floors: tuple[tuple[str, float], ...] = (),
            components: dict[str, dict[str, float]] | None = None,
            uplift_version: str | None = None, uplift_outcome: str | None = None) -> Prepared:
    """Check and lay out scores (indexed by customer_id, one row each) for a publish."""
    import pandas as pd

    if scores.empty:
        raise DataError("scores: nothing to publish")
    if not scores.index.is_unique:
        raise DataError("scores: customer ids repeat")
    ranked = scores.iloc[risk_order(scores)]
    ids = [str(c) for c in ranked.index]
    columns = [str(c) for c in ranked.columns]
    categories, packed = {}, {}
    for key, col in CODED.items():
        values = ranked[col] if col in ranked else pd.Series([None] * len(ranked))
        names = tuple(sorted(str(v) for v in pd.unique(values.dropna())))
        categories[key] = names
        codes = pd.Categorical(values.astype(object), categories=list(names)).codes
        packed[key] = codes.astype(np.int8).tobytes()
    for col in FLOORS:
        packed[col] = ranked[col].to_numpy(dtype="float64").tobytes()
    values = [[_plain(v) for v in ranked[c].tolist()] for c in columns]
    rows = [json.dumps([col[i] for col in values]) for i in range(len(ids))]
    churn = ranked["churn_probability"].to_numpy(dtype="float64").copy()
    churn[~np.isfinite(churn)] = np.nan
    as_of = str(pd.Series(ranked["as_of"]).astype(str).max()) if "as_of" in ranked else ""
    meta = {"model_version": model_version, "model_run_id": model_run_id,
            "features_version": features_version, "as_of": as_of, "customers": len(ids),
            "columns": columns, "categories": categories,
            "tier_floors": [list(t) for t in tier_floors], "components": components,
            "uplift_version": uplift_version, "uplift_outcome": uplift_outcome,
            "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    return Prepared(ids=ids, rows=rows, churn=churn, packed=packed, meta=meta)


def published(version: str, raw: str | bytes) -> Published:
    """A version's metadata from its JSON (`Prepared.meta`)."""
    m = json.loads(raw)
    return Published(
        version=version, model_version=m["model_version"], model_run_id=m["model_run_id"],
        features_version=m["features_version"], as_of=m["as_of"], customers=m["customers"],
        columns=tuple(m["columns"]),
        categories={k: tuple(v) for k, v in m["categories"].items()},
        tier_floors=tuple((str(k), float(v)) for k, v in m["tier_floors"]),
        components=m["components"], uplift_version=m["uplift_version"],
        uplift_outcome=m["uplift_outcome"], published_at=m["published_at"])


def rank_index(meta: Published, packed: dict[str, bytes]) -> RankIndex:
    """The risk-list index from its packed columns (`Prepared.packed`)."""
    return RankIndex(codes={k: np.frombuffer(packed[k], dtype=np.int8) for k in CODED},
                     floors={c: np.frombuffer(packed[c], dtype=np.float64) for c in FLOORS},
                     categories=meta.categories)


def _client_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _plain(v: object) -> object:
    """A value as JSON writes it back: numbers, text, None (NaN kept as NaN)."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dt.date):  # pd.Timestamp too
        return str(v)
    return v


class RedisScores(ScoreStore):
    """Published scores in Redis (see the module docstring for the layout)."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        import redis

        if not url.startswith(REDIS_SCHEMES):
            raise DataError(f"scores: {url!r} is not a redis:// URL")
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=timeout,
                                           socket_connect_timeout=timeout)

    def _key(self, version: str, part: str) -> str:
        return f"{PREFIX}:{version}:{part}"

    # ------------------------------------------------------------------ reading
    def version(self) -> str:
        """The current version; raises DataError when nothing is published."""
        try:
            current = self.client.get(f"{PREFIX}:current")
        except _client_errors() as exc:
            raise StoreUnavailable(f"{self.url}: score store unreachable ({exc})") from None
        if current is None:
            raise DataError(f"{self.url}: no scores published "
                            "(run `retention score --publish`)")
        return current.decode()

    def meta(self, version: str) -> Published:
        return published(version, self._get(self._key(version, "meta")))

    def index(self, meta: Published) -> RankIndex:
        """The version's risk-list filter columns (loaded once per version by each worker)."""
        return rank_index(meta, {k: self._get(self._key(meta.version, f"idx:{k}"))
                                 for k in (*CODED, *FLOORS)})

    def _get(self, key: str) -> bytes:
        try:
            raw = self.client.get(key)
        except _client_errors() as exc:
            raise StoreUnavailable(f"{self.url}: score store unreachable ({exc})") from None
        if raw is None:
            raise StoreUnavailable(f"{self.url}: {key} is gone (a newer publish retired it)")
        return raw

    def rows(self, meta: Published, ids: Sequence[str]) -> list[dict | None]:
        """The rows of `ids` (None for a customer not in the version), one round trip."""
        if not ids:
            return []
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(self._key(meta.version, "rows"), list(ids))
            pipe.exists(self._key(meta.version, "meta"))
            found, live = pipe.execute()
        except _client_errors() as exc:
            raise StoreUnavailable(f"{self.url}: score store unreachable ({exc})") from None
        if not live:
            raise StoreUnavailable(f"{self.url}: scores {meta.version} retired by newer "
                                   "publishes")
        return [None if raw is None else dict(zip(meta.columns, json.loads(raw), strict=True))
                for raw in found]

    def ranked(self, meta: Published, ranks: np.ndarray) -> pd.DataFrame:
        """The rows at these ranks, in that order, indexed by customer_id."""
        import pandas as pd

        if len(ranks) == 0:
            return pd.DataFrame(columns=list(meta.columns),
                                index=pd.Index([], name="customer_id"))
        try:
            ids = [b.decode() for b in self.client.hmget(self._key(meta.version, "rank"),
                                                         [int(r) for r in ranks])]
        except (AttributeError, *_client_errors()) as exc:
            raise StoreUnavailable(f"{self.url}: scores {meta.version} unreadable "
                                   f"({type(exc).__name__})") from None
        rows = self.rows(meta, ids)
        if any(r is None for r in rows):
            raise StoreUnavailable(f"{self.url}: scores {meta.version} incomplete")
        frame = pd.DataFrame.from_records(rows, columns=list(meta.columns))
        frame.index = pd.Index(ids, name="customer_id")
        return frame

    def at_most(self, meta: Published, churn: np.ndarray, side: str = "right") -> np.ndarray:
        """Customers whose churn probability is at most (side='right') or below ('left')
        each value: exact ranks against the published population, one round trip."""
        key = self._key(meta.version, "churn")
        try:
            pipe = self.client.pipeline(transaction=False)
            for p in np.asarray(churn, dtype="float64"):
                hi = repr(float(p)) if side == "right" else f"({float(p)!r}"
                pipe.zcount(key, "-inf", hi)
            return np.asarray(pipe.execute(), dtype=np.int64)
        except _client_errors() as exc:
            raise StoreUnavailable(f"{self.url}: score store unreachable ({exc})") from None

    def frame(self, meta: Published) -> pd.DataFrame:
        """The whole version as a frame indexed by customer_id, in rank order (for views of
        the whole population, such as the console's)."""
        import pandas as pd

        key, rows, ids = self._key(meta.version, "rows"), [], []
        for cid, raw in self.client.hscan_iter(key, count=10_000):
            ids.append(cid.decode())
            rows.append(json.loads(raw))
        frame = pd.DataFrame.from_records(rows, columns=list(meta.columns))
        frame.index = pd.Index(ids, name="customer_id")
        ranks = self.client.hgetall(self._key(meta.version, "rank"))
        order = pd.Series({v.decode(): int(k) for k, v in ranks.items()})
        return frame.loc[order.sort_values().index]

    def ping(self) -> None:
        try:
            self.client.ping()
        except _client_errors() as exc:
            raise StoreUnavailable(f"{self.url}: score store unreachable ({exc})") from None

    # ------------------------------------------------------------------ writing
    def _write(self, p: Prepared, keep: int) -> str:
        version = str(self.client.incr(f"{PREFIX}:counter"))
        pipe = self.client.pipeline(transaction=False)
        for key, blob in p.packed.items():
            pipe.set(self._key(version, f"idx:{key}"), blob)
        pipe.execute()
        ids, churn = p.ids, p.churn
        for lo in range(0, len(ids), CHUNK):
            hi = min(lo + CHUNK, len(ids))
            pipe.hset(self._key(version, "rows"),
                      mapping={ids[i]: p.rows[i] for i in range(lo, hi)})
            pipe.hset(self._key(version, "rank"), mapping={i: ids[i] for i in range(lo, hi)})
            pipe.zadd(self._key(version, "churn"),
                      {ids[i]: float(churn[i]) for i in range(lo, hi) if np.isfinite(churn[i])})
            pipe.execute()
        with self.client.pipeline(transaction=True) as flip:
            flip.set(self._key(version, "meta"), json.dumps(p.meta))
            flip.rpush(f"{PREFIX}:versions", version)
            flip.set(f"{PREFIX}:current", version)
            flip.execute()
        retire_redis(self.client, f"{PREFIX}:versions", self.drop, keep)
        return version

    def drop(self, version: str) -> None:
        """Delete one version's keys (in the background on the server: UNLINK)."""
        keys = [self._key(version, p) for p in ("meta", "rows", "rank", "churn")]
        keys += [self._key(version, f"idx:{k}") for k in (*CODED, *FLOORS)]
        self.client.unlink(*keys)

    def used_keys(self) -> list[str]:
        """Every key under the prefix (to check that old versions are gone)."""
        return sorted(k.decode() for k in self.client.scan_iter(f"{PREFIX}:*", count=1000))


def open_score_store(url: str) -> ScoreStore:
    """The score store a config names: a redis:// or a postgresql:// URL."""
    if url.startswith(POSTGRES_SCHEMES):
        from serving.postgres_scores import PostgresScores

        return PostgresScores(url)
    return RedisScores(url)


class StorePopulation:
    """The published population's churn probabilities, as `serving.batch.enrich` ranks a row
    against them (`len` and `searchsorted`), answered by the store instead of an array."""

    def __init__(self, store: ScoreStore, meta: Published) -> None:
        self.store, self.meta = store, meta

    def __len__(self) -> int:
        return self.meta.customers

    def searchsorted(self, v: np.ndarray, side: str = "left", sorter: object = None
                     ) -> np.ndarray:
        return self.store.at_most(self.meta, np.atleast_1d(v), side=side)
