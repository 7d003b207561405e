"""Bad input: each case gets its exact one-line error, or its rows quarantined with a reason."""

from __future__ import annotations

import datetime as dt
import gzip
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from features.config import load_source_config
from features.errors import DataError
from features.validate import load

HEADER = "Invoice,StockCode,Quantity,InvoiceDate,Price,Customer ID\n"
GOOD = "1001,P1,2,2011-01-05 10:00:00,3.50,12345.0\n"
NOW = dt.datetime(2011, 12, 31)


def source(tmp_path: Path, body: str | bytes, name: str = "tx.csv", **extra) -> Path:
    data = tmp_path / name
    if isinstance(body, str):
        body = body.encode()
    if name.endswith(".gz"):
        body = gzip.compress(body)
    data.write_bytes(body)
    cfg = {
        "name": "test", "table": "transactions", "format": "csv", "path": name,
        "extracted_at": "2011-12-10",
        "columns": {"customer_id": "Customer ID", "order_id": "Invoice",
                    "timestamp": "InvoiceDate", "product_id": "StockCode",
                    "quantity": "Quantity", "price": "Price"},
        "derive": {"amount": "quantity * price"},
        "return_order_prefix": "C", "non_product_codes": ["POST"],
        **extra,
    }
    path = tmp_path / "source.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def error_of(cfg_path: Path) -> str:
    with pytest.raises(DataError) as info:
        load(load_source_config(cfg_path), now=NOW)
    message = str(info.value)
    assert "\n" not in message
    return message


def reasons_of(cfg_path: Path) -> dict[str, int]:
    result = load(load_source_config(cfg_path), now=NOW)
    assert result.rows_in == len(result.accepted) + result.n_quarantined
    return result.counts


# --- malformed files: one line naming the file, the column and what was expected ---------------

def test_missing_column(tmp_path):
    body = HEADER.replace(",Customer ID", ",Country") + GOOD
    msg = error_of(source(tmp_path, body))
    assert "tx.csv: missing column 'Customer ID' (expected for customer_id)" in msg
    assert "found columns: Invoice, StockCode, Quantity, InvoiceDate, Price, Country" in msg


def test_misnamed_column_suggests_the_close_one(tmp_path):
    msg = error_of(source(tmp_path, HEADER.replace("Customer ID", "CustomerID") + GOOD))
    assert "missing column 'Customer ID'" in msg and "did you mean 'CustomerID'?" in msg


def test_wrong_encoding(tmp_path):
    body = (HEADER + GOOD.replace("P1", "CAF\xc9")).encode("latin-1")
    msg = error_of(source(tmp_path, body))
    assert "tx.csv: not valid utf-8 text (byte 0xc9" in msg and "set `encoding:`" in msg


def test_latin1_file_reads_when_the_config_says_so(tmp_path):
    body = (HEADER + GOOD.replace("P1", "CAF\xc9")).encode("latin-1")
    assert reasons_of(source(tmp_path, body, encoding="latin-1")) == {}


def test_empty_file(tmp_path):
    assert error_of(source(tmp_path, "")).endswith(
        "tx.csv: file is empty (expected a CSV with a header line)")


def test_header_only(tmp_path):
    assert error_of(source(tmp_path, HEADER)).endswith("tx.csv: no data rows (only a header line)")


def test_binary_file_is_not_a_csv(tmp_path):
    msg = error_of(source(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))
    assert msg.endswith("tx.csv: not a CSV file (binary content)")


def test_corrupt_gzip(tmp_path):
    cfg = source(tmp_path, HEADER + GOOD, name="tx.csv.gz")
    (tmp_path / "tx.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    assert "tx.csv.gz: cannot read compressed file" in error_of(cfg)


def test_file_not_found(tmp_path):
    cfg = source(tmp_path, HEADER + GOOD)
    (tmp_path / "tx.csv").unlink()
    assert error_of(cfg).endswith("tx.csv: file not found")


def test_not_a_parquet_file(tmp_path):
    cfg = source(tmp_path, HEADER + GOOD, name="tx.parquet", format="parquet")
    assert "tx.parquet: not a readable Parquet file" in error_of(cfg)


def test_config_with_unknown_key(tmp_path):
    cfg = source(tmp_path, HEADER + GOOD, colums={"x": "y"})
    assert error_of(cfg).endswith("source.yaml: colums: Extra inputs are not permitted")


def test_config_without_amount(tmp_path):
    cfg = source(tmp_path, HEADER + GOOD, derive={})
    expected = "table 'transactions' needs amount in `columns`, `derive` or `constants`"
    assert expected in error_of(cfg)


def test_postgres_unreachable(tmp_path):
    cfg = source(tmp_path, "", format="postgres", url="postgresql://x@127.0.0.1:1/none",
                 sql_table="tx")
    assert error_of(cfg).startswith("postgres: cannot connect:")


@pytest.mark.postgres
def test_postgres_missing_table(tmp_path, pg_url):
    cfg = source(tmp_path, "", format="postgres", url=pg_url, sql_table="no_such_table")
    assert error_of(cfg).startswith('postgres no_such_table: relation "no_such_table" does not')


# --- rows: quarantined with a reason, and counted ---------------------------------------------

@pytest.mark.parametrize(("line", "reason"), [
    ("1002,P1,2,2011-01-05 10:00:00,3.50,\n", "missing_customer_id"),
    ("1002,P1,2,2011-01-05 10:00:00,3.50,   \n", "missing_customer_id"),
    (",P1,2,2011-01-05 10:00:00,3.50,12345\n", "missing_order_id"),
    ("1002,P1,2,not a date,3.50,12345\n", "unparsable_timestamp"),
    ("1002,P1,2,2011-13-45 10:00:00,3.50,12345\n", "unparsable_timestamp"),
    ("1002,P1,2,2011-12-20 10:00:00,3.50,12345\n", "after_extraction_date"),
    ("1002,POST,1,2011-01-05 10:00:00,18.00,12345\n", "non_product"),
    ("1002,P1,two,2011-01-05 10:00:00,3.50,12345\n", "unparsable_number"),
    ("1002,P1,2,2011-01-05 10:00:00,,12345\n", "unparsable_number"),
    ("1002,P1,2,2011-01-05 10:00:00,inf,12345\n", "non_finite_price"),
    ("1002,P1,2,2011-01-05 10:00:00,0.00,12345\n", "non_positive_price"),
    ("1002,P1,2,2011-01-05 10:00:00,-4.00,12345\n", "non_positive_price"),
    (GOOD, "duplicate_line"),
])
def test_bad_row_is_quarantined_with_its_reason(tmp_path, line, reason):
    assert reasons_of(source(tmp_path, HEADER + GOOD + line)) == {reason: 1}


def test_future_timestamp_without_extraction_date(tmp_path):
    cfg = source(tmp_path, HEADER + GOOD + "1002,P1,2,2099-01-05 10:00:00,3.50,12345\n",
                 extracted_at=None)
    assert reasons_of(cfg) == {"future_timestamp": 1}


def test_returns_stay_marked_as_returns(tmp_path):
    body = HEADER + GOOD + "C1003,P1,-1,2011-01-06 10:00:00,3.50,12345.0\n"
    result = load(load_source_config(source(tmp_path, body)), now=NOW)
    assert result.counts == {}
    ret = result.accepted[result.accepted["is_return"]]
    assert len(ret) == 1 and ret["amount"].iloc[0] == pytest.approx(-3.5)
    assert set(result.accepted["customer_id"]) == {"12345"}


def test_quarantine_accounting_and_rows(tmp_path):
    lines = [GOOD, GOOD, "1002,P1,2,bad,3.50,12345\n", "1003,P2,1,2011-02-01 09:00:00,2.0,\n",
             "1004,P2,1,2011-02-01 09:00:00,2.0,777\n"]
    result = load(load_source_config(source(tmp_path, HEADER + "".join(lines))), now=NOW)
    assert result.rows_in == 5 and len(result.accepted) == 2
    assert result.counts == {"missing_customer_id": 1, "unparsable_timestamp": 1,
                             "duplicate_line": 1}
    q = result.quarantine.sort_values("row")
    assert q["row"].tolist() == [2, 3, 4]
    assert q["reason"].tolist() == ["duplicate_line", "unparsable_timestamp",
                                    "missing_customer_id"]
    assert q["InvoiceDate"].tolist()[1] == "bad"


def test_customers_table(tmp_path):
    (tmp_path / "c.csv").write_text("id,signup,email_ok\nc1,2020-01-01,yes\nc1,2020-01-02,no\n"
                                    ",2020-01-01,yes\nc2,,maybe\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "c", "table": "customers", "format": "csv",
                                   "path": "c.csv", "columns": {"customer_id": "id",
                                   "signup_at": "signup", "consent_email": "email_ok"}}))
    result = load(load_source_config(cfg), now=NOW)
    assert result.counts == {"missing_customer_id": 1, "unparsable_timestamp": 1,
                             "duplicate_customer_id": 1}
    assert result.accepted["consent_email"].tolist() == [True]


def test_campaign_log_unknown_arm(tmp_path):
    (tmp_path / "l.csv").write_text("cust,camp,arm,visit\n1,c,treatment,1\n2,c,Control,0\n"
                                    "3,c,holdout,0\n4,,control,1\n")
    cfg = tmp_path / "l.yaml"
    cfg.write_text(yaml.safe_dump({"name": "l", "table": "campaign_log", "format": "csv",
                                   "path": "l.csv", "columns": {"customer_id": "cust",
                                   "campaign_id": "camp", "arm": "arm", "visit": "visit"}}))
    result = load(load_source_config(cfg), now=NOW)
    assert result.counts == {"missing_campaign_id": 1, "unknown_arm": 1}
    assert result.accepted["arm"].tolist() == ["treatment", "control"]


# --- the CLI: one line on stderr, exit 2, no traceback -----------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1])


def test_cli_bad_file_prints_one_line(tmp_path):
    cfg = source(tmp_path, HEADER.replace("Customer ID", "Cust") + GOOD)
    proc = run_cli("data", "validate", "--source", str(cfg))
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1
    assert lines[0].startswith("error: ") and "missing column 'Customer ID'" in lines[0]


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--as-of", "2011-31-31", "--as-of: cannot read '2011-31-31'; expected YYYY-MM-DD"),
    ("--horizon", "three months", "cannot read 'three months'; expected e.g. 90d or 13w"),
])
def test_cli_bad_option_values(tmp_path, option, value, expected):
    cfg = source(tmp_path, HEADER + GOOD)
    args = {"--as-of": "2011-06-01", "--horizon": "90d", option: value}
    proc = run_cli("features", "build", "--source", str(cfg), "--out", str(tmp_path / "o"),
                   *[x for kv in args.items() for x in kv])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert expected in proc.stderr


def test_accepted_frame_follows_the_contract(tmp_path):
    result = load(load_source_config(source(tmp_path, HEADER + GOOD)), now=NOW)
    row = result.accepted.iloc[0]
    assert row["timestamp"] == pd.Timestamp("2011-01-05 10:00:00")
    assert row["amount"] == pytest.approx(7.0) and not row["is_return"]
    assert str(result.accepted["timestamp"].dtype) == "datetime64[us]"


def test_synthetic_injected_bad_rows_are_each_quarantined_with_their_reason(tmp_path):
    from features.synthetic import SyntheticConfig, generate, write

    data = generate(SyntheticConfig(n_customers=600, seed=3, dirty_fraction=0.05))
    paths = write(data, tmp_path)
    result = load(load_source_config(paths["transactions"]))
    assert result.counts == {k: v for k, v in data.injected.items() if v}
    assert result.rows_in == len(data.transactions) == len(result.accepted) + result.n_quarantined


def test_toml_config_reads_like_yaml(tmp_path):
    source(tmp_path, HEADER + GOOD)
    (tmp_path / "source.toml").write_text(
        'name = "t"\nformat = "csv"\npath = "tx.csv"\n[columns]\ncustomer_id = "Customer ID"\n'
        'order_id = "Invoice"\ntimestamp = "InvoiceDate"\nquantity = "Quantity"\n'
        'price = "Price"\n[derive]\namount = "quantity * price"\n')
    result = load(load_source_config(tmp_path / "source.toml"), now=NOW)
    assert len(result.accepted) == 1 and result.accepted["amount"].iloc[0] == pytest.approx(7.0)


def test_invalid_toml_is_one_line(tmp_path):
    (tmp_path / "bad.toml").write_text("name = \n")
    with pytest.raises(DataError, match=r"bad.toml: not valid toml: "):
        load_source_config(tmp_path / "bad.toml")
