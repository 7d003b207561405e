"""Source configs: how a file or table maps onto the canonical contract (YAML or TOML, pydantic)."""

from __future__ import annotations

import ast
import datetime as dt
import operator
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from features.contract import COST, REQUIRED, TableKind
from features.errors import DataError, config_error

ROW_NUMBER = "@row_number"
WHITESPACE = "whitespace"
# Columns read as numbers; `derive` expressions may use these (`price` is a helper, not canonical).
NUMERIC: tuple[str, ...] = ("quantity", "amount", "price", "cost", "visit", "converted", "revenue")

# A formula, not a program: keeps parsing and evaluation shallow, and every literal a float.
MAX_DERIVE_CHARS = 300
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}
_OPERATOR_SYMBOLS: dict[type[ast.AST], str] = {
    ast.Pow: "**", ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.BitOr: "|",
    ast.BitAnd: "&", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>", ast.UAdd: "unary +",
    ast.Invert: "~", ast.Not: "not",
}
_NOT_ARITHMETIC: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access", ast.Call: "a function call", ast.Subscript: "indexing",
    ast.Compare: "a comparison", ast.BoolOp: "a boolean operator", ast.Lambda: "a lambda",
}


@dataclass(frozen=True)
class Arithmetic:
    """A `derive` expression: + - * /, unary minus and parentheses on column names and numbers.

    Parsed with `ast` and evaluated node by node over a whitelist, never with `eval`, so a config
    cannot reach attributes, calls or anything but the columns it names.

    Examples
    --------
    >>> expr = Arithmetic.parse("-(quantity * price) / 2")
    >>> sorted(expr.names), float(expr.evaluate({"quantity": 3.0, "price": 4.0}))
    (['price', 'quantity'], -6.0)
    >>> Arithmetic.parse("quantity.__class__")
    Traceback (most recent call last):
    ValueError: attribute access is not allowed
    """

    text: str
    tree: ast.expr

    @classmethod
    def parse(cls, text: str) -> Arithmetic:
        """Parse `text`; ValueError says what is not arithmetic."""
        if len(text) > MAX_DERIVE_CHARS:
            raise ValueError(f"longer than {MAX_DERIVE_CHARS} characters")
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except (SyntaxError, RecursionError):
            raise ValueError("not a valid expression") from None
        for node in ast.walk(tree):
            if (isinstance(node, ast.BinOp) and type(node.op) not in _BINARY
                    or isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.USub)):
                symbol = _OPERATOR_SYMBOLS.get(type(node.op), type(node.op).__name__)
                raise ValueError(f"operator {symbol} is not allowed")
            if isinstance(node, ast.Constant) and type(node.value) not in (int, float):
                raise ValueError(f"{str(node.value)[:20]!r} is not a number")
            if not isinstance(node, ast.BinOp | ast.UnaryOp | ast.Constant | ast.Name
                              | ast.operator | ast.unaryop | ast.expr_context):
                what = _NOT_ARITHMETIC.get(type(node), f"a {type(node).__name__} expression")
                raise ValueError(f"{what} is not allowed")
        return cls(text, tree)

    @property
    def names(self) -> frozenset[str]:
        """The column names the expression reads."""
        return frozenset(n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name))

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """The expression over `values` (numbers or Series); x / 0 gives inf or NaN, no error."""
        with np.errstate(all="ignore"):
            return self._eval(self.tree, values)

    def _eval(self, node: ast.expr, values: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.BinOp):
            op = _BINARY[type(node.op)]
            return op(self._eval(node.left, values), self._eval(node.right, values))
        if isinstance(node, ast.UnaryOp):
            return -self._eval(node.operand, values)
        if isinstance(node, ast.Constant):
            return np.float64(node.value)
        assert isinstance(node, ast.Name)
        return values[node.id]


def _arithmetic(text: str) -> str:
    """A `derive` value: arithmetic on the numeric columns (checked when the config loads)."""
    quoted = repr(text if len(text) <= 60 else text[:60] + "…")
    try:
        names = Arithmetic.parse(text).names
    except ValueError as exc:
        raise _expected(f"{quoted}: {exc}", "arithmetic (+ - * / and parentheses) on "
                        "columns and numbers, e.g. quantity * price") from None
    unknown = sorted(names - set(NUMERIC))
    if unknown:
        raise _expected(f"{quoted}: {unknown[0]!r} is not a numeric column",
                        f"arithmetic on {', '.join(NUMERIC)} and numbers")
    return text


def _rate(value: float) -> float:
    """A margin rate: the share of a line's revenue kept after its cost, in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise _expected(f"{value!r} is not a margin rate", "a share of revenue from 0 to 1, "
                        "e.g. 0.35 (cost 65% of the line's amount)")
    return value


Rate = Annotated[float, AfterValidator(_rate)]
CATEGORY = "category"


def _expected(problem: str, expected: str) -> PydanticCustomError:
    """A config error that reads "<problem>; expected <what>" (no pydantic prefix)."""
    message = f"{problem}; expected {expected}"
    return PydanticCustomError("config", "{message}", {"message": message})


class SourceConfig(BaseModel):
    """One source: where to read it and how its columns become the canonical ones.

    `columns` maps canonical (or helper, e.g. `price`) names to source columns; the special value
    `@row_number` makes ids from the 1-based row number (sources with one row per customer and no
    id, such as Hillstrom). `derive` computes canonical columns from mapped numeric ones
    (`amount: quantity * price`), `constants` fills columns the source lacks, `value_map` recodes
    values (e.g. arms), `keep` carries extra source columns through under their own names.
    `duplicates: keep` is for sources without order ids, where two identical lines are two
    purchases; `allow_zero_price` keeps free items (still purchases) instead of quarantining them.
    `decimal: ","` reads numbers written `12,50`. Timestamps outside [`min_timestamp`,
    `max_timestamp`] are implausible (typos, sentinels such as 9999-12-31) and quarantined.
    A line's cost of goods comes from a `cost` column (`columns` or `derive`), else from
    `margin_rate` (one rate for every line: cost = amount x (1 - rate)) or `margin_rates` (a rate
    per value of the `category` column, `margin_rate` for the categories it does not list).
    Everything that can be checked without the data (time zone, encoding, separator, `derive`)
    is checked here, so a mistake names the config file and its key.
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
    decimal: Literal[".", ","] = "."
    header: bool = True
    names: list[str] | None = None
    columns: dict[str, str]
    constants: dict[str, str | float | int | bool] = {}
    derive: dict[str, Annotated[str, AfterValidator(_arithmetic)]] = {}
    value_map: dict[str, dict[str, str]] = {}
    keep: list[str] = []
    timestamp_format: str | None = None
    timezone: str = "UTC"
    min_timestamp: dt.datetime = dt.datetime(1970, 1, 1)
    max_timestamp: dt.datetime = dt.datetime(2100, 1, 1)
    extracted_at: dt.datetime | None = None
    non_product_codes: list[str] = []
    return_order_prefix: str | None = None
    duplicates: Literal["quarantine", "keep"] = "quarantine"
    allow_zero_price: bool = False
    margin_rate: Rate | None = None
    margin_rates: dict[str, Rate] = {}
    id_prefix: str = ""
    base_dir: Path = Path(".")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            b"\0\0\0\0".decode(value)  # LookupError for unknown names and codecs such as base64
        except LookupError:
            raise _expected(f"unknown text encoding {value!r}",
                            "e.g. utf-8, latin-1 or cp1252") from None
        except UnicodeError:
            pass  # a text encoding, for which these bytes mean nothing
        return value

    @field_validator("separator")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if value != WHITESPACE and (len(value) != 1 or value in '"\r\n'):
            raise _expected(f"{value!r} is not a separator",
                            f"one character such as ',', ';', '|' or a tab, or {WHITESPACE!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise _expected(f"unknown time zone {value!r}",
                            "an IANA name such as UTC, Europe/London or America/New_York") from None
        return value

    @field_validator("min_timestamp", "max_timestamp")
    @classmethod
    def _naive_utc(cls, value: dt.datetime) -> dt.datetime:
        """Naive UTC, like the validated timestamps these bounds are compared with."""
        return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value

    @field_validator("derive")
    @classmethod
    def _derive_from_known_columns(cls, derive: dict[str, str], info: ValidationInfo
                                   ) -> dict[str, str]:
        provided = set(info.data.get("columns", {})) | set(info.data.get("constants", {}))
        for canon, text in derive.items():
            missing = sorted(Arithmetic.parse(text).names - provided)
            if missing:
                raise _expected(f"{canon} = {text!r} uses {missing[0]!r}, which is not in "
                                "`columns`, `constants` or an earlier `derive`",
                                "a mapped numeric column")
            provided.add(canon)
        return derive

    @model_validator(mode="after")
    def _check(self) -> SourceConfig:
        if self.min_timestamp >= self.max_timestamp:
            raise ValueError("`min_timestamp` must be before `max_timestamp`")
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
        self._check_margin(provided)
        return self

    def _check_margin(self, provided: set[str]) -> None:
        if self.margin_rate is None and not self.margin_rates:
            return
        if self.table != "transactions":
            raise ValueError("`margin_rate` and `margin_rates` apply to transactions only")
        if COST in provided:
            raise ValueError("`cost` is mapped and a margin rate is set: give one of the two "
                             "(a line's cost, or the rate it is derived from)")
        if self.margin_rates and CATEGORY not in self.columns:
            raise ValueError(f"`margin_rates` needs the `{CATEGORY}` column in `columns` (the "
                             "value each rate is looked up by)")
        if self.margin_rates and self.margin_rate is None:
            raise ValueError("`margin_rates` needs `margin_rate` too: the rate of the "
                             "categories it does not list")

    @property
    def has_cost(self) -> bool:
        """Whether validated lines carry a `cost` (mapped, derived, constant or from a rate)."""
        given = set(self.columns) | set(self.derive) | set(self.constants)
        return COST in given or self.margin_rate is not None

    def line_cost(self, amount: pd.Series, category: pd.Series | None = None
                  ) -> pd.Series | None:
        """Each line's cost from the margin rates (amount x (1 - rate)), or None when the
        config sets no rate (the source's own `cost`, if any, stands)."""
        if self.margin_rate is None:
            return None
        rate = pd.Series(self.margin_rate, index=amount.index, dtype="float64")
        if self.margin_rates and category is not None:
            listed = category.astype("string").str.strip().map(self.margin_rates)
            rate = pd.to_numeric(listed, errors="coerce").astype("float64").fillna(rate)
        return amount.astype("float64") * (1.0 - rate)

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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                        f"{exc.start}); save the config as UTF-8") from None
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
