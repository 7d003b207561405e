"""Source configs: how a file or table maps onto the canonical contract (YAML or TOML, pydantic)."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from features.contract import REQUIRED, TableKind
from features.errors import DataError, config_error

ROW_NUMBER = "@row_number"


class SourceConfig(BaseModel):
    """One source: where to read it and how its columns become the canonical ones.

    `columns` maps canonical (or helper, e.g. `price`) names to source columns; the special value
    `@row_number` makes ids from the 1-based row number (sources with one row per customer and no
    id, such as Hillstrom). `derive` computes canonical columns from mapped numeric ones
    (`amount: quantity * price`), `constants` fills columns the source lacks, `value_map` recodes
    values (e.g. arms), `keep` carries extra source columns through under their own names.
    `duplicates: keep` is for sources without order ids, where two identical lines are two
    purchases; `allow_zero_price` keeps free items (still purchases) instead of quarantining them.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    table: TableKind = "transactions"
    format: Literal["csv", "parquet", "postgres"]
    path: str | None = None
    url: str | None = None
    query: str | None = None
    sql_table: str | None = None
    encoding: str = "utf-8"
    separator: str = ","
    header: bool = True
    names: list[str] | None = None
    columns: dict[str, str]
    derive: dict[str, str] = {}
    constants: dict[str, str | float | int | bool] = {}
    value_map: dict[str, dict[str, str]] = {}
    keep: list[str] = []
    timestamp_format: str | None = None
    timezone: str = "UTC"
    extracted_at: dt.datetime | None = None
    non_product_codes: list[str] = []
    return_order_prefix: str | None = None
    duplicates: Literal["quarantine", "keep"] = "quarantine"
    allow_zero_price: bool = False
    id_prefix: str = ""
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _check(self) -> SourceConfig:
        if self.format in ("csv", "parquet") and not self.path:
            raise ValueError(f"format {self.format!r} needs `path`")
        if self.format == "postgres" and not (self.url and (self.query or self.sql_table)):
            raise ValueError("format 'postgres' needs `url` and one of `query` or `sql_table`")
        provided = set(self.columns) | set(self.derive) | set(self.constants)
        missing = [c for c in REQUIRED[self.table] if c not in provided]
        if missing:
            raise ValueError(
                f"table {self.table!r} needs {', '.join(missing)} in `columns`, `derive` or "
                "`constants`"
            )
        return self

    @property
    def location(self) -> str:
        """Human-readable place of the data, for error messages."""
        if self.format == "postgres":
            return self.sql_table or "query"
        return str(self.resolved_path)

    @property
    def resolved_path(self) -> Path:
        assert self.path is not None
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()


def load_source_config(path: str | Path, **overrides: object) -> SourceConfig:
    """Read and validate a YAML or TOML source config; relative paths resolve from its folder."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: source config not found")
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {first}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    raw = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    raw.setdefault("base_dir", path.parent)
    try:
        return SourceConfig.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, path) from None
