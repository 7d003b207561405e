"""Published scores in PostgreSQL: the `ScoreStore` of `serving.score_store`, for a team that
runs PostgreSQL rather than Redis (`retention score --publish postgresql://...`, `serve
--scores postgresql://...`).

Layout, in the schema `retention_scores`:
  current            one row: the version being served (the pointer a publish flips)
  versions           one row per live version: its metadata (JSON, as Redis keeps it) and its
                     risk-list index, packed as in Redis (`RankIndex`: 19 bytes per customer,
                     one bytea column per filter)
  scores_<V>         one table per version, one row per customer: `rank` (0 the first of the
                     risk list; unique index), the row's values as the JSON array the metadata
                     names the columns of (every published column, whatever they are), the
                     churn probability with `at_most` (customers at or below it; indexed, so
                     that a percentile is one index probe), and the risk list's filter columns
                     (band, tier, segment, value at risk, CLV; indexed, for SQL readers)

A publish creates and fills the new table (COPY), then in one transaction inserts its
`versions` row and updates the `current` row, so a reader sees the old version or the new one,
never a mixture; versions past `keep` are then dropped (their table and row). A reader whose
version was dropped meanwhile finds its table gone and answers 503 until it reloads.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from features.errors import DataError
from serving.config import POSTGRES_SCHEMES
from serving.score_store import (
    CODED,
    FLOORS,
    Prepared,
    Published,
    RankIndex,
    ScoreStore,
    StoreUnavailable,
    published,
    rank_index,
)
from serving.versions import retire

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = "retention_scores"
FILTERS = {**{col: "text" for col in CODED.values()}, **dict.fromkeys(FLOORS, "float8")}
PACKED = {key: f"idx_{key}" for key in (*CODED, *FLOORS)}  # versions' columns of the index


def _table(version: str) -> str:
    return f"{SCHEMA}.scores_{int(version)}"


class PostgresScores(ScoreStore):
    """Published scores in PostgreSQL (see the module docstring for the layout).

    Reads go through psycopg connections kept for reuse (autocommit: one round trip per
    query, prepared after a few uses); a kept connection the server has dropped (a restart)
    is discarded where it is found and the read tried again on another.
    """

    IDLE = 8  # connections kept between reads at most

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        if not url.startswith(POSTGRES_SCHEMES):
            raise DataError(f"scores: {url!r} is not a postgresql:// URL")
        self.url = url
        self._settings = {"connect_timeout": max(1, round(timeout)),
                          "options": f"-c statement_timeout={int(timeout * 1000)}"}
        self._idle: queue.LifoQueue = queue.LifoQueue()

    def _connect(self, *, autocommit: bool):
        import psycopg

        return psycopg.connect(self.url, autocommit=autocommit, **self._settings)

    # ------------------------------------------------------------------ reading
    def _read(self, sql: str, params: dict | None = None, *, version: str | None = None,
              unbounded: bool = False) -> list[tuple]:
        """Rows of one query; StoreUnavailable when the server cannot answer, or when
        `version`'s table is gone (a newer publish retired it). `unbounded`: no statement
        timeout (a whole version read at once)."""
        import psycopg

        try:
            while True:
                try:
                    conn, kept = self._idle.get_nowait(), True
                except queue.Empty:
                    conn, kept = self._connect(autocommit=True), False
                try:
                    rows = self._query(conn, sql, params, unbounded)
                except psycopg.Error:
                    if not conn.broken:
                        self._give_back(conn)
                        raise
                    conn.close()
                    if kept:
                        continue  # dropped while it waited: try the next one, or a new one
                    raise
                self._give_back(conn)
                return rows
        except psycopg.errors.UndefinedTable:
            if version is None:
                raise
            raise StoreUnavailable(f"{self.url}: scores {version} retired by newer "
                                   "publishes") from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"{self.url}: score store unreachable "
                                   f"({type(exc).__name__})") from None

    @staticmethod
    def _query(conn, sql: str, params: dict | None, unbounded: bool) -> list[tuple]:
        if not unbounded:
            return conn.execute(sql, params).fetchall()
        with conn.transaction():
            conn.execute("SET LOCAL statement_timeout = 0")
            return conn.execute(sql, params).fetchall()

    def _give_back(self, conn) -> None:
        if self._idle.qsize() < self.IDLE:
            self._idle.put(conn)
        else:
            conn.close()

    def version(self) -> str:
        """The current version; raises DataError when nothing is published."""
        import psycopg

        try:
            found = self._read(f"SELECT version FROM {SCHEMA}.current")
        except psycopg.errors.UndefinedTable:
            found = []
        if not found or found[0][0] is None:
            raise DataError(f"{self.url}: no scores published "
                            "(run `retention score --publish`)")
        return str(found[0][0])

    def meta(self, version: str) -> Published:
        return published(version, self._version_row(version, ["meta"])[0])

    def index(self, meta: Published) -> RankIndex:
        """The version's risk-list filter columns (loaded once per version by each worker)."""
        blobs = self._version_row(meta.version, list(PACKED.values()))
        return rank_index(meta, {k: bytes(b) for k, b in zip(PACKED, blobs, strict=True)})

    def _version_row(self, version: str, columns: list[str]) -> tuple:
        found = self._read(f"SELECT {', '.join(columns)} FROM {SCHEMA}.versions "
                           "WHERE version = %(v)s", {"v": int(version)})
        if not found:
            raise StoreUnavailable(f"{self.url}: scores {version} are gone (a newer publish "
                                   "retired them)")
        return found[0]

    def rows(self, meta: Published, ids: Sequence[str]) -> list[dict | None]:
        """The rows of `ids` (None for a customer not in the version), one round trip."""
        if not ids:
            return []
        found = dict(self._read(f"SELECT customer_id, row FROM {_table(meta.version)} "
                                "WHERE customer_id = ANY(%(ids)s)", {"ids": list(ids)},
                                version=meta.version))
        return [None if (raw := found.get(cid)) is None
                else dict(zip(meta.columns, json.loads(raw), strict=True)) for cid in ids]

    def ranked(self, meta: Published, ranks: np.ndarray) -> pd.DataFrame:
        """The rows at these ranks, in that order, indexed by customer_id."""
        import pandas as pd

        wanted = [int(r) for r in ranks]
        found = {r: (cid, raw) for r, cid, raw in self._read(
            f"SELECT rank, customer_id, row FROM {_table(meta.version)} "
            "WHERE rank = ANY(%(ranks)s)", {"ranks": wanted}, version=meta.version)}
        if len(found) != len(set(wanted)):
            raise StoreUnavailable(f"{self.url}: scores {meta.version} incomplete")
        frame = pd.DataFrame.from_records([json.loads(found[r][1]) for r in wanted],
                                          columns=list(meta.columns))
        frame.index = pd.Index([found[r][0] for r in wanted], name="customer_id")
        return frame

    def at_most(self, meta: Published, churn: np.ndarray, side: str = "right") -> np.ndarray:
        """Customers whose churn probability is at most (side='right') or below ('left')
        each value: exact ranks against the published population, one round trip (an index
        probe per value: the count stored with the largest probability within the bound)."""
        op = "<=" if side == "right" else "<"
        values = [float(p) for p in np.asarray(churn, dtype="float64")]
        found = self._read(
            f"SELECT coalesce((SELECT s.at_most FROM {_table(meta.version)} s "
            f"WHERE s.churn_probability {op} q.p ORDER BY s.churn_probability DESC LIMIT 1), 0) "
            "FROM unnest(CAST(%(ps)s AS float8[])) WITH ORDINALITY AS q(p, i) ORDER BY q.i",
            {"ps": values}, version=meta.version)
        return np.asarray([r[0] for r in found], dtype=np.int64)

    def frame(self, meta: Published) -> pd.DataFrame:
        """The whole version as a frame indexed by customer_id, in rank order."""
        import pandas as pd

        found = self._read(f"SELECT customer_id, row FROM {_table(meta.version)} ORDER BY rank",
                           version=meta.version, unbounded=True)
        frame = pd.DataFrame.from_records([json.loads(raw) for _, raw in found],
                                          columns=list(meta.columns))
        frame.index = pd.Index([cid for cid, _ in found], name="customer_id")
        return frame

    def ping(self) -> None:
        self._read("SELECT 1")

    # ------------------------------------------------------------------ writing
    def _write(self, p: Prepared, keep: int) -> str:
        self._create_schema()
        with self._raw() as conn:
            conn.execute("SET LOCAL statement_timeout = 0")  # COPY and indexes take their time
            version = str(conn.execute(f"SELECT nextval('{SCHEMA}.counter')").fetchone()[0])
            table = _table(version)
            filters = ", ".join(f"{c} {t}" for c, t in FILTERS.items())
            conn.execute(f"CREATE TABLE {table} (customer_id text PRIMARY KEY, "
                         "rank integer NOT NULL, row text NOT NULL, churn_probability float8, "
                         f"at_most bigint NOT NULL, {filters})")
            index = rank_index(published(version, json.dumps(p.meta)), p.packed)
            names = index.categories
            columns = {CODED[k]: [None if c < 0 else names[k][c] for c in index.codes[k]]
                       for k in CODED}
            columns.update({c: index.floors[c].tolist() for c in FLOORS})
            at_most = p.at_most.tolist()
            churn = p.churn.tolist()
            with conn.cursor().copy(f"COPY {table} (customer_id, rank, row, churn_probability, "
                                    f"at_most, {', '.join(FILTERS)}) FROM STDIN") as copy:
                for i, cid in enumerate(p.ids):
                    copy.write_row((cid, i, p.rows[i], _finite(churn[i]), at_most[i],
                                    *(_finite(columns[c][i]) for c in FILTERS)))
            name = f"scores_{int(version)}"
            conn.execute(f"CREATE UNIQUE INDEX {name}_rank ON {table} (rank)")
            conn.execute(f"CREATE INDEX {name}_churn ON {table} (churn_probability)")
            for col in FILTERS:
                conn.execute(f"CREATE INDEX {name}_{col} ON {table} ({col})")
            conn.commit()
            with conn.transaction():  # the flip: the version's row and the pointer at once
                conn.execute(f"INSERT INTO {SCHEMA}.versions (version, meta, "
                             f"{', '.join(PACKED.values())}) VALUES (%s, %s"
                             f"{', %s' * len(PACKED)})",
                             (int(version), json.dumps(p.meta), *(p.packed[k] for k in PACKED)))
                conn.execute(f"UPDATE {SCHEMA}.current SET version = %s", (int(version),))
        retire(self._count, self._pop_oldest, self.drop, keep)
        return version

    def drop(self, version: str) -> None:
        """Delete one version: its table and its row."""
        with self._raw() as conn, conn.transaction():
            conn.execute(f"DROP TABLE IF EXISTS {_table(version)}")
            conn.execute(f"DELETE FROM {SCHEMA}.versions WHERE version = %s", (int(version),))

    def live_versions(self) -> list[str]:
        """The versions kept, oldest first, and every version table left in the schema (to
        check that old versions are gone)."""
        with self._raw() as conn:
            kept = [str(v) for (v,) in conn.execute(
                f"SELECT version FROM {SCHEMA}.versions ORDER BY version")]
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s "
                                  "AND tablename LIKE 'scores\\_%%'", (SCHEMA,)).fetchall()
        return sorted({*kept, *(t.removeprefix("scores_") for (t,) in tables)}, key=int)

    def _count(self) -> int:
        with self._raw() as conn:
            return conn.execute(f"SELECT count(*) FROM {SCHEMA}.versions").fetchone()[0]

    def _pop_oldest(self) -> str | None:
        """The oldest live version other than the current one (never the one served)."""
        with self._raw() as conn:
            row = conn.execute(f"SELECT min(version) FROM {SCHEMA}.versions WHERE version <> "
                               f"(SELECT version FROM {SCHEMA}.current)").fetchone()
        return None if row is None or row[0] is None else str(row[0])

    @contextmanager
    def _raw(self) -> Iterator:
        """A connection of its own for writing (COPY and DDL; commits are explicit), closed
        on exit (rolling back what was not committed)."""
        conn = self._connect(autocommit=False)
        try:
            yield conn
        finally:
            conn.close()

    def _create_schema(self) -> None:
        with self._raw() as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(f"CREATE SEQUENCE IF NOT EXISTS {SCHEMA}.counter")
            packed = ", ".join(f"{c} bytea NOT NULL" for c in PACKED.values())
            conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.versions (version bigint "
                         f"PRIMARY KEY, meta text NOT NULL, {packed}, "
                         "published_at timestamptz NOT NULL DEFAULT now())")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.current (one boolean PRIMARY KEY "
                         "DEFAULT true CHECK (one), version bigint)")
            conn.execute(f"INSERT INTO {SCHEMA}.current (one, version) VALUES (true, NULL) "
                         "ON CONFLICT DO NOTHING")
            conn.commit()


def _finite(v: object) -> object:
    """None for NaN and infinities (NULL in a table column)."""
    return None if isinstance(v, float) and not np.isfinite(v) else v
