"""Dirty sources and configs: each ends in one line and exit 2, or in rows that all add up.

The first part pins the fixes one by one (config mistakes, mixed ISO-8601 timestamps,
implausible dates, decimal commas, byte order marks). The second is the probe: every case in
`CASES` goes through `retention data validate` and `retention features build` (in process, and a
representative few as real subprocesses); none may end in a traceback, and for every source that
loads, rows_in = accepted + quarantined, counted per reason. `bench/bench_dirty_sources.py` runs
the same cases and records the figures.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import json
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml

from features.cli import build_cmd, validate_cmd
from features.config import load_source_config
from features.errors import DataError
from features.validate import load

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("validate", "build")  # `retention data validate`, `retention features build`
AS_OF = "2024-03-01"
HEADER = "order,customer,when,product,qty,price\n"
LINES = (
    "1001,c1,2024-01-05 10:00:00,p1,2,3.50\n"
    "1002,c2,2024-01-09 12:30:00,p2,1,12.00\n"
    "1003,c1,2024-02-02 09:15:00,p3,3,1.25\n"
)
BASE: dict[str, object] = {
    "name": "dirty", "table": "transactions", "format": "csv", "path": "tx.csv",
    "extracted_at": "2024-12-31",
    "columns": {"order_id": "order", "customer_id": "customer", "timestamp": "when",
                "product_id": "product", "quantity": "qty", "price": "price"},
    "derive": {"amount": "quantity * price"},
}


def write_source(folder: Path, body: str | bytes, *, data_name: str = "tx.csv",
                 **settings: object) -> Path:
    """A data file and a YAML source config for it (BASE updated by `settings`) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / data_name).write_bytes(body.encode() if isinstance(body, str) else body)
    config = folder / "source.yaml"
    config.write_text(yaml.safe_dump({**BASE, "path": data_name, **settings}))
    return config


def error_of(config: Path) -> str:
    """The one-line DataError of loading and validating `config`."""
    with pytest.raises(DataError) as info:
        load(load_source_config(config))
    message = str(info.value)
    assert "\n" not in message
    return message


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True,
                          text=True, cwd=ROOT)


def assert_one_line_exit_2(proc: subprocess.CompletedProcess[str], expected: str) -> None:
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


# --- config mistakes: one line naming the file, the key and what is expected, exit 2 -----------

CONFIG_MISTAKES = [
    ({"timezone": "Mars/Olympus"},
     "timezone: unknown time zone 'Mars/Olympus'; expected an IANA name such as UTC"),
    ({"encoding": "utf-9"}, "encoding: unknown text encoding 'utf-9'; expected e.g. utf-8"),
    ({"separator": ""}, "separator: '' is not a separator; expected one character"),
    ({"separator": ";;"}, "separator: ';;' is not a separator; expected one character"),
    ({"derive": {"amount": "quantity.__class__"}},
     "derive.amount: 'quantity.__class__': attribute access is not allowed; expected arithmetic"),
    ({"derive": {"amount": "__import__('os')"}},
     "derive.amount: \"__import__('os')\": a function call is not allowed"),
    ({"derive": {"amount": "quantity[0] * price"}},
     "derive.amount: 'quantity[0] * price': indexing is not allowed"),
    ({"derive": {"amount": "quantity * os"}},
     "derive.amount: 'quantity * os': 'os' is not a numeric column"),
    ({"derive": {"amount": "quantity ** price"}},
     "derive.amount: 'quantity ** price': operator ** is not allowed"),
    ({"derive": {"amount": "quantity * cost"}},
     "derive: amount = 'quantity * cost' uses 'cost', which is not in `columns`, `constants`"),
]
CLI_CONFIG_MISTAKES = CONFIG_MISTAKES[:6]


@pytest.mark.parametrize(("settings", "expected"), CONFIG_MISTAKES)
def test_config_mistake_is_one_line_naming_file_and_key(tmp_path, settings, expected):
    config = write_source(tmp_path, HEADER + LINES, **settings)
    assert error_of(config).startswith(f"{config}: {expected}")


@pytest.mark.parametrize(("settings", "expected"), CLI_CONFIG_MISTAKES)
def test_config_mistake_through_the_cli(tmp_path, settings, expected):
    config = write_source(tmp_path, HEADER + LINES, **settings)
    proc = run_cli("data", "validate", "--source", str(config))
    assert_one_line_exit_2(proc, f"{config.name}: {expected}")


def test_derive_arithmetic_is_still_arithmetic(tmp_path):
    config = write_source(tmp_path, HEADER + LINES,
                          derive={"amount": "-(quantity * -price) / 2 + 0.5 * price - 1"})
    result = load(load_source_config(config))
    assert result.accepted["amount"].tolist() == pytest.approx([4.25, 11.0, 1.5])


def test_config_that_is_not_utf8_is_one_line(tmp_path):
    config = tmp_path / "source.yaml"
    config.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"source.yaml: not UTF-8 text \(byte 0xe9 at offset 9\)"):
        load_source_config(config)


# --- timestamps: mixed ISO-8601, formats, implausible dates --------------------------------------

MIXED_ISO = (
    "1,c1,2024-01-05T10:00:00+02:00,p1,1,2\n"
    "2,c2,2024-01-05T08:00:00Z,p1,1,2\n"
    "3,c3,2024-01-05,p1,1,2\n"
    "4,c4,2024-01-05 10:00:00,p1,1,2\n"
    "5,c5,2024-01-05T03:00:00-05:00,p1,1,2\n"
)


@pytest.mark.parametrize(("timezone", "local"), [
    ("UTC", ["2024-01-05 00:00:00", "2024-01-05 10:00:00"]),
    ("Europe/Paris", ["2024-01-04 23:00:00", "2024-01-05 09:00:00"]),
])
def test_mixed_iso_timestamps_are_all_read(tmp_path, timezone, local):
    result = load(load_source_config(write_source(tmp_path, HEADER + MIXED_ISO,
                                                  timezone=timezone)))
    assert result.counts == {}
    expected = ["2024-01-05 08:00:00", "2024-01-05 08:00:00", *local, "2024-01-05 08:00:00"]
    assert result.accepted["timestamp"].tolist() == [pd.Timestamp(t) for t in expected]


def test_timestamp_format_is_kept_when_given(tmp_path):
    body = HEADER + "1,c1,05/01/2024 10:00,p1,1,2\n2,c2,2024-01-05 10:00:00,p1,1,2\n"
    result = load(load_source_config(write_source(tmp_path, body,
                                                  timestamp_format="%d/%m/%Y %H:%M")))
    assert result.counts == {"unparsable_timestamp": 1}
    assert result.accepted["timestamp"].tolist() == [pd.Timestamp("2024-01-05 10:00")]


def test_a_column_in_one_other_format_still_reads_in_the_format_of_its_first_value(tmp_path):
    body = HEADER + ("1,c1,01/05/2024 10:00,p1,1,2\n2,c2,01/06/2024 11:00,p1,1,2\n"
                     "3,c3,2024-01-07T12:00:00Z,p1,1,2\n")
    result = load(load_source_config(write_source(tmp_path, body)))
    assert result.counts == {}
    assert result.accepted["timestamp"].tolist() == [
        pd.Timestamp(t) for t in ("2024-01-05 10:00", "2024-01-06 11:00", "2024-01-07 12:00")]


def test_an_ambiguous_date_in_an_iso_column_is_not_guessed(tmp_path):
    body = HEADER + LINES + "1004,c3,02/03/2024,p1,1,2\n"
    assert load(load_source_config(write_source(tmp_path, body))).counts == {
        "unparsable_timestamp": 1}


@pytest.mark.parametrize(("when", "reason"), [
    ("1000-01-05 10:00:00", "implausible_timestamp"),
    ("0001-01-01", "implausible_timestamp"),
    ("1969-12-31 23:59:59", "implausible_timestamp"),
    ("9999-12-31", "implausible_timestamp"),
    ("2099-01-05", "after_extraction_date"),
])
def test_implausible_dates_have_their_own_reason(tmp_path, when, reason):
    body = HEADER + LINES + f"9,c9,{when},p1,1,2\n"
    assert load(load_source_config(write_source(tmp_path, body))).counts == {reason: 1}


def test_the_floor_of_plausible_dates_is_configurable(tmp_path):
    body = HEADER + LINES + "8,c8,1965-06-01,p1,1,2\n9,c9,1955-06-01,p1,1,2\n"
    result = load(load_source_config(write_source(tmp_path, body, min_timestamp="1960-01-01")))
    assert result.counts == {"implausible_timestamp": 1}
    assert pd.Timestamp("1965-06-01") in result.accepted["timestamp"].tolist()


# --- numbers: decimal commas ----------------------------------------------------------------------

SEMICOLONS = ("order;customer;when;product;qty;price\n1;c1;2024-01-05;p1;2;12,50\n"
              "2;c2;2024-01-06;p1;1.000;1.234,5\n3;c3;2024-01-07;p1;1;7\n")


def test_decimal_commas_read_with_the_option(tmp_path):
    config = write_source(tmp_path, SEMICOLONS, separator=";", decimal=",")
    result = load(load_source_config(config))
    assert result.counts == {}
    assert result.accepted["amount"].tolist() == pytest.approx([25.0, 1_234_500.0, 7.0])


def test_decimal_commas_without_the_option_say_how_to_read_them(tmp_path):
    msg = error_of(write_source(tmp_path, SEMICOLONS, separator=";"))
    assert msg.endswith("tx.csv: column 'price' (price) looks like decimal commas: "
                        "set decimal: ',' (e.g. '12,50')")


def test_a_stray_decimal_comma_is_quarantined_with_its_own_reason(tmp_path):
    body = HEADER + LINES + '1004,c3,2024-02-03 10:00:00,p1,1,"2,50"\n'
    assert load(load_source_config(write_source(tmp_path, body))).counts == {"decimal_comma": 1}


def test_a_lone_point_is_not_a_number_when_the_decimal_is_a_comma(tmp_path):
    body = SEMICOLONS + "4;c4;2024-01-08;p1;1;12.50\n"
    config = write_source(tmp_path, body, separator=";", decimal=",")
    assert load(load_source_config(config)).counts == {"unparsable_number": 1}


def test_an_amount_beyond_exact_money_sums_is_quarantined(tmp_path):
    body = HEADER + LINES + ("1004,c3,2024-02-03 10:00:00,p1,1,99999999999999.99\n"
                             "1005,c3,2024-02-04,p1,1,100000000000000\n")
    result = load(load_source_config(write_source(tmp_path, body)))
    assert result.counts == {"amount_out_of_range": 1}
    assert result.accepted["amount"].max() == pytest.approx(99999999999999.99)


# --- files: byte order marks, separators, no header ------------------------------------------

def test_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    result = load(load_source_config(write_source(tmp_path, codecs.BOM_UTF8 + (HEADER + LINES)
                                                  .encode())))
    assert len(result.accepted) == 3 and result.accepted["order_id"].iloc[0] == "1001"


def test_utf16_file_names_its_encoding(tmp_path):
    body = (HEADER + LINES).encode("utf-16")
    assert error_of(write_source(tmp_path, body)).endswith(
        "tx.csv: the file starts with a utf-16 byte order mark; set `encoding: utf-16` in the "
        "source config")
    result = load(load_source_config(write_source(tmp_path, body, encoding="utf-16")))
    assert len(result.accepted) == 3


def test_wrong_separator_is_named(tmp_path):
    msg = error_of(write_source(tmp_path, (HEADER + LINES).replace(",", ";")))
    assert msg.endswith("the header looks ';'-separated: set `separator: ';'`")


def test_columns_of_a_file_without_header_are_numbered_from_0(tmp_path):
    columns = {"order_id": "0", "customer_id": "1", "timestamp": "2", "product_id": "3",
               "quantity": "4", "price": "5"}
    config = write_source(tmp_path, LINES, header=False, columns=columns)
    assert len(load(load_source_config(config)).accepted) == 3


# --- the probe ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One dirty source: its files, its config (settings over BASE, or raw text), the exit
    code `retention data validate` should end with (0 read, 2 a one-line error) and, where
    given, the quarantine counts per reason it should report."""

    name: str
    body: str | bytes = HEADER + LINES
    settings: dict[str, object] = field(default_factory=dict)
    expect: int = 0
    reasons: dict[str, int] | None = None
    data_name: str = "tx.csv"
    config_text: str | bytes | None = None
    config_name: str = "source.yaml"

    def write(self, folder: Path) -> Path:
        """The case's files in `folder`; returns the config's path."""
        folder.mkdir(parents=True, exist_ok=True)
        body = self.body.encode() if isinstance(self.body, str) else self.body
        (folder / self.data_name).write_bytes(body)
        config = folder / self.config_name
        if self.config_text is None:
            config.write_text(yaml.safe_dump({**BASE, "path": self.data_name, **self.settings}))
        else:
            text = self.config_text
            config.write_bytes(text.encode() if isinstance(text, str) else text)
        return config


def _tokyo_parquet() -> bytes:
    """LINES as Parquet, numbers as floats and times as Tokyo-aware timestamps."""
    frame = pd.read_csv(io.StringIO(HEADER + LINES), dtype=str)
    frame["when"] = pd.to_datetime(frame["when"]).dt.tz_localize("Asia/Tokyo")
    frame[["qty", "price"]] = frame[["qty", "price"]].astype(float)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


ROW = "1004,c3,2024-02-03 10:00:00,p1,1,2.00\n"


def with_lines(*quantity_price: str) -> str:
    """HEADER + LINES and one more line of customer c3 per "quantity,price" given."""
    return HEADER + LINES + "".join(f"{1005 + i},c3,2024-02-03 10:00:00,p1,{qp}\n"
                                    for i, qp in enumerate(quantity_price))
CUSTOMERS = {"columns": {"customer_id": "customer", "signup_at": "when",
                         "consent_email": "product"}, "table": "customers", "derive": {}}
CAMPAIGN = {"columns": {"customer_id": "customer", "campaign_id": "product", "arm": "order",
                        "visit": "qty", "sent_at": "when"}, "table": "campaign_log", "derive": {}}

CASES: tuple[Case, ...] = (
    # clean controls
    Case("clean"),
    Case("clean gzip", gzip.compress((HEADER + LINES).encode()), data_name="tx.csv.gz"),
    Case("clean toml", config_name="source.toml", config_text=(
        'name = "t"\nformat = "csv"\npath = "tx.csv"\n[columns]\ncustomer_id = "customer"\n'
        'order_id = "order"\ntimestamp = "when"\nquantity = "qty"\nprice = "price"\n'
        '[derive]\namount = "quantity * price"\n')),
    # encodings and byte order marks
    Case("latin-1 read as utf-8", (HEADER + LINES + ROW.replace("p1", "caf\xe9"))
         .encode("latin-1"), expect=2),
    Case("latin-1 declared", (HEADER + LINES + ROW.replace("p1", "caf\xe9")).encode("latin-1"),
         {"encoding": "latin-1"}),
    Case("cp1252 euro sign", (HEADER + LINES + ROW.replace("p1", "\u20ac5")).encode("cp1252"),
         {"encoding": "cp1252"}),
    Case("utf-8 byte order mark", codecs.BOM_UTF8 + (HEADER + LINES).encode(), reasons={}),
    Case("utf-16 read as utf-8", (HEADER + LINES).encode("utf-16"), expect=2),
    Case("utf-16 declared", (HEADER + LINES).encode("utf-16"), {"encoding": "utf-16"},
         reasons={}),
    # empty, truncated and non-CSV files
    Case("empty file", "", expect=2),
    Case("blank lines only", "\n\n  \n", expect=2),
    Case("header only", HEADER, expect=2),
    Case("header and blank lines", HEADER + "\n\n", expect=2),
    Case("binary file", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", expect=2),
    Case("corrupt gzip", b"\x1f\x8b\x08\x00garbage", data_name="tx.csv.gz", expect=2),
    Case("data file missing", settings={"path": "nowhere.csv"}, expect=2),
    Case("csv read as parquet", settings={"format": "parquet"}, expect=2),
    # shape: ragged rows, separators, quotes, line endings, headers
    Case("row with an extra field", with_lines("1,2,extra"), expect=2),
    Case("row with missing fields", HEADER + LINES + "1005,c3,2024-02-03\n"),
    Case("unclosed quote", HEADER + LINES + '1005,"c3,2024-02-03 10:00:00,p1,1,2\n', expect=2),
    Case("semicolons read as commas", (HEADER + LINES).replace(",", ";"), expect=2),
    Case("tabs declared", (HEADER + LINES).replace(",", "\t"), {"separator": "\t"}),
    Case("whitespace separated", "order customer when product qty price\n"
         "1001  c1\t2024-01-05T10:00:00 p1 2   3.50\n1002 c2 2024-01-09 p2 1 12\n",
         {"separator": "whitespace"}),
    Case("crlf line endings", (HEADER + LINES).replace("\n", "\r\n")),
    Case("no final newline", (HEADER + LINES).rstrip("\n")),
    Case("no header, numbered columns", LINES, {"header": False, "columns": {
        "order_id": "0", "customer_id": "1", "timestamp": "2", "product_id": "3",
        "quantity": "4", "price": "5"}}),
    Case("no header, named columns", LINES, {"header": False, "names": [
        "order", "customer", "when", "product", "qty", "price"]}),
    Case("missing column", HEADER.replace("customer", "client") + LINES, expect=2),
    Case("duplicate header names", HEADER.replace("product", "qty") + LINES, expect=2),
    Case("blank header name", HEADER.replace("product", "") + LINES, expect=2),
    # timestamps
    Case("mixed iso-8601", HEADER + MIXED_ISO, reasons={}),
    Case("mixed iso-8601 in Paris", HEADER + MIXED_ISO, {"timezone": "Europe/Paris"},
         reasons={}),
    Case("us dates among iso", HEADER + LINES + "1005,c3,02/03/2024,p1,1,2\n",
         reasons={"unparsable_timestamp": 1}),
    Case("garbage timestamps", HEADER + LINES + "1005,c3,yesterday,p1,1,2\n1006,c3,,p1,1,2\n"),
    Case("implausible dates", HEADER + LINES + "1005,c3,1000-01-01,p1,1,2\n"
         "1006,c3,9999-12-31,p1,1,2\n1007,c3,0001-01-01T00:00:00Z,p1,1,2\n",
         reasons={"implausible_timestamp": 3}),
    Case("dst gap and overlap", HEADER + LINES + "1005,c3,2024-03-31 02:30:00,p1,1,2\n"
         "1006,c3,2024-10-27 02:30:00,p1,1,2\n", {"timezone": "Europe/Paris"}),
    Case("values beside timestamp_format", HEADER + LINES, {"timestamp_format": "%d/%m/%Y"}),
    Case("every row after extraction", HEADER + LINES, {"extracted_at": "2020-01-01"}),
    Case("parquet with tokyo timestamps", _tokyo_parquet(), {"format": "parquet"},
         data_name="tx.parquet"),
    # numbers
    Case("decimal commas declared", SEMICOLONS, {"separator": ";", "decimal": ","}, reasons={}),
    Case("decimal commas undeclared", SEMICOLONS, {"separator": ";"}, expect=2),
    Case("one stray decimal comma", with_lines('1,"2,50"'), reasons={"decimal_comma": 1}),
    Case("nan and inf", with_lines("1,nan", "1,inf", "-inf,2", "NaN,2"),
         reasons={"unparsable_number": 2, "non_finite_price": 2}),
    Case("huge numbers", with_lines("1e308,10", "1,1e400", "1,123456789012345678901234567890",
                                    "1,99999999999999.99"),
         reasons={"non_finite_price": 2, "amount_out_of_range": 1}),
    Case("negative quantities", HEADER + LINES + "C1005,c1,2024-02-03 10:00:00,p1,-2,3.50\n"
         "1006,c2,2024-02-04,p2,-1,-12.00\n"),
    Case("only returns", HEADER + "1,c1,2024-01-05,p1,-1,2\n2,c2,2024-01-06,p1,-3,1\n"),
    Case("zero quantities", with_lines("0,2")),
    Case("thousands separators", with_lines('1,"1,234.50"')),
    Case("division by zero in derive", settings={"derive": {"amount": "price / (quantity - 2)"}}),
    Case("constant derive", settings={"derive": {"amount": "1 / 0"}}),
    # ids and duplicates
    Case("duplicate lines", HEADER + LINES + LINES, reasons={"duplicate_line": 3}),
    Case("excel float ids and padding", HEADER + " 2001 , 12345.0 ,2024-01-05,p1,1,2\n"),
    Case("unicode and long ids", HEADER + "1," + "\u00e9" * 5000 + ",2024-01-05,p1,1,2\n"
         "2,\U0001f600,2024-01-06,p1,1,2\n"),
    Case("all ids missing", HEADER + ",,2024-01-05,p1,1,2\n, ,2024-01-06,p1,1,2\n"),
    # other tables
    Case("customers table", HEADER + LINES + LINES, CUSTOMERS),
    Case("campaign log table", HEADER + "treatment,c1,2024-01-05,camp,1,1\n"
         "holdout,c2,2024-01-05,camp,0,1\ncontrol,c3,2024-01-05,,1,1\n", CAMPAIGN),
    # config files
    Case("unknown key", settings={"colums": {"x": "y"}}, expect=2),
    Case("bad yaml", config_text="name: [dirty\nformat: csv\n", expect=2),
    Case("bad toml", config_text="name = \n", config_name="source.toml", expect=2),
    Case("yaml list", config_text="- name\n- format\n", expect=2),
    Case("empty config", config_text="", expect=2),
    Case("config not utf-8", config_text="name: caf\xe9\n".encode("latin-1"), expect=2),
    Case("config without amount", settings={"derive": {}}, expect=2),
    Case("bad extracted_at", settings={"extracted_at": "last tuesday"}, expect=2),
    Case("floor after ceiling", settings={"min_timestamp": "2200-01-01"}, expect=2),
    Case("bad decimal option", settings={"decimal": ";"}, expect=2),
    Case("unknown table", settings={"table": "orders"}, expect=2),
    Case("binary codec as encoding", settings={"encoding": "base64"}, expect=2),
    Case("derive longer than a formula", settings={"derive": {"amount": "-" * 100_000 + "price"}},
         expect=2),
    *(Case(f"config mistake {i}: {expected.split(':')[0]}", settings=settings, expect=2)
      for i, (settings, expected) in enumerate(CONFIG_MISTAKES, 1)),
)


@dataclass
class Outcome:
    """How one command ended: its exit code, its last line (or traceback), the counts."""

    code: int
    message: str = ""
    summary: dict[str, object] | None = None
    quarantine_rows: int | None = None

    @property
    def counts(self) -> dict[str, object] | None:
        """The summary without the data's path (which differs between runs' folders)."""
        return None if self.summary is None else {
            k: v for k, v in self.summary.items() if k != "source"}

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.message

    @property
    def balanced(self) -> bool | None:
        """rows_in == accepted + quarantined, and the quarantine counts add up (None: no data)."""
        if self.summary is None:
            return None
        s = self.summary
        reasons = s["reasons"]
        assert isinstance(reasons, dict)
        return (s["rows_in"] == s["accepted"] + s["quarantined"]
                and s["quarantined"] == sum(reasons.values()) == self.quarantine_rows)


def _summary(folder: Path) -> tuple[dict[str, object] | None, int | None]:
    if not (folder / "validation.json").is_file():
        return None, None
    summary = json.loads((folder / "validation.json").read_text())
    return summary, len(pd.read_parquet(folder / "quarantine.parquet"))


def run_in_process(case: Case, folder: Path, command: str) -> Outcome:
    """Run `retention data validate` or `features build` on a case as the CLI does, in process:
    a DataError is exit 2, any other exception a traceback (exit 1)."""
    config = case.write(folder)
    out = folder / "out"
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet):
            if command == "validate":
                validate_cmd(source=config, quarantine=out / "_validation")
            else:
                build_cmd(source=config, as_of=AS_OF, out=out, horizon="90d", lookback="365d",
                          backend=None)
        code, message = 0, ""
    except DataError as exc:
        code, message = 2, str(exc)
    except Exception:  # noqa: BLE001 - the probe counts what would be a traceback
        code, message = 1, traceback.format_exc()
    return Outcome(code, message, *_summary(out / "_validation"))


def run_subprocess(case: Case, folder: Path, command: str) -> Outcome:
    """The same through the real `retention` program."""
    config = case.write(folder)
    out = folder / "out"
    args = (["data", "validate", "--source", str(config), "--quarantine", str(out / "_validation")]
            if command == "validate" else
            ["features", "build", "--source", str(config), "--as-of", AS_OF, "--out", str(out)])
    proc = run_cli(*args)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    message = proc.stderr if "Traceback" in proc.stderr else (lines[-1] if lines else "")
    return Outcome(proc.returncode, message, *_summary(out / "_validation"))


def probe(case: Case, folder: Path) -> dict[str, Outcome]:
    """Validate, then build, in process: the two commands' outcomes on one case."""
    return {command: run_in_process(case, folder / command, command)
            for command in COMMANDS}


def expected_build_code(validated: Outcome) -> int:
    """Build succeeds exactly when validation did and accepted transactions are left."""
    s = validated.summary
    loads = validated.code == 0 and s is not None
    return 0 if loads and s["table"] == "transactions" and s["accepted"] else 2


def check(case: Case, outcomes: dict[str, Outcome]) -> None:
    """No traceback, one-line errors, rows that add up, and the exits the case expects."""
    validated, built = outcomes["validate"], outcomes["build"]
    for command, outcome in outcomes.items():
        assert not outcome.traceback and outcome.code in (0, 2), (command, outcome.message)
        assert "\n" not in outcome.message, (command, outcome.message)
        if outcome.code == 0:
            assert outcome.balanced, (command, outcome.summary)
    assert validated.code == case.expect, validated.message
    if case.reasons is not None:
        assert validated.summary is not None and validated.summary["reasons"] == case.reasons
    assert built.code == expected_build_code(validated), built.message
    if built.summary is not None:
        assert built.counts == validated.counts


def test_the_probe_has_at_least_50_cases_with_distinct_names():
    assert len(CASES) >= 50 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_dirty_case_ends_in_one_line_or_rows_that_add_up(tmp_path, case):
    check(case, probe(case, tmp_path))


CLI_CASES = ("utf-8 byte order mark", "mixed iso-8601 in Paris", "implausible dates",
             "decimal commas undeclared")


@pytest.mark.parametrize("name", CLI_CASES)
def test_dirty_case_through_the_real_cli(tmp_path, name):
    case = next(c for c in CASES if c.name == name)
    outcomes = {command: run_subprocess(case, tmp_path / command, command)
                for command in COMMANDS}
    check(case, outcomes)
    in_process = probe(case, tmp_path / "in-process")
    for command, outcome in outcomes.items():
        assert outcome.code == in_process[command].code
        assert outcome.counts == in_process[command].counts
