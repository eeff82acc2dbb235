"""The operator console in a real browser: Debian's headless chromium, driven by Selenium through
Debian's chromedriver, against the review API served by uvicorn.

Two reviewers confirm an alert that appears live (both faces shown), the reviewer who made the
first step is not offered the second, and a reject needs a reason typed on the page; the store
and the metrics agree with what the page shows. At 1400x900 each person (a viewer, a reviewer
before and after their first review, a second reviewer) sees who they are signed in as, at
least four alerts, and only the actions they may take; the screenshots are saved under the
test's folder and checked (size, the cards inside the viewport, the faces' pixels). The "needs
my review" view, the counts, the camera and deployment filters, both faces enlarged, the
subject's category, legal basis and expiry, local and relative time, and the notice of a new
alert are checked too.

The registry is a stand-in served over HTTP (the registry itself needs the face models and a
cohort): it answers ``GET /v1/subjects/{id}`` with the registry's own ``SubjectPublic`` model,
read by the alert service's real ``HttpRegistryClient``.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Header, HTTPException
from PIL import Image
from pydantic import SecretStr

from openlfr.registry.models import SubjectPublic
from openlfr.review.registry_client import HttpRegistryClient
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
from selenium.webdriver.support.ui import Select  # noqa: E402


REGISTRY_TOKEN = "alert-service-token-0123456789"
#: When the stand-in registry's subjects' entries expire.
EXPIRES = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)


def _subject(subject_id: str, category: str, legal_basis: str) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    return SubjectPublic(
        id=subject_id, watchlist_id="wl-1", display_name=f"Person {subject_id}", category=category,
        reason="on the watchlist for the test", legal_basis=legal_basis, added_by="wanda", expires_at=EXPIRES,
        expired=False, status="active", images=[], created_at=now, updated_at=now,
    ).model_dump(mode="json")


#: The stand-in registry's subjects (subject-3 is unknown to it).
SUBJECTS = {
    "subject-1": _subject("subject-1", "wanted", "Warrant 2026/0412, Magistrates' Court"),
    "subject-2": _subject("subject-2", "missing_person", "Missing person report MP-88"),
}


@pytest.fixture
def registry_url() -> Iterator[str]:
    app = FastAPI()

    @app.get("/v1/subjects/{subject_id}")
    def subject(subject_id: str, authorization: str = Header(default="")) -> dict[str, Any]:
        if authorization != f"Bearer {REGISTRY_TOKEN}":
            raise HTTPException(401, detail="unknown token")
        if subject_id not in SUBJECTS:
            raise HTTPException(404, detail=f"no subject {subject_id!r}")
        return SUBJECTS[subject_id]

    server = run_http_in_thread(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture
def served(tmp_path: Path, registry_url: str) -> Iterator[tuple[ReviewApp, str]]:
    client = HttpRegistryClient(registry_url, token=SecretStr(REGISTRY_TOKEN), timeout_s=5)
    review = build_review_app(tmp_path, heartbeat_s=2.0, registry_client=client)
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


def _offered(driver: WebDriver, alert_id: str) -> list[str]:
    """The labels of the review buttons the card shows (none: nothing offered)."""
    return [b.text for b in _item(driver, alert_id).find_elements(
        By.CSS_SELECTOR, 'button[data-action="confirm"], button[data-action="reject"]') if b.is_displayed()]


def _why_not(driver: WebDriver, alert_id: str) -> str:
    el = _item(driver, alert_id).find_element(By.CSS_SELECTOR, '[data-role="why-not"]')
    return el.text if el.is_displayed() else ""


def _role_text(driver: WebDriver, alert_id: str, name: str) -> str:
    return _item(driver, alert_id).find_element(By.CSS_SELECTOR, f'[data-role="{name}"]').text


def _viewport(driver: WebDriver, width: int = 1400, height: int = 900) -> None:
    """The page's viewport exactly ``width`` x ``height`` CSS px at one device pixel per px."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    assert driver.execute_script("return [window.innerWidth, window.innerHeight]") == [width, height]


def _subjects_loaded(driver: WebDriver) -> bool:
    return bool(driver.execute_script(
        "return [...document.querySelectorAll('li.alert [data-role=\"legal-basis\"]')]"
        ".every((el) => el.textContent !== '\u2026');"
    ))


def _screenshot(driver: WebDriver, path: Path) -> Image.Image:
    """Save a screenshot of the viewport to ``path`` and return it (RGB)."""
    assert driver.save_screenshot(str(path)), path
    image = Image.open(io.BytesIO(path.read_bytes())).convert("RGB")
    assert image.size == (1400, 900), image.size
    return image


def _rect(driver: WebDriver, element: WebElement) -> dict[str, float]:
    return driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height};",
        element,
    )


def _near(pixel: tuple[int, ...], color: tuple[int, int, int], tolerance: int = 30) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, color))


#: The fill colours of make_alert's crops (openlfr.review.testing.jpeg).
PROBE_RGB = (120, 40, 40)
REFERENCE_RGB = (40, 40, 120)
#: The scene stand-in's face at its centre, and its background (openlfr.review.testing.scene_jpeg).
SCENE_FACE_RGB = (200, 160, 130)
SCENE_STREET_RGB = (90, 100, 110)


def _scene_loaded(driver: WebDriver, element: WebElement) -> bool:
    return bool(driver.execute_script(
        "const img = arguments[0]; return !img.hidden && img.complete && img.naturalWidth > 0;", element))


def _check_scene(driver: WebDriver, shot: Image.Image, element: WebElement, *, min_width: float) -> None:
    """The scene crop is shown at least ``min_width`` wide: the face in its middle, the street at
    its left edge (the picture is the scene, not a face chip)."""
    r = _rect(driver, element)
    assert r["width"] >= min_width and r["top"] >= 0 and r["bottom"] <= 900 and r["right"] <= 1400, r
    natural = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight];", element)
    shown_h = min(r["height"], r["width"] * natural[1] / natural[0])  # object-fit: contain
    cx, cy = int(r["left"] + r["width"] / 2), int(r["top"] + r["height"] / 2)
    assert _near(shot.getpixel((cx, cy)), SCENE_FACE_RGB), shot.getpixel((cx, cy))
    left = int(r["left"] + r["width"] / 2 - (r["width"] if natural[0] / natural[1] >= r["width"] / r["height"]
                                              else shown_h * natural[0] / natural[1]) / 2 + 3)
    assert _near(shot.getpixel((left, cy)), SCENE_STREET_RGB), shot.getpixel((left, cy))


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

    # The same person is not offered the second review, and the card says why.
    assert _offered(browser, alert.alert_id) == []
    assert "you made the first review" in _why_not(browser, alert.alert_id).lower()
    assert review.store.get(alert.alert_id).status == "awaiting_second"

    _use_token(browser, "bob")
    _wait_status(browser, alert.alert_id, "awaiting_second")
    assert _offered(browser, alert.alert_id) == ["Confirm (second review)", "Reject\u2026"]
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


def _seed(review: ReviewApp) -> dict[str, str]:
    """Six alerts, newest first: two pending, two awaiting the second review (first by alice, by
    bob), one confirmed, one rejected (its subject unknown to the registry). Name -> alert id."""
    now = time.time()
    plan = [
        ("pending-1", "subject-1", "cam-1", "dep-1"),
        ("pending-2", "subject-2", "cam-2", "dep-2"),
        ("first-by-alice", "subject-1", "cam-1", "dep-1"),
        ("first-by-bob", "subject-2", "cam-2", "dep-1"),
        ("confirmed", "subject-1", "cam-1", "dep-1"),
        ("rejected", "subject-3", "cam-2", "dep-2"),
    ]
    ids = {}
    for i, (name, subject, camera, deployment) in enumerate(plan):
        alert = make_alert(track=name, subject=subject, camera=camera, deployment=deployment,
                           capture_ts=now - 120 - 60 * i)
        assert review.service.on_alert(alert)
        ids[name] = alert.alert_id
    review.service.review(ids["first-by-alice"], reviewer="alice", decision="confirm")
    review.service.review(ids["first-by-bob"], reviewer="bob", decision="confirm")
    review.service.review(ids["confirmed"], reviewer="alice", decision="confirm")
    review.service.review(ids["confirmed"], reviewer="bob", decision="confirm")
    review.service.review(ids["rejected"], reviewer="bob", decision="reject", reason="a different person")
    return ids


def _sign_in_and_settle(driver: WebDriver, who: str, ids: dict[str, str]) -> None:
    _use_token(driver, who)
    _wait(driver, "the counts", lambda d: d.find_element(By.ID, "counts").get_attribute("data-loaded") == "true")
    for alert_id in ids.values():
        _item(driver, alert_id)
    _wait(driver, "every card's faces", lambda d: all(
        _images_loaded(d, a) for name, a in ids.items() if name != "rejected"))
    _wait(driver, "every card's subject facts", _subjects_loaded)


@pytest.mark.parametrize("who, roles, offered", [
    ("victor", "viewer", {"pending-1": [], "first-by-alice": [], "first-by-bob": [], "confirmed": []}),
    ("alice", "reviewer", {"pending-1": ["Confirm", "Reject\u2026"], "first-by-alice": [],
                           "first-by-bob": ["Confirm (second review)", "Reject\u2026"], "confirmed": []}),
    ("bob", "reviewer", {"pending-1": ["Confirm", "Reject\u2026"],
                         "first-by-alice": ["Confirm (second review)", "Reject\u2026"], "first-by-bob": [],
                         "confirmed": []}),
])
def test_each_person_sees_who_they_are_four_alerts_and_only_their_actions(
    served: tuple[ReviewApp, str], browser: WebDriver, tmp_path: Path, who: str, roles: str,
    offered: dict[str, list[str]],
) -> None:
    review, base = served
    ids = _seed(review)
    browser.get(f"{base}/console")
    _viewport(browser)
    _sign_in_and_settle(browser, who, ids)

    whoami = browser.find_element(By.ID, "whoami")
    assert (whoami.get_attribute("data-name"), whoami.get_attribute("data-roles")) == (who, roles)
    assert f"Signed in as\n{who}" in whoami.text or f"Signed in as {who}" in whoami.text
    for name, labels in offered.items():
        assert _offered(browser, ids[name]) == labels, (who, name)
    if who == "victor":
        assert "Read only" in _why_not(browser, ids["pending-1"])
        assert not browser.find_element(By.CSS_SELECTOR, '#counts [data-count-for="mine"]').is_displayed()
    else:
        mine = "first-by-alice" if who == "alice" else "first-by-bob"
        assert "different reviewer" in _why_not(browser, ids[mine])
    assert _why_not(browser, ids["confirmed"]) == ""  # final: nothing to do, nothing to explain

    # The screenshot: 1400x900, the four newest cards wholly inside it, their faces and the scene
    # around the probe in its pixels.
    page = ConsolePage(browser)
    page.wait("the scene crops", lambda d: all(
        _scene_loaded(d, c.find_element(By.CSS_SELECTOR, 'img[data-role="scene"]'))
        for c in d.find_elements(By.CSS_SELECTOR, "li.alert")[:4]))
    shot = _screenshot(browser, tmp_path / f"console-{who}.png")
    cards = browser.find_elements(By.CSS_SELECTOR, "li.alert")
    assert [c.get_attribute("data-alert-id") for c in cards[:4]] == [
        ids["pending-1"], ids["pending-2"], ids["first-by-alice"], ids["first-by-bob"]]
    for card in cards[:4]:
        r = _rect(browser, card)
        assert r["top"] >= 0 and r["left"] >= 0 and r["bottom"] <= 900 and r["right"] <= 1400, r
        for which, color in (("probe", PROBE_RGB), ("reference", REFERENCE_RGB)):
            img = _rect(browser, card.find_element(By.CSS_SELECTOR, f'img[data-role="{which}"]'))
            assert img["width"] >= 100 and img["height"] >= 100, img
            centre = shot.getpixel((int(img["left"] + img["width"] / 2), int(img["top"] + img["height"] / 2)))
            assert _near(centre, color), (which, centre)
        _check_scene(browser, shot, card.find_element(By.CSS_SELECTOR, 'img[data-role="scene"]'), min_width=140)
        # Every offered button is on screen, not below the fold.
        for button in card.find_elements(By.CSS_SELECTOR, "button[data-action]"):
            if button.is_displayed():
                assert _rect(browser, button)["bottom"] <= 900


def test_needs_my_review_counts_and_filters(served: tuple[ReviewApp, str], browser: WebDriver) -> None:
    review, base = served
    ids = _seed(review)
    browser.get(f"{base}/console")
    _sign_in_and_settle(browser, "alice", ids)
    page = ConsolePage(browser)

    def counts() -> dict[str, str]:
        return {b.get_attribute("data-count-for"): b.find_element(By.CSS_SELECTOR, "[data-count]").text
                for b in browser.find_elements(By.CSS_SELECTOR, "#counts button")}

    def shown() -> set[str]:
        return {li.get_attribute("data-alert-id") for li in browser.find_elements(By.CSS_SELECTOR, "li.alert")}

    def choose(select_id: str, value: str) -> None:
        Select(browser.find_element(By.ID, select_id)).select_by_value(value)

    def wait_shown(names: set[str]) -> None:
        want = {ids[n] for n in names}
        page.wait(f"the list to hold {sorted(names)}", lambda d: d.find_element(By.ID, "alerts").get_attribute(
            "data-loaded") == "true" and shown() == want)

    assert counts() == {"mine": "3", "pending": "2", "awaiting_second": "2", "confirmed": "1", "rejected": "1"}
    cameras = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "filter-camera")).options]
    deployments = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "filter-deployment")).options]
    assert (cameras, deployments) == (["", "cam-1", "cam-2"], ["", "dep-1", "dep-2"])

    browser.find_element(By.CSS_SELECTOR, '#counts [data-count-for="mine"]').click()
    wait_shown({"pending-1", "pending-2", "first-by-bob"})
    assert browser.find_element(By.ID, "filter-status").get_attribute("value") == "mine"
    choose("filter-camera", "cam-2")
    wait_shown({"pending-2", "first-by-bob"})
    page.wait("the counts of cam-2", lambda d: counts() == {
        "mine": "2", "pending": "1", "awaiting_second": "1", "confirmed": "0", "rejected": "1"})
    choose("filter-camera", "")
    choose("filter-status", "")
    choose("filter-deployment", "dep-2")
    wait_shown({"pending-2", "rejected"})
    choose("filter-deployment", "")
    browser.find_element(By.CSS_SELECTOR, '#counts [data-count-for="awaiting_second"]').click()
    wait_shown({"first-by-alice", "first-by-bob"})

    # A new alert, live: it joins "needs my review" and its count.
    choose("filter-status", "mine")
    wait_shown({"pending-1", "pending-2", "first-by-bob"})
    fresh = make_alert(track="fresh", subject="subject-2", camera="cam-1")
    review.service.on_alert(fresh)
    _item(browser, fresh.alert_id)
    page.wait("the counts to take the new alert", lambda d: counts()["mine"] == "4" and counts()["pending"] == "3")


def test_enlarged_faces_subject_facts_local_time_and_the_new_alert_notice(
    served: tuple[ReviewApp, str], browser: WebDriver, tmp_path: Path
) -> None:
    review, base = served
    ids = _seed(review)
    browser.get(f"{base}/console")
    _viewport(browser)
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    browser.execute_cdp_cmd("Browser.grantPermissions", {"origin": base, "permissions": ["notifications"]})
    _sign_in_and_settle(browser, "bob", ids)
    record = review.store.get(ids["pending-2"])

    # Local time with its offset, relative time, UTC in the tooltip.
    kolkata = timezone(timedelta(hours=5, minutes=30))
    seen = _item(browser, ids["pending-2"]).find_element(By.CSS_SELECTOR, '[data-role="time"]')
    assert seen.text == datetime.fromtimestamp(record.capture_ts, kolkata).strftime("%Y-%m-%d %H:%M:%S UTC+05:30")
    assert seen.get_attribute("title").endswith(" UTC")
    assert _role_text(browser, ids["pending-2"], "time-relative").endswith("min ago)")

    # The subject's category, legal basis and expiry, from the registry; an unknown one says so.
    assert _role_text(browser, ids["pending-1"], "category") == "wanted"
    assert _role_text(browser, ids["pending-1"], "legal-basis") == "Warrant 2026/0412, Magistrates' Court"
    assert _role_text(browser, ids["pending-2"], "category") == "missing person"
    assert _role_text(browser, ids["pending-2"], "expiry") == EXPIRES.astimezone(kolkata).strftime(
        "%Y-%m-%d %H:%M UTC+05:30")
    assert _role_text(browser, ids["pending-2"], "expiry-relative") == "(in 30 days)"
    assert "HTTP 404" in _role_text(browser, ids["rejected"], "expiry")

    # A click on a face shows both faces and the scene large; the scene's own button does too.
    _wait(browser, "the scene crop", lambda d: _scene_loaded(d, _item(d, ids["pending-2"]).find_element(
        By.CSS_SELECTOR, 'img[data-role="scene"]')))
    _item(browser, ids["pending-2"]).find_element(By.CSS_SELECTOR, 'button[data-action="enlarge"]').click()
    dialog = browser.find_element(By.ID, "enlarge")
    _wait(browser, "the enlarged faces", lambda d: d.execute_script(
        "return arguments[0].open && ['enlarge-probe', 'enlarge-reference', 'enlarge-scene'].every((id) => {"
        " const img = document.getElementById(id); return img.complete && img.naturalWidth > 0; });", dialog))
    shot = _screenshot(browser, tmp_path / "console-enlarged.png")
    for element_id, color in (("enlarge-probe", PROBE_RGB), ("enlarge-reference", REFERENCE_RGB)):
        r = _rect(browser, browser.find_element(By.ID, element_id))
        assert r["width"] >= 360 and r["top"] >= 0 and r["bottom"] <= 900 and r["right"] <= 1400, r
        assert _near(shot.getpixel((int(r["left"] + r["width"] / 2), int(r["top"] + r["height"] / 2))), color)
    _check_scene(browser, shot, browser.find_element(By.ID, "enlarge-scene"), min_width=480)
    assert "subject-2" in browser.find_element(By.ID, "enlarge-caption").text
    browser.find_element(By.ID, "enlarge-close").click()
    assert not browser.execute_script("return document.getElementById('enlarge').open")
    scene_button = _item(browser, ids["pending-2"]).find_elements(By.CSS_SELECTOR, 'button[data-action="enlarge"]')[2]
    assert scene_button.find_elements(By.CSS_SELECTOR, 'img[data-role="scene"]')
    scene_button.click()
    _wait(browser, "the dialog again", lambda d: d.execute_script("return document.getElementById('enlarge').open"))
    browser.find_element(By.ID, "enlarge-close").click()

    # The notice: off by default, then on; loaded alerts are not announced, a new one is.
    notify = browser.find_element(By.ID, "notify")
    assert not notify.is_selected() and notify.get_attribute("data-notified") == "0"
    notify.click()
    fresh = make_alert(track="fresh", subject="subject-1", camera="cam-2")
    review.service.on_alert(fresh)
    _item(browser, fresh.alert_id)
    _wait(browser, "the new alert's notice", lambda d: notify.get_attribute("data-notified") == "1")
    assert notify.get_attribute("data-last-notice") == "sound+notification"
    assert browser.execute_script("return localStorage.getItem('openlfr.review.notify')") == "on"
