"""The web console's request page follows the status stream (issue 18, part 2), and polls when it cannot."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support import Server, running_server, submit

pytestmark = pytest.mark.slow

MODEL = "kling-v2-5-turbo"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("console-stream"), workers=1, VIDQUEUE_EMULATOR_LATENCY_S="2") as srv:
        yield srv


@pytest.fixture()
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def watch_detail(server: Server, browser: WebDriver, request_id: str, script: str = "") -> list[tuple[str, str]]:
    """Open the console on a request's page (after ``script``) and note each (status, progress) it shows to the end."""
    browser.get(f"{server.url}/ui/")
    browser.execute_script("sessionStorage.setItem('vidqueue.key', arguments[0])", server.key)
    if script:
        browser.execute_script(script)
    browser.execute_script("location.hash = arguments[0]", f"#/requests/{request_id}")
    shown: list[tuple[str, str]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        facts = browser.find_elements(By.CSS_SELECTOR, "[data-fact=Status], [data-fact=Progress]")
        try:
            state = (facts[0].text, facts[1].text) if len(facts) == 2 else None
        except Exception:  # replaced while read
            state = None
        if state and (not shown or shown[-1] != state):
            shown.append(state)
        if state and state[0] == "success":
            return shown
        time.sleep(0.05)
    raise AssertionError(f"the page never showed success: {shown}")


def fetched(browser: WebDriver, request_id: str) -> tuple[int, int]:
    """How many GETs of the request, and of its event stream, the page made."""
    names: list[str] = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    gets = sum(1 for n in names if n.split("?")[0].endswith(f"/requests/{request_id}"))
    streams = sum(1 for n in names if n.endswith(f"/requests/{request_id}/events"))
    return gets, streams


def test_the_request_page_follows_the_status_stream_without_polling(server: Server, browser: WebDriver) -> None:
    with server.client() as api:
        request_id = submit(api, MODEL, {"prompt": "a kite over dunes"})["request_id"]
    shown = watch_detail(server, browser, request_id)
    running = [progress for status, progress in shown if status == "processing"]
    assert len([p for p in running if p not in ("0%", "100%")]) >= 2, shown
    assert browser.find_elements(By.ID, "video")
    time.sleep(0.3)  # a resource entry is written when its body ends
    assert fetched(browser, request_id) == (1, 1)  # one GET to draw the page, then the stream alone


def test_the_request_page_polls_when_the_stream_cannot_be_had(server: Server, browser: WebDriver) -> None:
    with server.client() as api:
        request_id = submit(api, MODEL, {"prompt": "a kite over dunes, polled"})["request_id"]
    refuse_streams = """
        const real = window.fetch;
        window.fetch = (url, options) => String(url).endsWith('/events')
            ? Promise.reject(new TypeError('no streams here')) : real(url, options);
    """
    shown = watch_detail(server, browser, request_id, refuse_streams)
    assert shown[-1][0] == "success"
    gets, streams = fetched(browser, request_id)
    assert gets >= 3 and streams == 0
