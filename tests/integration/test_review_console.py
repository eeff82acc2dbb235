"""The operator console in a real browser: Debian's headless chromium, driven by Selenium through
Debian's chromedriver, against the review API served by uvicorn.

Two reviewers confirm an alert that appears live (both faces shown), a reviewer cannot make
both steps, and a reject needs a reason typed on the page; the store and the metrics agree with
what the page shows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openlfr.review.testing import TOKENS, ReviewApp, build_review_app, make_alert
from openlfr.testing.console import CHROMEDRIVER, CHROMIUM, WAIT_S, ConsolePage, browser_available, chromium
from openlfr.service.http import HttpServer, run_http_in_thread

pytestmark = pytest.mark.integration

if not browser_available():
    # setup.sh installs them (scripts/test-deps.sh): in CI their absence is a failure.
    (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(
        f"Debian's chromium and chromium-driver are not installed ({CHROMIUM}, {CHROMEDRIVER}); "
        "run `bash scripts/test-deps.sh`",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402 - only once the browser is known to be there
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ReviewApp, str]]:
    review = build_review_app(tmp_path, heartbeat_s=2.0)
    server: HttpServer = run_http_in_thread(review.app, "127.0.0.1", 0)
    try:
        yield review, f"http://127.0.0.1:{server.port}"
    finally:
        review.hub.close()  # ends the page's stream so the server can stop
        server.stop()
        review.store.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


def _wait(driver: WebDriver, what: str, condition, timeout: float = WAIT_S):  # noqa: ANN001, ANN202
    return ConsolePage(driver).wait(what, condition, timeout)


def _use_token(driver: WebDriver, name: str) -> None:
    ConsolePage(driver).use_token(TOKENS[name][0], name)


def _item(driver: WebDriver, alert_id: str) -> WebElement:
    return ConsolePage(driver).item(alert_id)


def _status(driver: WebDriver, alert_id: str) -> str:
    return ConsolePage(driver).status(alert_id)


def _wait_status(driver: WebDriver, alert_id: str, status: str) -> None:
    ConsolePage(driver).wait_status(alert_id, status)


def _click(driver: WebDriver, alert_id: str, action: str) -> None:
    ConsolePage(driver).click(alert_id, action)


def _images_loaded(driver: WebDriver, alert_id: str) -> bool:
    return ConsolePage(driver).images_loaded(alert_id)


def test_two_reviewers_confirm_a_live_alert(served: tuple[ReviewApp, str], browser: WebDriver) -> None:
    review, base = served
    browser.get(f"{base}/console")
    _use_token(browser, "alice")
    assert browser.execute_script("return sessionStorage.getItem('openlfr.review.token')") == TOKENS["alice"][0]

    alert = make_alert(track="live-1")
    assert review.service.on_alert(alert)  # as the alert stage would, after the page is live
    _item(browser, alert.alert_id)
    _wait(browser, "both faces to load", lambda d: _images_loaded(d, alert.alert_id))
    item = _item(browser, alert.alert_id)
    assert item.find_element(By.CSS_SELECTOR, '[data-role="subject"]').text == "subject-1"
    assert item.find_element(By.CSS_SELECTOR, '[data-role="camera"]').text == "cam-1"
    assert item.find_element(By.CSS_SELECTOR, '[data-role="score"]').text == "0.820"
    assert _status(browser, alert.alert_id) == "pending"

    _click(browser, alert.alert_id, "confirm")
    _wait_status(browser, alert.alert_id, "awaiting_second")

    # The same person cannot make the second review: the page shows the API's reason.
    _click(browser, alert.alert_id, "confirm")
    _wait(browser, "the refusal of a second review by alice", lambda d: "already made the first review" in (
        d.find_element(By.CSS_SELECTOR, f'li.alert[data-alert-id="{alert.alert_id}"] [data-role="error"]').text
    ))
    assert review.store.get(alert.alert_id).status == "awaiting_second"

    _use_token(browser, "bob")
    _wait_status(browser, alert.alert_id, "awaiting_second")
    _click(browser, alert.alert_id, "confirm")
    _wait_status(browser, alert.alert_id, "confirmed")
    item = _item(browser, alert.alert_id)
    assert "confirmed by two reviewers" in item.find_element(By.CSS_SELECTOR, '[data-role="status"]').text
    steps = item.find_elements(By.CSS_SELECTOR, '[data-role="reviews"] li')
    assert [(s.get_attribute("data-step"), s.get_attribute("data-reviewer"), s.get_attribute("data-decision"))
            for s in steps] == [("1", "alice", "confirm"), ("2", "bob", "confirm")]
    assert not item.find_element(By.CSS_SELECTOR, '[data-role="actions"]').is_displayed()

    record = review.store.get(alert.alert_id)
    assert record.status == "confirmed"
    assert [(s.reviewer, s.decision) for s in record.reviews] == [("alice", "confirm"), ("bob", "confirm")]
    assert review.sample("openlfr_deployment_alerts_total", deployment="dep-1") == 1
    assert review.sample("openlfr_deployment_adjudications_total", deployment="dep-1", outcome="confirmed") == 1
    assert review.sample("openlfr_deployment_adjudications_total", deployment="dep-1", outcome="rejected") == 0
    assert review.sample("openlfr_deployment_alert_precision", deployment="dep-1") == 1.0
    audited = [(r.actor, r.details["step"], r.details["decision"]) for r in review.audit_records()
               if r.action == "alert.review"]
    assert audited == [("alice", 1, "confirm"), ("bob", 2, "confirm")]


def test_a_reject_needs_a_reason_typed_on_the_page(served: tuple[ReviewApp, str], browser: WebDriver) -> None:
    review, base = served
    browser.get(f"{base}/console")
    _use_token(browser, "bob")
    alert = make_alert(track="live-2", subject="subject-2", reference=False)
    review.service.on_alert(alert)
    _item(browser, alert.alert_id)
    _wait(browser, "the missing reference to be explained", lambda d: "no watchlist image" in d.find_element(
        By.CSS_SELECTOR, f'li.alert[data-alert-id="{alert.alert_id}"] [data-role="reference-missing"]').text)

    _click(browser, alert.alert_id, "reject")
    item = _item(browser, alert.alert_id)
    reason = item.find_element(By.CSS_SELECTOR, '[data-role="reject-reason"]')
    assert reason.is_displayed()
    _click(browser, alert.alert_id, "reject-submit")  # empty: refused on the page, nothing sent
    assert "needs a reason" in item.find_element(By.CSS_SELECTOR, '[data-role="error"]').text
    assert review.store.get(alert.alert_id).status == "pending"

    reason.send_keys("different person: no scar, older")
    _click(browser, alert.alert_id, "reject-submit")
    _wait_status(browser, alert.alert_id, "rejected")
    step = _item(browser, alert.alert_id).find_element(By.CSS_SELECTOR, '[data-role="reviews"] li')
    assert "different person: no scar, older" in step.text

    record = review.store.get(alert.alert_id)
    assert (record.status, record.reviews[0].reviewer, record.reviews[0].reason) == (
        "rejected", "bob", "different person: no scar, older"
    )
    assert review.sample("openlfr_deployment_adjudications_total", deployment="dep-1", outcome="rejected") == 1
    assert review.sample("openlfr_deployment_alert_precision", deployment="dep-1") == 0.0


def test_the_page_refuses_an_unknown_token_and_loads_existing_alerts(
    served: tuple[ReviewApp, str], browser: WebDriver
) -> None:
    review, base = served
    older = make_alert(track="old-1", capture_ts=time.time() - 60)
    review.service.on_alert(older)
    browser.get(f"{base}/console")
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys("not-a-known-token-at-all")
    browser.find_element(By.ID, "token-save").click()
    _wait(browser, "the refusal", lambda d: "unknown token" in d.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "conn-status").get_attribute("data-state") == "error"

    _use_token(browser, "victor")
    _item(browser, older.alert_id)
    _wait(browser, "the older alert's faces", lambda d: _images_loaded(d, older.alert_id))
