"""/docs and /redoc render in headless Chromium with every host but the server unreachable (issue 18, part 4)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.console_browser import start_chromium
from tests.support import Server, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("docs"), workers=0) as srv:
        yield srv


@pytest.fixture()
def offline_browser() -> Iterator[WebDriver]:
    """Chromium whose resolver sends every host name but 127.0.0.1 nowhere, logging each network request."""
    driver = start_chromium(
        # No internet, as on an air-gapped machine: every name resolves to nothing, and the proxy setting keeps
        # literal addresses from going out too.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://0.0.0.0:9",
        "--proxy-bypass-list=127.0.0.1",
        logs="performance",
    )
    try:
        yield driver
    finally:
        driver.quit()


def network(driver: WebDriver) -> tuple[list[str], list[dict[str, Any]]]:
    """The URLs the page asked for since the last call, and the requests that failed."""
    urls: list[str] = []
    failed: list[dict[str, Any]] = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.loadingFailed":
            failed.append(message["params"])
    return urls, failed


def wait_for(driver: WebDriver, css: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.find_elements(By.CSS_SELECTOR, css):
            return
        time.sleep(0.1)
    Path("/tmp/docs-offline.png").write_bytes(driver.get_screenshot_as_png())
    raise AssertionError(f"{css} never appeared; page: {driver.page_source[:2000]}")


def assert_only_the_server(server: Server, urls: list[str], failed: list[dict[str, Any]]) -> None:
    assert urls, "no network request was logged"
    here = urlsplit(server.url).netloc
    outside = [u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss") and urlsplit(u).netloc != here]
    assert outside == [], outside
    assert failed == [], failed


def test_swagger_ui_renders_the_api_without_internet(server: Server, offline_browser: WebDriver) -> None:
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200
    assert "cdn.jsdelivr.net" not in page.text and "tiangolo.com" not in page.text
    assert page.headers["content-security-policy"] == "default-src 'self' 'unsafe-inline' data: blob:"

    offline_browser.get(server.url + "/docs")
    # Swagger UI built the operations from /openapi.json: the submit is there, as an expandable POST block.
    wait_for(offline_browser, ".opblock.opblock-post")
    posts = offline_browser.find_elements(By.CSS_SELECTOR, ".opblock.opblock-post .opblock-summary-path")
    paths = [p.get_attribute("data-path") or p.text for p in posts]
    assert any(p.rstrip("\u200b").endswith("/requests") for p in paths), paths
    assert "Submit a request" in offline_browser.find_element(By.CSS_SELECTOR, ".swagger-ui").text

    urls, failed = network(offline_browser)
    assert_only_the_server(server, urls, failed)
    assert any(u.endswith("/swagger-ui-bundle.js") for u in urls)
    assert any(u.endswith("/openapi.json") for u in urls)


def test_redoc_renders_the_api_without_internet(server: Server, offline_browser: WebDriver) -> None:
    page = httpx.get(server.url + "/redoc")
    assert page.status_code == 200
    assert "cdn.jsdelivr.net" not in page.text and "fonts.googleapis.com" not in page.text
    assert page.headers["content-security-policy"] == "default-src 'self' 'unsafe-inline' data: blob:"

    offline_browser.get(server.url + "/redoc")
    wait_for(offline_browser, "redoc h2")
    assert "Submit a request" in offline_browser.find_element(By.TAG_NAME, "body").text

    urls, failed = network(offline_browser)
    assert_only_the_server(server, urls, failed)
    assert any(u.endswith("/redoc.standalone.js") for u in urls)
