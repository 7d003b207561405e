"""The retention console in a real browser: a synthetic retailer trained and registered by the
CLI, served by the console app (uvicorn on loopback, mounted under /console as in the
service), driven by Debian's Chromium through Selenium. Sign-in, the pages, filters, paging,
the CSV download, a customer, sign-out, and what is refused.

Screenshots of each page are saved under the test's temporary folder (the path is printed).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from starlette.applications import Starlette
from starlette.routing import Mount

from features.campaign_log import CampaignLog
from features.synthetic import SyntheticConfig, generate, write
from serving.config import ServeConfig
from serving.console import ConsoleSettings, create_console
from serving.console.app import _csv_chunks
from serving.console.auth import PRE_COOKIE, SESSION_COOKIE, add_user
from serving.console.bundle import RiskFilter, derive, filtered_positions
from serving.state import Live
from tests.conftest import free_port, run

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
USER, PASSWORD = "maria", "correct horse battery"
END = "2024-01-01"



def navigate(browser: webdriver.Chrome, element) -> None:
    """Click a link or button that loads a new page, and wait until that page has replaced
    this one (reading elements before would find the old page's)."""
    element.click()
    WebDriverWait(browser, 60).until(lambda _: _replaced(element))
    WebDriverWait(browser, 60).until(
        lambda b: b.execute_script("return document.readyState") == "complete")

def _replaced(element) -> bool:
    """Whether the page holding `element` is gone. Chrome can answer a query made while the
    next page loads with an "unhandled inspector error": that is asked again, not taken for
    either answer."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as error:
        if "inspector error" not in str(error):
            raise
    return False


class ConsoleServer:
    """The console app on a loopback port, in a background thread of this process."""

    def __init__(self, live: Live, settings: ConsoleSettings) -> None:
        self.live = live
        self.app = Starlette(routes=[Mount("/console", create_console(lambda: live.current,
                                                                      settings))])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/console"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "console did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    home = tmp_path_factory.mktemp("console")
    data = generate(SyntheticConfig(n_customers=300, seed=3))
    paths = write(data, home / "demo")
    (home / "train.yaml").write_text("n_estimators: 30\n")
    run("features", "build", "--source", str(paths["transactions"]), "--as-of",
        f"2023-10-01,{END}", "--horizon", "90d", "--out", str(home / "snapshot"), cwd=home)
    run("train", "--source", str(paths["transactions"]), "--config", str(home / "train.yaml"),
        "--promote", cwd=home)
    add_user(home / "users.yaml", USER, PASSWORD)
    log_url = f"sqlite:///{home / 'log.db'}"
    cfg = ServeConfig(features=home / "snapshot", offers=ROOT / "configs/offers/demo.yaml",
                      customers=paths["customers"], campaign_log=log_url,
                      tracking_uri=f"sqlite:///{home / 'mlruns' / 'mlflow.db'}",
                      api_key="console-test-key", transactions=paths["transactions"],
                      campaign_history=paths["campaign_log"], console_users=home / "users.yaml")
    live = Live(cfg, watch=False)
    contacted = str(live.current.scores.index[0])
    CampaignLog(log_url).append([{"event": "sent", "at": dt.datetime(2023, 12, 20),
                                  "customer_id": contacted, "campaign_id": "xmas",
                                  "offer_id": "cross-sell", "channel": "email"}])
    server = ConsoleServer(live, ConsoleSettings.from_serve_config(cfg))
    server.start()
    server.home, server.contacted = home, contacted
    yield server
    server.stop()
    live.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    where = tmp_path_factory.mktemp("console-screenshots")
    print(f"\nconsole screenshots in {where}")
    return where


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-gpu"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.downloads = downloads
    yield driver
    driver.quit()


def shoot(browser, shots: Path, name: str) -> None:
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1400, min(max(height + 40, 800), 6000))
    browser.save_screenshot(str(shots / f"{name}.png"))
    browser.set_window_size(1400, 1000)


def console_errors(browser) -> list[dict]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def sign_in(browser, console, password: str = PASSWORD) -> None:
    browser.find_element(By.ID, "username").send_keys(USER)
    browser.find_element(By.ID, "password").send_keys(password)
    navigate(browser, browser.find_element(By.ID, "signin"))


def test_a_page_without_a_session_redirects_to_sign_in(console, browser):
    browser.delete_all_cookies()
    browser.get(f"{console.url}/risk?band=high")
    assert "/console/signin" in browser.current_url
    with httpx.Client(follow_redirects=False) as client:
        for path in ("/", "/crm", "/risk.csv", "/customers/c0000001", "/model",
                     "/model/plots/churn_roc_auc.png", "/no-such-page"):
            r = client.get(console.url + path)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/console/signin"), path


def test_a_wrong_password_is_refused(console, browser, shots):
    browser.delete_all_cookies()
    browser.get(f"{console.url}/signin")
    sign_in(browser, console, password="not the password")
    assert "Wrong user name or password" in browser.find_element(By.CLASS_NAME, "error").text
    assert browser.get_cookie(SESSION_COOKIE) is None
    shoot(browser, shots, "0-signin-refused")
    browser.get(f"{console.url}/")
    assert "/console/signin" in browser.current_url


def test_a_manager_walks_through_the_console(console, browser, shots):
    served = console.live.current
    browser.delete_all_cookies()
    browser.get_log("browser")  # drop what earlier tests logged (a refused sign-in is a 401)
    browser.get(f"{console.url}/risk")
    sign_in(browser, console)
    assert browser.current_url.endswith("/console/risk")  # back where they were sent from
    cookie = browser.get_cookie(SESSION_COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    browser.get(f"{console.url}/")
    assert "Overview" in browser.title
    tiers = browser.find_elements(By.CSS_SELECTOR, "#tier-table tbody tr")
    assert len(tiers) == len(set(served.scores["value_tier"]))
    shoot(browser, shots, "1-overview")

    browser.get(f"{console.url}/crm")
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) >= 6  # 4 lines, cohorts,
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart path.line")  # campaign results
    assert browser.find_elements(By.CSS_SELECTOR, "#campaign-table tbody tr")
    shoot(browser, shots, "2-crm-month")
    navigate(browser, browser.find_element(By.ID, "period-quarter"))
    assert "Q" in browser.find_element(By.CSS_SELECTOR, "#crm-table tbody td").text
    shoot(browser, shots, "3-crm-quarter")

    # the risk list, filtered to high-risk customers worth at least 10 at risk
    browser.get(f"{console.url}/risk")
    browser.find_element(By.CSS_SELECTOR, "input[name=band][value=high]").click()
    browser.find_element(By.ID, "min_var").send_keys("10")
    navigate(browser, browser.find_element(By.ID, "apply"))
    s = served.scores
    expected = s[(s["risk_band"] == "high") & (s["value_at_risk"] >= 10)]
    assert len(expected) > 50, "the fixture should fill more than one page"
    assert browser.find_element(By.ID, "matched").text.startswith(f"{len(expected):,} of")
    bands = {e.text.lower() for e in browser.find_elements(
        By.CSS_SELECTOR, "#risk-table tbody td:nth-child(2)")}
    assert bands == {"high"}
    first_page = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "a.cid")]
    ranked = expected.sort_values(["value_at_risk", "churn_probability"], ascending=False)
    assert first_page == [str(i) for i in ranked.index[:50]]
    shoot(browser, shots, "4-risk-list")
    navigate(browser, browser.find_element(By.ID, "next"))
    second_page = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "a.cid")]
    assert second_page == [str(i) for i in ranked.index[50:100]]

    # the download holds exactly the filtered rows, in the same order
    browser.find_element(By.ID, "download").click()
    deadline = time.time() + 30
    while not [p for p in browser.downloads.glob("*.csv")]:
        assert time.time() < deadline, "no CSV downloaded"
        time.sleep(0.2)
    rows = list(csv.DictReader(io.StringIO(next(browser.downloads.glob("*.csv")).read_text())))
    assert [r["customer_id"] for r in rows] == [str(i) for i in ranked.index]
    assert {r["risk_band"] for r in rows} == {"high"}
    assert min(float(r["value_at_risk"]) for r in rows) >= 10

    # a customer, opened from the list
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "a.cid"))
    cid = second_page[0]
    assert cid in browser.find_element(By.ID, "customer-id").text
    assert browser.find_elements(By.CSS_SELECTOR, "#reasons-raising li")
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.s-spend")
    assert browser.find_element(By.ID, "rec-status").text
    shoot(browser, shots, "5-customer")
    browser.get(f"{console.url}/customers/{console.contacted}")
    contacts = browser.find_element(By.ID, "contacts").text
    assert "xmas" in contacts and "sent" in contacts

    browser.get(f"{console.url}/customers/no-such-customer")
    assert "No customer" in browser.find_element(By.ID, "not-found").text
    shoot(browser, shots, "6-unknown-customer")

    browser.get(f"{console.url}/model")
    assert browser.find_elements(By.CSS_SELECTOR, "#metrics tbody tr")
    images = browser.find_elements(By.CSS_SELECTOR, ".plots img")
    assert images
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    for img in images:
        browser.execute_script("arguments[0].scrollIntoView()", img)
    deadline = time.time() + 20
    while not all(browser.execute_script("return arguments[0].complete && "
                                         "arguments[0].naturalWidth > 0", i) for i in images):
        assert time.time() < deadline, "model plots did not load"
        time.sleep(0.2)
    shoot(browser, shots, "7-model")

    # no script or asset error on any page; the one 404 is the unknown customer's, on purpose
    assert [e for e in console_errors(browser) if "no-such-customer" not in e["message"]] == []

    navigate(browser, browser.find_element(By.ID, "signout"))
    assert "/console/signin" in browser.current_url
    browser.get(f"{console.url}/risk")
    assert "/console/signin" in browser.current_url


def csrf_of(page: str) -> str:
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_forms_need_their_token_and_cookies_are_secure_behind_tls(console):
    with httpx.Client(follow_redirects=False) as client:
        r = client.post(f"{console.url}/signin", data={"username": USER, "password": PASSWORD})
        assert r.status_code == 400 and SESSION_COOKIE not in r.cookies
        page = client.get(f"{console.url}/signin", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in page.headers["set-cookie"]
        client.cookies.set(PRE_COOKIE, page.cookies[PRE_COOKIE])  # httpx keeps Secure ones
        r = client.post(f"{console.url}/signin", headers={"X-Forwarded-Proto": "https"},
                        data={"username": USER, "password": PASSWORD,
                              "csrf": csrf_of(page.text), "next": "//evil.example/"})
        assert r.status_code == 303 and r.headers["location"] == "/console/"
        flags = r.headers["set-cookie"].lower()
        assert "httponly" in flags and "samesite=strict" in flags and "secure" in flags
        client.cookies.set(SESSION_COOKIE, r.cookies[SESSION_COOKIE])
        home = client.get(f"{console.url}/")
        assert home.status_code == 200 and "default-src 'self'" in home.headers[
            "content-security-policy"]
        assert client.post(f"{console.url}/signout").status_code == 400  # no token
        assert client.post(f"{console.url}/").status_code in (303, 404, 405)  # pages only read
        out = client.post(f"{console.url}/signout", data={"csrf": csrf_of(home.text)})
        assert out.status_code == 303
        assert client.get(f"{console.url}/").status_code == 303  # the session is revoked


def test_the_download_defuses_cells_a_spreadsheet_would_run(console):
    served = console.live.current
    scores = served.scores.copy()
    first = scores.index[0]
    scores.loc[first, "reasons_raising"] = "=HYPERLINK(\"http://x\")"
    scores.loc[first, "rfm_segment"] = "@SUM(A1)"
    tampered = dataclasses.replace(served, scores=scores,
                                   columns={c: scores[c].to_numpy() for c in scores.columns})
    positions = filtered_positions(tampered, derive(tampered), RiskFilter())
    text = "".join(_csv_chunks(tampered, positions))
    rows = list(csv.DictReader(io.StringIO(text)))
    row = next(r for r in rows if r["customer_id"] == str(first))
    assert row["reasons_raising"].startswith("'=") and row["rfm_segment"] == "'@SUM(A1)"
    assert len(rows) == len(scores)
    assert np.isclose(float(row["churn_probability"]), scores.loc[first, "churn_probability"])
