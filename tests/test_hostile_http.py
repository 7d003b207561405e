"""A hostile client against the real service on loopback: hundreds of hand-made requests (wrong
methods, keys, paths, headers, content types; empty, huge, deep and malformed JSON; wrong types,
NaN and Infinity, unicode, boundary datetimes and numbers) and not one answer may be a 5xx;
every 4xx is the one JSON error shape. Also what a spreadsheet makes of customer ids that look
like formulas, in `/risk_list.csv` and in `retention score --out x.csv`.

The service here serves a copy of the trained snapshot in which a few customers have ids that
start like spreadsheet formulas (ids come from the source data, which nobody sanitised).
"""

from __future__ import annotations

import collections
import http.client
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
import pytest

from features.csv_safe import FORMULA_START, defuse, write_csv
from serving.schemas import FeatureRow
from tests.conftest import END, KEY, Deployment, Trained, run

FORMULA_IDS = ("=HYPERLINK(\"http://evil.example\",\"x\")", "+SUM(1,1)", "-2+3", "@cmd")
API = ("/score", "/score_features", "/risk_list", "/risk_list.csv", "/recommend", "/feedback",
       "/metadata")
HEALTH = ("/healthz", "/livez", "/readyz")
JSON = "application/json"
OK, BAD = frozenset({200}), frozenset({422})


@dataclass(frozen=True)
class Case:
    """One raw HTTP request and the statuses it may answer."""

    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str | bytes], ...] = (("X-API-Key", KEY), ("Content-Type", JSON))
    expect: frozenset[int] = BAD


@dataclass
class Answer:
    case: Case
    status: int
    content_type: str
    body: bytes
    problems: list[str] = field(default_factory=list)


def as_json(payload: object) -> bytes:
    """JSON text, with NaN and Infinity written as the bare literals Python's json accepts."""
    return json.dumps(payload, allow_nan=True).encode()


def valid_payloads(known_id: str, row: dict) -> dict[str, dict]:
    """One request each endpoint answers with 200."""
    event = {"event": "sent", "customer_id": known_id, "campaign_id": "hostile",
             "offer_id": "winback-10", "channel": "email", "revenue": 0.0,
             "at": "2023-12-01T10:00:00+01:00"}
    return {"/score": {"customer_ids": [known_id]}, "/score_features": {"rows": [row]},
            "/risk_list": {"top_n": 3, "filters": {"bands": ["high"]}},
            "/risk_list.csv": {"top_n": 3}, "/feedback": {"events": [event]},
            "/recommend": {"customer_ids": [known_id], "k": 2, "campaign_id": "hostile"},
            "/metadata": {}}


WRONG_VALUES: tuple[tuple[str, object], ...] = (
    ("null", None), ("true", True), ("string", "12"), ("empty string", ""), ("list", [1]),
    ("object", {"a": 1}), ("NaN", math.nan), ("Infinity", math.inf), ("-Infinity", -math.inf),
    ("huge int", 10**30), ("-huge int", -(10**30)), ("1e308", 1e308), ("negative", -1),
    ("fraction", 0.5), ("lone surrogate", "\ud800"), ("NUL", "\x00"), ("long string", "x" * 5000),
)
MOMENTS = ("0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00-14:00", "9999-12-31T23:59:59-14:00",
           "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59.999999",
           "1999-12-31T23:59:59Z", "2000-01-01T00:00:00+01:00", "2100-01-01T00:00:00Z",
           "2024-02-30T00:00:00", "2024-01-01T24:00:00", "2024-01-01T00:00:00+24:00",
           "2024-01-01", "20240101T000000", "not a date", "", "1e20", "+275760-09-13T00:00:00Z")
DATES = ("0001-01-01", "9999-12-31", "1999-12-31", "2100-01-02", "2024-02-30", "2024-13-01",
         "2024-01-01T00:00:00", "", "x")


def hostile_cases(known_id: str, row: dict) -> list[Case]:
    """The probe: every case with the statuses it may answer (a 5xx is never among them)."""
    valid = valid_payloads(known_id, row)
    cases: list[Case] = []
    add = cases.append
    for path, payload in valid.items():
        add(Case(f"valid {path}", "POST", path, as_json(payload), expect=OK))
    # methods
    for path in API:
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"):
            add(Case(f"{method} {path}", method, path, expect=frozenset({405})))
        add(Case(f"HEAD {path}", "HEAD", path, expect=frozenset({405})))
    for path in (*HEALTH, "/docs.json", "/"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            add(Case(f"{method} {path}", method, path, b"{}", expect=frozenset({405})))
        add(Case(f"GET {path} without key", "GET", path, headers=(), expect=OK))
        add(Case(f"HEAD {path}", "HEAD", path, headers=(), expect=OK))
    # keys
    wrong_keys: list[tuple[str, tuple]] = [
        ("no key", ()), ("empty key", (("X-API-Key", ""),)),
        ("wrong key", (("X-API-Key", "nope"),)),
        ("key prefix", (("X-API-Key", KEY[:-1]),)), ("key plus", (("X-API-Key", KEY + "x"),)),
        ("key upper", (("X-API-Key", KEY.upper()),)), ("key padded", (("X-API-Key", f" {KEY}x"),)),
        ("latin-1 key", (("X-API-Key", "tést".encode("latin-1")),)),
        ("wrong then right", (("X-API-Key", "nope"), ("X-API-Key", KEY))),
        ("right then wrong", (("X-API-Key", KEY), ("X-API-Key", "nope"))),
        ("right twice", (("X-API-Key", KEY), ("X-API-Key", KEY))),
        ("key as bearer", (("Authorization", f"Bearer {KEY}"),)),
        ("key in other header", (("X-Api-Token", KEY),)),
    ]
    for path in (*API, "/metrics", "/nope"):
        for name, keys in wrong_keys:
            headers = (*keys, ("Content-Type", JSON))
            add(Case(f"{name} {path}", "POST", path, as_json(valid.get(path, {})), headers,
                     frozenset({401})))
    add(Case("lower-case key header", "POST", "/score", as_json(valid["/score"]),
             (("x-api-key", KEY), ("Content-Type", JSON)), OK))
    add(Case("metrics with key", "GET", "/metrics", headers=(("X-API-Key", KEY),), expect=OK))
    # paths: open ones exactly, never by prefix
    for path in ("/healthzanything", "/healthz/", "/healthz/../score", "/docs.json/../score",
                 "/docs.jsonx", "/static_content/../../../../etc/passwd", "/static_content/",
                 "/static_content/nope.js", "/%2e%2e/score", "//score", "/./score", "/SCORE",
                 "/score/", "/score%00", "/" + "a" * 4000, "/readyz?x=1&x=2", "/metrics/x"):
        add(Case(f"no key {path[:40]}", "POST" if "score" in path else "GET", path,
                 as_json(valid["/score"]), headers=(("Content-Type", JSON),),
                 expect=frozenset({200}) if path == "/readyz?x=1&x=2" else frozenset({401})))
        add(Case(f"with key {path[:40]}", "POST" if "score" in path else "GET", path,
                 as_json(valid["/score"]), expect=frozenset({200, 307, 404, 405})))
    for asset in ("/static_content/swagger-ui.css", "/static_content/swagger-initializer.js",
                  "/docs"):
        add(Case(f"docs asset {asset}", "GET", asset, headers=(),
                 expect=frozenset({200, 307})))
    # content types and bodies
    for path in API:
        body = as_json(valid[path])
        for kind in ("text/plain", "application/x-www-form-urlencoded", "application/xml",
                     "multipart/form-data; boundary=x", "application/jsonx", "text/json",
                     "application/vnd.bentoml+pickle", "application/json-patch+json"):
            add(Case(f"{kind} {path}", "POST", path, body,
                     (("X-API-Key", KEY), ("Content-Type", kind)), frozenset({415})))
        for kind in ("application/json; charset=utf-8", "APPLICATION/JSON",
                     "application/json;charset=latin-1"):
            add(Case(f"{kind} {path}", "POST", path, body,
                     (("X-API-Key", KEY), ("Content-Type", kind)), OK))
        add(Case(f"two content types {path}", "POST", path, body,
                 (("X-API-Key", KEY), ("Content-Type", JSON), ("Content-Type", "text/plain")),
                 frozenset({200, 415})))
        optional = path in ("/risk_list", "/risk_list.csv", "/metadata")
        add(Case(f"no body, no type {path}", "POST", path, None, (("X-API-Key", KEY),),
                 OK if optional else BAD))
        add(Case(f"empty body {path}", "POST", path, b"", expect=OK if optional else BAD))
        add(Case(f"body without type {path}", "POST", path, body, (("X-API-Key", KEY),),
                 frozenset({415})))
        add(Case(f"over the limit {path}", "POST", path, b"{" + b" " * 2_100_000 + b"}",
                 expect=frozenset({413})))
        for name, raw in (("null", b"null"), ("array", b"[]"), ("string", b'"x"'), ("number", b"1"),
                          ("true", b"true"), ("NaN", b"NaN"), ("Infinity", b"Infinity"),
                          ("not json", b"{not json"), ("truncated", body[:-1]),
                          ("trailing", body + b"x"), ("bom", b"\xef\xbb\xbf" + body),
                          ("latin-1", b'{"customer_ids": ["\xe9"]}'),
                          ("utf-16", body.decode().encode("utf-16")),
                          ("deep arrays", b"[" * 50_000 + b"]" * 50_000),
                          ("deep objects", b'{"a":' * 20_000 + b"1" + b"}" * 20_000),
                          ("wide object", as_json({f"k{i}": i for i in range(50_000)})),
                          ("huge number", b'{"top_n": 1' + b"0" * 4000 + b"}"),
                          ("1e400", b'{"top_n": 1e400, "k": 1e400}'),
                          ("unknown field", as_json({**valid[path], "zzz": 1}))):
            expect = frozenset({200, 422}) if name in ("wide object", "unknown field") else BAD
            if optional and name in ("huge number", "1e400", "wide object", "unknown field"):
                expect = frozenset({200, 422})
            add(Case(f"{name} body {path}", "POST", path, raw, expect=expect))
    # wrong types and boundary values, field by field
    targets = {"/score": ("customer_ids", valid["/score"]),
               "/recommend": (None, valid["/recommend"]),
               "/risk_list": (None, valid["/risk_list"]),
               "/score_features": ("rows", row),
               "/feedback": ("events", valid["/feedback"]["events"][0])}
    for path, (nest, base) in targets.items():
        fields = list(FeatureRow.model_fields) if path == "/score_features" else list(base)
        if path == "/risk_list":
            fields += ["filters.tiers", "filters.segments", "filters.min_clv",
                       "filters.min_value_at_risk"]
        for name in fields:
            for label, value in WRONG_VALUES:
                add(Case(f"{path} {name}={label}", "POST", path,
                         as_json(_with(path, nest, base, name, value)),
                         expect=frozenset({200, 422})))
    for moment in MOMENTS:
        add(Case(f"feedback at {moment}", "POST", "/feedback",
                 as_json(_with("/feedback", "events", valid["/feedback"]["events"][0], "at",
                               moment)), expect=frozenset({200, 422})))
    for day in DATES:
        add(Case(f"as_of {day}", "POST", "/score_features",
                 as_json({"rows": [{**row, "as_of": day}]}),
                 expect=frozenset({200, 422}) if "T" in day else BAD))
    impossible = [{"frequency": 36_500, "recency": 0, "T": 0, "tenure_days": 1},
                  {"recency": row["T"] + 1}, {"frequency": row["recency"] + 1},
                  {"days_since_last": row["days_since_last"] + 5},
                  {"tenure_days": row["T"] + 2}, {"orders_30d": row["orders_90d"] + 1},
                  {"total_orders": 0}, {"T": 36_501}, {"monetary_value": 2e9},
                  {"orders_next90_ly": row["orders_365d"] + 1}]
    for change in impossible:
        add(Case(f"impossible row {sorted(change)}", "POST", "/score_features",
                 as_json({"rows": [{**row, **change}]})))
    for n in (0, 1001):
        add(Case(f"{n} ids", "POST", "/score", as_json({"customer_ids": [known_id] * n})))
    for ident in ("é✓ 日本", "\u202eRTL", "🙂", "a" * 128, FORMULA_IDS[0]):
        add(Case(f"unicode id {ident[:10]}", "POST", "/score",
                 as_json({"customer_ids": [ident]}), expect=OK))
    add(Case("id too long", "POST", "/score", as_json({"customer_ids": ["a" * 129]})))
    # header tricks
    body = as_json(valid["/score"])
    for name, extra in (("expect 100-continue", ("Expect", "100-continue")),
                        ("connection close", ("Connection", "close")),
                        ("huge header", ("X-Filler", "x" * 8000)),
                        ("odd accept", ("Accept", "application/xml")),
                        ("gzip claim", ("Content-Encoding", "gzip")),
                        ("x-forwarded", ("X-Forwarded-For", "1.2.3.4, evil"))):
        add(Case(name, "POST", "/score", body, (("X-API-Key", KEY), ("Content-Type", JSON), extra),
                 expect=frozenset({200, 415, 422})))
    add(Case("content-length too big", "POST", "/score", None,
             (("X-API-Key", KEY), ("Content-Type", JSON), ("Content-Length", "999999999999")),
             frozenset({413})))
    add(Case("chunked over the limit", "POST", "/score", b"x" * 2_100_000,
             (("X-API-Key", KEY), ("Content-Type", JSON), ("Transfer-Encoding", "chunked")),
             frozenset({413})))
    add(Case("chunked", "POST", "/score", body,
             (("X-API-Key", KEY), ("Content-Type", JSON), ("Transfer-Encoding", "chunked")), OK))
    return cases


def _with(path: str, nest: str | None, base: dict, name: str, value: object) -> dict:
    """The valid payload of `path` with one field (`a.b` for nested) set to `value`."""
    item = dict(base)
    if "." in name:
        outer, inner = name.split(".")
        item[outer] = {**item.get(outer, {}), inner: value}
    else:
        item[name] = value
    if nest == "customer_ids":
        return {"customer_ids": value}
    return {nest: [item]} if nest else item


def send(port: int, case: Case) -> Answer:
    """Send one case as raw HTTP/1.1 (paths and headers exactly as written, duplicates kept)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.putrequest(case.method, case.path, skip_accept_encoding=True)
        names = {k.lower() for k, _ in case.headers}
        for k, v in case.headers:
            conn.putheader(k, v)
        body = case.body
        if "transfer-encoding" in names:
            body = (b"" if body is None else f"{len(body):x}\r\n".encode() + body + b"\r\n"
                    ) + b"0\r\n\r\n"
        elif "content-length" not in names and body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        try:
            if body:
                conn.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413) before reading the whole body
        r = conn.getresponse()
        return Answer(case, r.status, r.getheader("content-type") or "", r.read())
    finally:
        conn.close()


def judge(answer: Answer) -> Answer:
    """The problems of one answer: a 5xx, a status the case does not allow, an error that is
    not `{"error": one line, "detail": text}`."""
    case, status = answer.case, answer.status
    if status >= 500:
        answer.problems.append(f"server error {status}")
    if status not in case.expect:
        answer.problems.append(f"status {status}, expected {sorted(case.expect)}")
    if 400 <= status < 500 and case.method != "HEAD":
        try:
            body = json.loads(answer.body)
        except ValueError:
            body = None
        if not answer.content_type.startswith(JSON):
            answer.problems.append(f"error content type {answer.content_type!r}")
        if not (isinstance(body, dict) and set(body) == {"error", "detail"}
                and isinstance(body["error"], str) and isinstance(body["detail"], str)
                and body["error"] and "\n" not in body["error"]):
            answer.problems.append(f"error shape {answer.body[:120]!r}")
    return answer


def probe(port: int, cases: Iterable[Case]) -> list[Answer]:
    return [judge(send(port, case)) for case in cases]


def tally(answers: list[Answer]) -> dict[int, int]:
    return dict(sorted(collections.Counter(a.status for a in answers).items()))


def formula_snapshot(trained: Trained) -> str:
    """A copy of the trained snapshot where a few customers' ids start like formulas."""
    frame = trained.snapshot.copy()
    frame.loc[frame.index[:len(FORMULA_IDS)], "customer_id"] = FORMULA_IDS
    where = trained.home / "snapshot-formulas" / f"as_of={END}"
    where.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(where / "part-0.parquet", index=False)
    return str(where.parent)


@pytest.fixture(scope="module")
def hostile(trained):
    features = formula_snapshot(trained)
    d = Deployment(trained.home, trained.serve_config("serve-formulas.yaml", features,
                                                      "formulas-log.db"))
    d.features = features
    d.start()
    yield d
    d.stop()


def a_valid_row(trained: Trained) -> dict:
    """A real snapshot row as a `/score_features` row (it passes every rule)."""
    rec = trained.snapshot.iloc[7]
    row = {k: (None if pd.isna(rec[k]) else rec[k].item() if hasattr(rec[k], "item") else rec[k])
           for k in FeatureRow.model_fields if k in rec.index}
    row["as_of"] = END
    return row


def test_hostile_requests_get_no_server_error_and_one_error_shape(hostile, trained):
    known = trained.snapshot["customer_id"].iloc[10]
    cases = hostile_cases(known, a_valid_row(trained))
    assert len(cases) >= 500
    answers = probe(hostile.port, cases)
    bad = [f"{a.case.name}: {'; '.join(a.problems)}" for a in answers if a.problems]
    assert not bad, (len(bad), bad[:15])
    assert not [a for a in answers if a.status >= 500]
    assert hostile.client.get("/readyz").status_code == 200


def test_docs_open_without_the_key_and_describe_it(hostile):
    import httpx

    for path in ("/", "/docs.json", "/static_content/swagger-ui-bundle.js"):
        r = httpx.get(f"{hostile.url}{path}")
        assert r.status_code == 200, (path, r.status_code)
    assert httpx.get(f"{hostile.url}/docs", follow_redirects=True).status_code == 200
    doc = httpx.get(f"{hostile.url}/docs.json").json()
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert doc["security"] == [{"apiKey": []}]
    for path in API:
        op = doc["paths"][path]["post"]
        assert {"200", "401", "413", "415", "422"} <= set(op["responses"]), path
        assert op["responses"]["422"]["content"][JSON]["schema"] == {
            "$ref": "#/components/schemas/Error"}
    assert doc["paths"]["/score"]["post"]["requestBody"]["required"] is True
    assert doc["paths"]["/risk_list"]["post"]["requestBody"]["required"] is False
    assert "text/csv" in doc["paths"]["/risk_list.csv"]["post"]["responses"]["200"]["content"]
    for path in HEALTH:
        assert doc["paths"][path]["get"]["security"] == []
    assert httpx.get(f"{hostile.url}/metrics").status_code == 401
    assert hostile.client.get("/metrics").status_code == 200


def test_risk_list_csv_is_an_attachment_with_formulas_defused(hostile):
    r = hostile.post("/risk_list.csv", {"top_n": 10_000})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == 'attachment; filename="risk_list.csv"'
    frame = pd.read_csv(io.StringIO(r.text), dtype={"customer_id": str})
    ids = set(frame["customer_id"])
    assert {defuse(i) for i in FORMULA_IDS} <= ids
    assert not any(str(cell).startswith(FORMULA_START)
                   for col in frame.select_dtypes(exclude="number") for cell in frame[col])
    assert pd.api.types.is_numeric_dtype(frame["churn_probability"])


def test_batch_csv_defuses_formulas_and_keeps_negative_numbers(hostile, trained):
    out = trained.home / "formulas.csv"
    run("score", "--features", hostile.features, "--out", str(out), "--tracking-uri",
        hostile.tracking, cwd=trained.home)
    frame = pd.read_csv(out, dtype={"customer_id": str})
    assert {defuse(i) for i in FORMULA_IDS} <= set(frame["customer_id"])
    assert not frame["customer_id"].str.startswith(FORMULA_START).any()
    text = write_csv(pd.DataFrame({"id": ["=1+1", "-5", "ok", None], "x": [-1.5, 2.0, -3.0, 0.0],
                                   "n": [-1, 2, 3, 4]}))
    assert text.splitlines() == ["id,x,n", "'=1+1,-1.5,-1", "'-5,2.0,2", "ok,-3.0,3", ",0.0,4"]
