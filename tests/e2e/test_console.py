"""The web console in headless Chromium (Debian's package, driven by Selenium) against the real server on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.support import Server, running_server

pytestmark = pytest.mark.slow

T = TypeVar("T")
SEED_MODELS = ("kling-v2-5-turbo", "Kling-Text2Video-V2-Master")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Enough emulated latency to watch progress and to cancel midway.
    with running_server(tmp_path_factory.mktemp("console"), workers=2, VIDQUEUE_EMULATOR_LATENCY_S="3") as srv:
        yield srv


@pytest.fixture()
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


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
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def rows(driver: WebDriver) -> list[dict[str, Any]]:
    """The requests table as the user sees it."""
    out = []
    for tr in driver.find_elements(By.CSS_SELECTOR, "#requests tbody tr"):
        bar = tr.find_element(By.TAG_NAME, "progress")
        out.append(
            {
                "id": tr.get_attribute("data-id"),
                "status": tr.get_attribute("data-status"),
                "progress": float(bar.get_attribute("value") or 0),
            }
        )
    return out


def fill_and_submit(driver: WebDriver, model: str, prompt: str) -> None:
    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    # The form is rebuilt from the model's parameters; it says which model it shows when done.
    until(lambda: driver.find_elements(By.CSS_SELECTOR, f'#fields[data-model="{model}"] #f-prompt'), what="the form")
    prompt_box = driver.find_element(By.ID, "f-prompt")
    prompt_box.clear()
    driver.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))", prompt_box, prompt
    )
    driver.find_element(By.ID, "submit-button").click()


def test_a_user_signs_in_submits_watches_plays_cancels_and_sees_validation(
    server: Server, browser: WebDriver, tmp_path: Path
) -> None:
    ui = f"{server.url}/ui/"
    assert httpx.get(ui).headers["content-type"].startswith("text/html")
    browser.get(ui)
    browser.find_element(By.ID, "apikey").send_keys(server.key or "")
    browser.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    until(lambda: browser.find_element(By.ID, "dashboard").is_displayed(), what="the dashboard")
    # The key lives in session storage only.
    assert browser.execute_script("return sessionStorage.getItem('vidqueue.key')") == server.key
    assert browser.execute_script("return localStorage.length") == 0

    # Submit to each seed model; both appear, newest first, and progress moves.
    for model in SEED_MODELS:
        fill_and_submit(browser, model, f"a paper boat on a pond, from {model}")
        until(
            lambda m=model: any(r for r in rows(browser)) and len(rows(browser)) >= SEED_MODELS.index(m) + 1,
            what=f"the {model} request",
        )
    seen = until(
        lambda: [r for r in rows(browser) if r["status"] == "processing" and 0 < r["progress"] < 100], what="progress"
    )
    assert seen
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(tmp_path / "desktop.png"))
    listed = rows(browser)
    assert len(listed) == 2

    # Play the result: the player's duration is the requested 5 s.
    first = listed[-1]["id"]
    until(lambda: any(r["status"] == "success" for r in rows(browser) if r["id"] == first), timeout=60, what="success")
    browser.find_element(By.CSS_SELECTOR, f'#requests tr[data-id="{first}"] a').click()
    until(lambda: browser.find_elements(By.ID, "video"), what="the video player")
    duration = until(
        lambda: browser.execute_script("return document.getElementById('video').duration"), what="video metadata"
    )
    assert abs(float(duration) - 5.0) <= 0.5
    poster = browser.find_element(By.ID, "video").get_attribute("poster")
    assert poster and "thumbnail" in poster
    assert browser.find_element(By.ID, "download").get_attribute("href")

    # Cancel a fresh request from its page.
    browser.find_element(By.CSS_SELECTOR, "#detail a[href='#/']").click()
    until(lambda: browser.find_element(By.ID, "dashboard").is_displayed())
    fill_and_submit(browser, SEED_MODELS[0], "a request to cancel")
    newest = until(
        lambda: [r for r in rows(browser) if r["id"] not in {x["id"] for x in listed}], what="the new request"
    )[0]
    browser.get(f"{ui}#/requests/{newest['id']}")
    cancel = until(
        lambda: browser.find_element(By.ID, "cancel") if browser.find_element(By.ID, "cancel").is_displayed() else None
    )
    cancel.click()
    until(lambda: browser.find_element(By.CSS_SELECTOR, "[data-fact=Status]").text == "cancelled", what="cancelled")
    assert not browser.find_element(By.ID, "cancel").is_displayed()

    # A 2501-character prompt: the server's 400 is shown next to the prompt field.
    browser.get(ui)
    until(lambda: browser.find_element(By.ID, "dashboard").is_displayed())
    fill_and_submit(browser, SEED_MODELS[1], "x" * 2501)
    message = until(lambda: browser.find_element(By.ID, "f-prompt-error").text, what="the prompt's error")
    assert "2500" in message
    assert browser.find_element(By.ID, "f-prompt").get_attribute("aria-invalid") == "true"
    assert "2501 / 2500" in browser.find_element(By.ID, "f-prompt-count").text

    # Phone-sized: the same page, one column, still usable.
    browser.set_window_size(390, 844)
    time.sleep(0.3)
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400  # no sideways scrolling
    browser.save_screenshot(str(tmp_path / "phone.png"))
    for shot in ("desktop.png", "phone.png"):
        assert (tmp_path / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
