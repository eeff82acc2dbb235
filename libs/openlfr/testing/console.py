"""The operator console in a real browser (Debian's headless chromium through Selenium and
Debian's chromedriver), for the integration tests: open the page, sign in with a token, find
an alert, click its buttons, wait for its status."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 20.0


def browser_available() -> bool:
    """Whether chromium and chromedriver are installed (``scripts/test-deps.sh``)."""
    return CHROMIUM.is_file() and CHROMEDRIVER.is_file()


@contextmanager
def chromium(profile_dir: Path, *, page_load_timeout_s: float = WAIT_S) -> Iterator[Any]:
    """A headless chromium WebDriver with its own profile folder; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1600", f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(page_load_timeout_s)
    try:
        yield driver
    finally:
        driver.quit()


class ConsolePage:
    """The console page of one alert service, driven through ``driver``."""

    def __init__(self, driver: Any, *, timeout_s: float = WAIT_S) -> None:
        self.driver = driver
        self.timeout_s = timeout_s

    def open(self, base_url: str) -> None:
        self.driver.get(f"{base_url}/console")

    def wait(self, what: str, condition: Callable[[Any], Any], timeout_s: float | None = None) -> Any:
        """Wait for ``condition(driver)`` to be truthy; on timeout say what, with the page's state."""
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout_s or self.timeout_s, poll_frequency=0.1).until(condition)
        except Exception as exc:
            state = self.driver.execute_script(
                "return {conn: document.getElementById('conn-status').textContent,"
                " error: document.getElementById('error').textContent,"
                " alerts: document.getElementById('alerts').innerText.slice(0, 2000)};"
            )
            try:
                logs = [entry["message"] for entry in self.driver.get_log("browser")][-10:]
            except Exception:  # noqa: BLE001 - the log is only a diagnostic here
                logs = []
            raise AssertionError(f"timed out waiting for {what}; page: {state}; console: {logs}") from exc

    def use_token(self, token: str, who: str = "reviewer") -> None:
        """Enter a token and wait until the list is loaded and the stream is live."""
        from selenium.webdriver.common.by import By

        field = self.driver.find_element(By.ID, "token")
        field.clear()
        field.send_keys(token)
        self.driver.find_element(By.ID, "token-save").click()
        self.wait(f"{who}'s stream to be live and the list loaded", lambda d: d.execute_script(
            "return document.getElementById('conn-status').dataset.state === 'live'"
            " && document.getElementById('alerts').dataset.loaded === 'true';"
        ))

    def item(self, alert_id: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.wait(f"alert {alert_id} in the list", lambda d: (
            d.find_elements(By.CSS_SELECTOR, f'li.alert[data-alert-id="{alert_id}"]') or [None]
        )[0])

    def status(self, alert_id: str) -> str:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(
            By.CSS_SELECTOR, f'li.alert[data-alert-id="{alert_id}"]'
        ).get_attribute("data-status")

    def wait_status(self, alert_id: str, status: str) -> None:
        self.wait(f"alert {alert_id} to show {status}", lambda d: self.status(alert_id) == status)

    def click(self, alert_id: str, action: str) -> None:
        from selenium.webdriver.common.by import By

        self.item(alert_id).find_element(By.CSS_SELECTOR, f'[data-action="{action}"]').click()

    def images_loaded(self, alert_id: str) -> bool:
        """Whether the probe and the reference image of the alert are shown and decoded."""
        return bool(self.driver.execute_script(
            "const li = document.querySelector(`li.alert[data-alert-id=\"${arguments[0]}\"]`);"
            "if (!li) return false;"
            "return ['probe', 'reference'].every((r) => {"
            "  const img = li.querySelector(`img[data-role=\"${r}\"]`);"
            "  return img && !img.hidden && img.complete && img.naturalWidth > 0; });",
            alert_id,
        ))
