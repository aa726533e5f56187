"""The web console in headless Chromium (Debian's package, driven by Selenium) against the real server on loopback."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from tests.support import Server, running_server, submit

pytestmark = pytest.mark.slow

T = TypeVar("T")
SEED_MODELS = ("kling-v2-5-turbo", "Kling-Text2Video-V2-Master")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Enough emulated latency to watch progress and to cancel midway.
    with running_server(tmp_path_factory.mktemp("console"), workers=2, VIDQUEUE_EMULATOR_LATENCY_S="3") as srv:
        yield srv


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Every request fails halfway, quickly: the console must show why.
    with running_server(
        tmp_path_factory.mktemp("console-failing"),
        workers=2,
        VIDQUEUE_EMULATOR_FAILURE_RATE="1",
        VIDQUEUE_EMULATOR_LATENCY_S="0.2",
    ) as srv:
        yield srv


@pytest.fixture()
def shots(tmp_path: Path) -> Callable[[WebDriver, str], Path]:
    """Save a screenshot; VIDQUEUE_CONSOLE_SCREENSHOTS names a folder to keep them in (docs/console/ holds a set)."""
    folder = Path(os.environ.get("VIDQUEUE_CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def save(driver: WebDriver, name: str) -> Path:
        path = folder / f"{name}.png"
        driver.execute_script("window.scrollTo(0, 0)")
        assert driver.save_screenshot(str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        return path

    return save


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
    server: Server, browser: WebDriver, shots: Callable[[WebDriver, str], Path]
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
    shots(browser, "desktop-list")
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
    shots(browser, "desktop-request")

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
    shots(browser, "phone-list")


# WCAG 2 contrast of every visible piece of text and every form control against the background behind it.
CONTRAST_JS = (Path(__file__).parent / "contrast.js").read_text()


def contrast_failures(driver: WebDriver) -> list[dict[str, Any]]:
    """Text on the page whose contrast is below WCAG AA (4.5:1, or 3:1 for large text)."""
    found = driver.execute_script(CONTRAST_JS)
    assert found, "no text was measured"
    return [item for item in found if item["ratio"] < item["need"]]


def tab_to(
    driver: WebDriver, predicate: Callable[[WebElement], bool], what: str, back: bool = False, limit: int = 40
) -> WebElement:
    """Press Tab (Shift+Tab with ``back``) until the focused element satisfies ``predicate``."""
    for _ in range(limit):
        if back:
            ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
        else:
            ActionChains(driver).send_keys(Keys.TAB).perform()
        focused = driver.switch_to.active_element
        if predicate(focused):
            # A keyboard user must see where they are.
            assert focused.value_of_css_property("outline-style") != "none", what
            return focused
    raise AssertionError(f"Tab never reached {what}")


def by_id(name: str) -> Callable[[WebElement], bool]:
    """A predicate: the element's id is ``name``."""
    return lambda element: element.get_attribute("id") == name


def png(path: Path, width: int, height: int, noise: bool = False) -> Path:
    """Write a PNG of the given size (noise makes it incompressible, to test the size rule)."""
    if noise:
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        image = Image.new("RGB", (width, height), (40, 120, 200))
    image.save(path)
    return path


def listed_total(driver: WebDriver) -> int:
    """The total the list's heading shows."""
    return int(driver.find_element(By.ID, "total").text.strip("()") or 0)


def test_keyboard_only_with_uploads_pages_failures_and_readable_contrast(
    failing_server: Server, browser: WebDriver, tmp_path: Path, shots: Callable[[WebDriver, str], Path]
) -> None:
    api = httpx.Client(
        base_url=f"{failing_server.url}/api/v1/ie/requestqueue/apikey",
        headers={"Authorization": f"Bearer {failing_server.key}"},
    )
    seeded = [submit(api, SEED_MODELS[1], {"prompt": f"seeded {i}"})["request_id"] for i in range(12)]

    # Sign in with the keyboard alone: the key field has focus, Enter signs in.
    browser.get(f"{failing_server.url}/ui/")
    until(lambda: browser.switch_to.active_element.get_attribute("id") == "apikey", what="focus on the key field")
    ActionChains(browser).send_keys(failing_server.key or "", Keys.ENTER).perform()
    until(lambda: browser.find_element(By.ID, "dashboard").is_displayed(), what="the dashboard")
    until(lambda: listed_total(browser) == 12, what="the seeded requests")
    # Newest first, ten to a page.
    until(lambda: [r["id"] for r in rows(browser)] == seeded[::-1][:10], what="the first page")

    # Image upload, checked before sending: too small, too narrow, too big are refused beside the field.
    until(lambda: browser.find_elements(By.CSS_SELECTOR, f'#fields[data-model="{SEED_MODELS[0]}"] #f-image-file'))
    upload = browser.find_element(By.ID, "f-image-file")
    refusals = {
        "at least 300 px": png(tmp_path / "small.png", 200, 200),
        "between 1:2.5 and 2.5:1": png(tmp_path / "narrow.png", 300, 900),
        "at most 10 MB": png(tmp_path / "huge.png", 2000, 1900, noise=True),
    }
    for message, path in refusals.items():
        upload.send_keys(str(path))
        until(lambda m=message: m in browser.find_element(By.ID, "f-image-error").text, what=f"the refusal {message!r}")
        assert not browser.find_element(By.ID, "image-preview").is_displayed()
    contrast = contrast_failures(browser)  # with an error on show
    assert not contrast, contrast
    upload.send_keys(str(png(tmp_path / "good.png", 640, 360)))
    preview = browser.find_element(By.ID, "image-preview")
    until(preview.is_displayed, what="the preview")
    assert until(lambda: browser.execute_script("return arguments[0].naturalWidth", preview)) == 640
    assert browser.find_element(By.ID, "f-image-error").text == ""
    assert listed_total(browser) == 12  # nothing refused was sent

    # Fill the prompt and submit, by keyboard.
    tab_to(browser, by_id("f-prompt"), "the prompt", back=True)  # the prompt comes before the image
    ActionChains(browser).send_keys("a kite over the dunes, typed").perform()
    tab_to(browser, by_id("submit-button"), "the submit button")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    until(lambda: listed_total(browser) == 13, what="the keyboard submit")
    newest = rows(browser)[0]["id"]
    sent = api.get(f"/requests/{newest}").json()
    assert sent["model"] == SEED_MODELS[0]
    assert sent["payload"]["prompt"] == "a kite over the dunes, typed"
    assert sent["payload"]["image"]  # the uploaded file went with it

    # Pages: Older shows the rest, Newer comes back; reached and pressed by keyboard.
    tab_to(browser, by_id("next-page"), "Older")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    until(lambda: browser.find_element(By.ID, "page-number").text == "Page 2", what="page 2")
    until(lambda: [r["id"] for r in rows(browser)] == seeded[::-1][9:], what="the second page")
    assert browser.find_element(By.ID, "next-page").get_attribute("disabled") is not None
    # Older turned off under the keyboard's focus; focus moved to Newer rather than to the top of the page.
    assert browser.switch_to.active_element.get_attribute("id") == "prev-page"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    until(lambda: browser.find_element(By.ID, "page-number").text == "Page 1", what="page 1 again")
    until(lambda: rows(browser)[0]["id"] == newest, what="the newest request first again")

    # A failed request's page says why, with no player and no cancel; reached by keyboard.
    until(lambda: rows(browser)[1]["status"] == "failed", what="a failed request")
    failed = rows(browser)[1]["id"]
    tab_to(browser, lambda e: e.get_attribute("aria-label") == f"Request {failed}", f"the link to {failed}", back=True)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    until(lambda: browser.find_element(By.ID, "detail").is_displayed(), what="the request page")
    message = until(lambda: browser.find_element(By.ID, "detail-error").text, what="the failure message")
    assert "Emulated engine failure" in message
    assert message == api.get(f"/requests/{failed}").json()["error"]
    assert browser.switch_to.active_element.get_attribute("id") == "detail-title"
    assert browser.find_element(By.CSS_SELECTOR, "[data-fact=Status]").text == "failed"
    assert not browser.find_element(By.ID, "cancel").is_displayed()
    assert not browser.find_elements(By.ID, "video")
    assert '"prompt": "seeded' in browser.find_element(By.ID, "detail-payload").text
    contrast = contrast_failures(browser)
    assert not contrast, contrast
    shots(browser, "desktop-failed")
    browser.set_window_size(390, 844)
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 400
    shots(browser, "phone-failed")
