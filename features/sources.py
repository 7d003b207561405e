"""Readers for CSV / CSV.gz, Parquet and PostgreSQL sources: raw frames, or one-line errors."""

from __future__ import annotations

import difflib
import gzip
import zlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.config import ROW_NUMBER, SourceConfig
from features.errors import DataError


def read_source(cfg: SourceConfig) -> pd.DataFrame:
    """Read a source as it is (CSV as text), then check every mapped column is present."""
    if cfg.format == "csv":
        frame = _read_csv(cfg)
    elif cfg.format == "parquet":
        frame = _read_parquet(cfg)
    else:
        frame = read_postgres(cfg.url or "", cfg.query, cfg.sql_table)
    check_columns(frame, cfg)
    return frame


def check_columns(frame: pd.DataFrame, cfg: SourceConfig) -> None:
    """Fail with one line naming the first mapped column that the source lacks."""
    found = [str(c) for c in frame.columns]
    wanted = [(canon, src) for canon, src in cfg.columns.items() if src != ROW_NUMBER]
    wanted += [(col, col) for col in cfg.keep]
    for canon, src in wanted:
        if src not in found:
            close = difflib.get_close_matches(src, found, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DataError(
                f"{cfg.location}: missing column {src!r} (expected for {canon}); "
                f"found columns: {', '.join(found)}{hint}"
            )


def _read_csv(cfg: SourceConfig) -> pd.DataFrame:
    path = cfg.resolved_path
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    head = _peek(path)
    if not head.strip():
        raise DataError(f"{path}: file is empty (expected a CSV with a header line)")
    if b"\x00" in head:
        raise DataError(f"{path}: not a CSV file (binary content)")
    sep = r"\s+" if cfg.separator == "whitespace" else cfg.separator
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            header=0 if cfg.header else None,
            names=cfg.names,
            dtype=str,
            keep_default_na=False,
            na_values=[],
            encoding=cfg.encoding,
            compression="infer",
            engine="python" if sep == r"\s+" else "c",
        )
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not valid {cfg.encoding} text (byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}); set `encoding:` in the source config, e.g. latin-1"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (expected a CSV with a header line)") from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1]
        raise DataError(f"{path}: not a readable CSV: {detail}") from None
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{path}: cannot read compressed file: {exc}") from None
    if frame.empty:
        raise DataError(f"{path}: no data rows (only a header line)")
    return frame


def _peek(path: Path, size: int = 65536) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read(size)
        with open(path, "rb") as fh:
            return fh.read(size)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{path}: cannot read compressed file: {exc}") from None


def _read_parquet(cfg: SourceConfig) -> pd.DataFrame:
    path = cfg.resolved_path
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        detail = str(exc).splitlines()[0]
        raise DataError(f"{path}: not a readable Parquet file: {detail}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows")
    return table.to_pandas()


def read_postgres(url: str, query: str | None = None, table: str | None = None) -> pd.DataFrame:
    """Run a query (or read a whole table) on PostgreSQL and return the rows as a frame."""
    import psycopg
    from psycopg import sql

    where = table or "query"
    try:
        with psycopg.connect(url, connect_timeout=10) as conn, conn.cursor() as cur:
            if query:
                cur.execute(query)
            else:
                parts = [sql.Identifier(p) for p in (table or "").split(".")]
                cur.execute(sql.SQL("SELECT * FROM {}").format(sql.SQL(".").join(parts)))
            cols = [d.name for d in cur.description or []]
            rows = cur.fetchall()
    except psycopg.OperationalError as exc:
        raise DataError(f"postgres: cannot connect: {str(exc).strip().splitlines()[0]}") from None
    except psycopg.Error as exc:
        raise DataError(f"postgres {where}: {str(exc).strip().splitlines()[0]}") from None
    frame = pd.DataFrame.from_records(rows, columns=cols)
    if frame.empty:
        raise DataError(f"postgres {where}: no data rows")
    return frame
