"""Online feature stores: the latest feature snapshot, keyed by customer id.

`MemoryStore` reads the newest as_of partition of a `features build` output in-process (the
default). `RedisStore` is the production option: the batch feature job publishes a snapshot
(`retention features publish --to redis://...`) under a new version and flips one pointer, so
every replica sees the same snapshot and picks up a refresh without a restart.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.engine import partitions, read_features
from features.errors import DataError
from serving.config import REDIS_SCHEMES
from serving.versions import retire_redis

PREFIX = "retention:features"


class FeatureStore(Protocol):
    def version(self) -> str:
        """Changes whenever a new snapshot is published."""

    def snapshot(self) -> pd.DataFrame:
        """One feature row per customer (with `as_of`), the latest published."""


class MemoryStore:
    """The newest as_of partition under a `features build` output directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _latest(self) -> tuple[dt.date, Path]:
        parts = partitions(self.path)
        if not parts:
            raise DataError(f"{self.path}: no feature partitions (run `retention features build`)")
        return next(reversed(parts.items()))

    def version(self) -> str:
        _, part = self._latest()
        stamp = max(p.stat().st_mtime_ns for p in part.glob("*.parquet"))
        return f"{part.name}@{stamp}"

    def snapshot(self) -> pd.DataFrame:
        day, _ = self._latest()
        return read_features(self.path, day)


class RedisStore:
    """Snapshots stored in Redis as Parquet chunks under a version; one key names the current."""

    chunk_rows = 200_000

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url)

    def version(self) -> str:
        current = self.client.get(f"{PREFIX}:current")
        if current is None:
            raise DataError(f"{self.url}: no feature snapshot published "
                            "(run `retention features publish`)")
        return current.decode()

    def snapshot(self) -> pd.DataFrame:
        version = self.version()
        chunks = self.client.lrange(f"{PREFIX}:{version}", 0, -1)
        if not chunks:
            raise DataError(f"{self.url}: snapshot {version} has no rows")
        tables = [pq.read_table(io.BytesIO(blob)) for blob in chunks]
        return pa.concat_tables(tables).to_pandas()

    def publish(self, frame: pd.DataFrame, keep: int = 2) -> str:
        """Write a snapshot under a new version, then point `current` at it (atomic flip)."""
        as_of = str(frame["as_of"].max()) if "as_of" in frame else "unknown"
        version = f"as_of={as_of}@{self.client.incr(f'{PREFIX}:counter')}"
        key = f"{PREFIX}:{version}"
        pipe = self.client.pipeline()
        for lo in range(0, max(len(frame), 1), self.chunk_rows):
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(frame.iloc[lo:lo + self.chunk_rows],
                                                preserve_index=False), buf)
            pipe.rpush(key, buf.getvalue())
        pipe.rpush(f"{PREFIX}:versions", version)
        pipe.set(f"{PREFIX}:current", version)
        pipe.execute()
        retire_redis(self.client, f"{PREFIX}:versions",
                     lambda old: self.client.delete(f"{PREFIX}:{old}"), keep)
        return version


def open_store(store: str, features: Path | None) -> FeatureStore:
    """The store a config names: 'memory' (reads `features`) or a redis:// URL."""
    if store.startswith(REDIS_SCHEMES):
        return RedisStore(store)
    if store != "memory":
        raise DataError(f"store: {store!r} is neither 'memory' nor a redis:// URL")
    if features is None:
        raise DataError("store: the in-process store needs a features path")
    return MemoryStore(features)
