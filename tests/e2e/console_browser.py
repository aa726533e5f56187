"""Driving the web console in headless Chromium: the browser, waits, the list as a user sees it, and axe-core."""

from __future__ import annotations

import os
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.support import Server

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
# axe-core comes from the npm registry at test time, once, into a folder git ignores.
AXE_VERSION = "4.10.3"
AXE_CACHE = ROOT / ".cache" / "axe-core"
DESKTOP = (1280, 800)
PHONE = (390, 844)


# Debian's Chromium, headless, quiet: no first-run page, no background traffic.
BASE_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


def start_chromium(*flags: str, logs: str = "browser") -> WebDriver:
    """A started headless Chromium with BASE_FLAGS and ``flags``, keeping the ``logs`` log (browser, performance)."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*BASE_FLAGS, *flags):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {logs: "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(60)
    return driver


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """Headless Chromium (Debian's package) with its console log kept, its viewport exactly 1280x800."""
    driver = start_chromium()
    try:
        viewport(driver, *DESKTOP)
        yield driver
    finally:
        driver.quit()


def viewport(driver: WebDriver, width: int, height: int) -> None:
    """Make the page's viewport exactly ``width`` x ``height`` CSS pixels (a phone's is a mobile one)."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    until(lambda: driver.execute_script("return innerWidth") == width, what=f"a {width} px viewport")


def until(check: Callable[[], T | None], timeout: float = 30, what: str = "the page") -> T:
    """Poll ``check`` until it answers something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # an element replaced mid-read: look again
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sign_in(driver: WebDriver, server: Server, hash_: str = "#/") -> None:
    """Open the console signed in (the key put where the sign-in form puts it), at ``hash_``."""
    driver.get(f"{server.url}/ui/")
    driver.execute_script("sessionStorage.setItem('vidqueue.key', arguments[0])", server.key)
    driver.execute_script("location.hash = arguments[0]", hash_)
    if hash_ in ("#/", ""):
        until(lambda: driver.find_element(By.ID, "dashboard").is_displayed(), what="the dashboard")
        until(lambda: driver.find_elements(By.CSS_SELECTOR, "#fields[data-model]"), what="the form")


ITEMS_JS = """
return [...document.querySelectorAll('#requests > li')].map((li) => {
  const img = li.querySelector('.thumb img');
  return {
    id: li.dataset.id, status: li.dataset.status, progress: Number(li.dataset.progress),
    title: li.querySelector('a').textContent, badge: li.querySelector('.badge').textContent,
    fresh: li.classList.contains('fresh'),
    thumbnail: img ? img.currentSrc || img.src : null,
    thumbnailLoaded: Boolean(img && img.complete && img.naturalWidth),
  };
});
"""


def items(driver: WebDriver) -> list[dict[str, Any]]:
    """The request list as the user sees it, top first."""
    found: list[dict[str, Any]] = driver.execute_script(ITEMS_JS)
    return found


def item(driver: WebDriver, request_id: str) -> dict[str, Any] | None:
    """One request's entry in the list, if shown."""
    return next((i for i in items(driver) if i["id"] == request_id), None)


def choose_model(driver: WebDriver, model: str) -> None:
    """Pick a model; the form is rebuilt from its parameters and says which model it shows when done."""
    until(lambda: driver.find_elements(By.CSS_SELECTOR, f'#model option[value="{model}"]'), what="the models")
    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    until(lambda: driver.find_elements(By.CSS_SELECTOR, f'#fields[data-model="{model}"] #f-prompt'), what="the form")


def type_prompt(driver: WebDriver, prompt: str) -> None:
    """Replace the prompt, as typing would (the input event fires)."""
    box = driver.find_element(By.ID, "f-prompt")
    driver.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input', {bubbles: true}))",
        box,
        prompt,
    )


def submit_form(driver: WebDriver, model: str, prompt: str) -> str:
    """Fill in and submit the form; the console goes to the new request's page: its id."""
    choose_model(driver, model)
    type_prompt(driver, prompt)
    before = driver.execute_script("return location.hash")
    driver.find_element(By.ID, "submit-button").click()
    shown: str = until(
        lambda: (h := driver.execute_script("return location.hash")) != before and h.startswith("#/requests/") and h,
        what="the new request's page",
    )
    return shown.removeprefix("#/requests/")


def browser_errors(driver: WebDriver) -> list[str]:
    """The console's log lines at error level since the last call."""
    log: list[dict[str, Any]] = cast(Any, driver).get_log("browser")  # Chromium's driver has get_log
    return [e["message"] for e in log if e["level"] == "SEVERE"]


# -- axe-core -------------------------------------------------------------------------------------------------


def axe_source() -> str:
    """axe.min.js, fetched once from the npm registry (npm pack) into .cache/axe-core."""
    target = AXE_CACHE / f"axe-{AXE_VERSION}.min.js"
    if not target.exists():
        AXE_CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=AXE_CACHE) as tmp:
            done = subprocess.run(
                ["npm", "pack", f"axe-core@{AXE_VERSION}", "--pack-destination", tmp, "--silent"],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, f"npm pack axe-core@{AXE_VERSION} failed: {done.stderr[-2000:]}"
            tarball = next(Path(tmp).glob("axe-core-*.tgz"))
            with tarfile.open(tarball) as archive:
                member = archive.extractfile("package/axe.min.js")
                assert member is not None
                staged = Path(tmp) / "axe.min.js"
                staged.write_bytes(member.read())
            os.replace(staged, target)  # whole or not at all, should another run fetch it at the same time
    return target.read_text()


AXE_RUN = """
const done = arguments[arguments.length - 1];
axe.run(document, { resultTypes: ['violations'] })
  .then((r) => done(r.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ') + ': ' + (n.failureSummary || '')),
  }))))
  .catch((e) => done([{ id: 'axe-error', impact: 'critical', help: String(e), nodes: [] }]));
"""


def axe_violations(driver: WebDriver, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict[str, Any]]:
    """What axe-core finds on the page as it is now, of the given impacts."""
    if not driver.execute_script("return typeof window.axe === 'object'"):
        driver.execute_script(axe_source())
    found: list[dict[str, Any]] = driver.execute_async_script(AXE_RUN)
    return [v for v in found if v["impact"] in impacts]
