"""Readers for CSV / CSV.gz, Parquet and PostgreSQL sources: raw frames, or one-line errors."""

from __future__ import annotations

import codecs
import difflib
import gzip
import zlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.config import ROW_NUMBER, WHITESPACE, SourceConfig
from features.errors import DataError

# Byte order marks of the encodings a CSV is most often saved in by mistake (Excel's "Unicode").
_WIDE_BOMS: dict[bytes, str] = {
    codecs.BOM_UTF32_LE: "utf-32", codecs.BOM_UTF32_BE: "utf-32",
    codecs.BOM_UTF16_LE: "utf-16", codecs.BOM_UTF16_BE: "utf-16",
}
# Separators to suggest when a header did not split, each as it is written in a YAML config.
_SEPARATORS: dict[str, str] = {";": "';'", "\t": '"\\t"', "|": "'|'", ",": "','"}


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
            if len(found) == 1 and cfg.format == "csv":
                hint += _separator_hint(found[0], cfg.separator)
            raise DataError(
                f"{cfg.location}: missing column {src!r} (expected for {canon}); "
                f"found columns: {', '.join(found)}{hint}"
            )


def _separator_hint(header: str, separator: str) -> str:
    """A hint when a one-column header is really several columns split by another separator."""
    for sep, written in _SEPARATORS.items():
        if sep != separator and sep in header:
            return f"; the header looks {written}-separated: set `separator: {written}`"
    return ""


def _read_csv(cfg: SourceConfig) -> pd.DataFrame:
    path = cfg.resolved_path
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    head = _peek(path)
    if not head.strip():
        raise DataError(f"{path}: file is empty (expected a CSV with a header line)")
    encoding = codecs.lookup(cfg.encoding).name
    wide = next((enc for bom, enc in _WIDE_BOMS.items() if head.startswith(bom)), None)
    if wide and not encoding.startswith(wide):
        raise DataError(f"{path}: the file starts with a {wide} byte order mark; set "
                        f"`encoding: {wide}` in the source config")
    if b"\x00" in head and not encoding.startswith(("utf-16", "utf-32")):
        raise DataError(f"{path}: not a CSV file (binary content)")
    if encoding == "utf-8":
        encoding = "utf-8-sig"  # the same text, and a byte order mark (Excel's) is not data
    sep = r"\s+" if cfg.separator == WHITESPACE else cfg.separator
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            header=0 if cfg.header else None,
            names=cfg.names,
            dtype=str,
            keep_default_na=False,
            na_values=[],
            encoding=encoding,
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
    frame.columns = [str(c) for c in frame.columns]  # without a header they are 0, 1, …
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
