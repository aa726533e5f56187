"""The console follows requests on their status streams (issue 18, part 2; issue 19, part 1), and polls without.

The request page follows its request's stream; the list follows its running requests' streams (a few at once) and
polls the page only for what no stream brings. Where streams cannot be had, both poll.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.console_browser import browser_errors, chromium, item, sign_in, until
from tests.support import Server, running_server, submit

pytestmark = pytest.mark.slow

MODEL = "kling-v2-5-turbo"
# Every stream refused, as on a server without them.
REFUSE_STREAMS = """
    const real = window.fetch;
    window.fetch = (url, options) => String(url).endsWith('/events')
        ? Promise.reject(new TypeError('no streams here')) : real(url, options);
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("console-stream"), workers=1, VIDQUEUE_EMULATOR_LATENCY_S="2") as srv:
        yield srv


@pytest.fixture()
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver
        # Whatever the test did, the console's own script never threw.
        thrown = [line for line in browser_errors(driver) if "Uncaught" in line]
        assert not thrown, thrown


def open_console(server: Server, browser: WebDriver, hash_: str, script: str = "") -> None:
    """Open the console signed in, run ``script`` (before any call), and go to ``hash_``."""
    browser.get(f"{server.url}/ui/")
    browser.execute_script("sessionStorage.setItem('vidqueue.key', arguments[0])", server.key)
    if script:
        browser.execute_script(script)
    browser.execute_script("location.hash = arguments[0]", hash_)


def watch_detail(server: Server, browser: WebDriver, request_id: str, script: str = "") -> list[tuple[str, str]]:
    """Open the console on a request's page (after ``script``) and note each (status, progress) it shows to the end."""
    open_console(server, browser, f"#/requests/{request_id}", script)
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


def watch_item(browser: WebDriver, request_id: str) -> list[tuple[str, int]]:
    """Note each (status, progress) the list shows for a request, until it shows its thumbnail."""
    shown: list[tuple[str, int]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            found = item(browser, request_id)
        except Exception:  # the list was rebuilt while read
            found = None
        if found:
            state = (found["status"], found["progress"])
            if not shown or shown[-1] != state:
                shown.append(state)
            if found["thumbnailLoaded"]:
                return shown
        time.sleep(0.05)
    raise AssertionError(f"the list never showed the finished request: {shown}")


def resources(browser: WebDriver) -> list[str]:
    """Every URL the page fetched so far (an entry is written when its body ends)."""
    names: list[str] = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return names


def fetched(browser: WebDriver, request_id: str) -> tuple[int, int]:
    """How many GETs of the request, and of its event stream, the page made."""
    names = resources(browser)
    gets = sum(1 for n in names if n.split("?")[0].endswith(f"/requests/{request_id}"))
    streams = sum(1 for n in names if n.endswith(f"/requests/{request_id}/events"))
    return gets, streams


def list_reads(browser: WebDriver) -> int:
    """How many pages of the list the page read."""
    return sum(1 for n in resources(browser) if "/requests?" in n)


def stream_done(browser: WebDriver, request_id: str) -> bool:
    """The request's stream ended (its resource entry is written then)."""
    return fetched(browser, request_id)[1] >= 1


def test_the_request_page_follows_the_status_stream_without_polling(server: Server, browser: WebDriver) -> None:
    with server.client() as api:
        request_id = submit(api, MODEL, {"prompt": "a kite over dunes"})["request_id"]
    shown = watch_detail(server, browser, request_id)
    running = [progress for status, progress in shown if status == "processing"]
    assert len([p for p in running if p not in ("0%", "100%")]) >= 2, shown
    assert browser.find_elements(By.ID, "video")
    until(lambda: stream_done(browser, request_id), what="the stream's end")
    assert fetched(browser, request_id) == (1, 1)  # one GET to draw the page, then the stream alone


def test_the_request_page_polls_when_the_stream_cannot_be_had(server: Server, browser: WebDriver) -> None:
    with server.client() as api:
        request_id = submit(api, MODEL, {"prompt": "a kite over dunes, polled"})["request_id"]
    shown = watch_detail(server, browser, request_id, REFUSE_STREAMS)
    assert shown[-1][0] == "success"
    gets, streams = fetched(browser, request_id)
    assert gets >= 3 and streams == 0


def test_the_list_follows_a_running_request_on_its_stream(server: Server, browser: WebDriver) -> None:
    with server.client() as api:
        request_id = submit(api, MODEL, {"prompt": "a kite over dunes, listed"})["request_id"]
    sign_in(browser, server)
    until(lambda: item(browser, request_id), what="the new request in the list")
    shown = watch_item(browser, request_id)
    assert shown[-1][0] == "success"
    moving = {progress for status, progress in shown if status == "processing" and 0 < progress < 100}
    until(lambda: stream_done(browser, request_id), what="the stream's end")
    reads = list_reads(browser)
    # Progress came every 0.2 s on the stream; the list itself was read a few times at most (first draw, once or
    # twice while the request was queued, once after it ended), so these steps could only have come by the stream.
    assert len(moving) >= 4, shown
    assert fetched(browser, request_id)[1] == 1
    assert reads < len(moving), (reads, shown)


def test_the_list_polls_when_streams_cannot_be_had(server: Server, browser: WebDriver) -> None:
    with server.client() as api:
        request_id = submit(api, MODEL, {"prompt": "a kite over dunes, listed and polled"})["request_id"]
    open_console(server, browser, "#/", REFUSE_STREAMS)
    until(lambda: item(browser, request_id), what="the new request in the list")
    shown = watch_item(browser, request_id)
    assert shown[-1][0] == "success"
    assert fetched(browser, request_id)[1] == 0
    assert list_reads(browser) >= 2  # drawn, then read again until it finished
