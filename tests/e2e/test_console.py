"""The web console in headless Chromium (Debian's package, driven by Selenium) against the real server on loopback.

Issue 19, part 1: Submit takes you to the new request, followed live; the form keeps its values per model and fits
1280x800; the list shows prompts and thumbnails, as a list or a gallery; the header names the organisation; the
player fits the window; cancel asks first; status badges; a favicon; axe-core finds nothing serious or critical.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from tests.e2e.console_browser import (
    DESKTOP,
    PHONE,
    axe_violations,
    browser_errors,
    choose_model,
    chromium,
    item,
    items,
    sign_in,
    submit_form,
    type_prompt,
    until,
    viewport,
)
from tests.support import BASE, SDK_BASE, Server, running_server, submit

pytestmark = pytest.mark.slow

TURBO, MASTER = "kling-v2-5-turbo", "Kling-Text2Video-V2-Master"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Enough emulated latency to watch progress.
    with running_server(tmp_path_factory.mktemp("console"), workers=2, VIDQUEUE_EMULATOR_LATENCY_S="3") as srv:
        yield srv


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # No workers: what is submitted stays queued, so a cancel always finds it unfinished.
    with running_server(tmp_path_factory.mktemp("console-idle"), workers=0) as srv:
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
def shots(tmp_path: Path) -> Callable[..., Path]:
    """Save a screenshot; VIDQUEUE_CONSOLE_SCREENSHOTS names a folder to keep them in (docs/console/ holds a set)."""
    folder = Path(os.environ.get("VIDQUEUE_CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def save(driver: WebDriver, name: str, top: bool = True) -> Path:
        path = folder / f"{name}.png"
        if top:
            driver.execute_script("window.scrollTo(0, 0)")
            until(lambda: driver.execute_script("return scrollY") == 0, what="the top of the page")
        assert driver.save_screenshot(str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        return path

    return save


@pytest.fixture()
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver
        # Whatever the test did, the console's own script never threw.
        thrown = [line for line in browser_errors(driver) if "Uncaught" in line]
        assert not thrown, thrown


def api_of(server: Server) -> httpx.Client:
    """A client of the server's first key."""
    return server.client()


def accessible(driver: WebDriver, where: str) -> None:
    """axe-core finds no serious or critical violation on the page as it is now."""
    found = axe_violations(driver)
    assert not found, f"{where}: {found}"


def in_view(driver: WebDriver, element: WebElement) -> bool:
    """The whole element lies inside the viewport as the page stands (no scrolling)."""
    box = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return [r.top, r.bottom, r.left, r.right, innerHeight, innerWidth]",
        element,
    )
    top, bottom, left, right, height, width = box
    return bool(top >= 0 and left >= 0 and bottom <= height and right <= width and bottom > top)


def fact(driver: WebDriver, name: str) -> str:
    """A fact of the request page (Status, Progress, …) as shown (read in one go: the page redraws them live)."""
    text: str = driver.execute_script(
        "const dd = document.querySelector(`[data-fact='${arguments[0]}']`); return dd ? dd.innerText.trim() : ''",
        name,
    )
    return text


def status_badge(driver: WebDriver) -> str:
    """The classes of the request page's status badge."""
    classes: str = driver.execute_script(
        "const b = document.querySelector('[data-fact=Status] .badge'); return b ? b.className : ''"
    )
    return classes


# -- who you are, and the page's furniture ------------------------------------------------------------------


def test_whoami_names_the_keys_organisation_on_both_base_paths(server: Server) -> None:
    for base in (BASE, SDK_BASE):
        with server.client(base=base) as api:
            me = api.get("/whoami")
            assert me.status_code == 200, me.text
            assert me.json() == {"org_id": "default", "key_prefix": (server.key or "")[:10]}
    other = server.create_key("acme")
    with server.client(other) as api:
        assert api.get("/whoami").json() == {"org_id": "acme", "key_prefix": other[:10]}
    assert httpx.get(f"{server.url}{BASE}/whoami").status_code == 401


def test_signing_in_shows_the_organisation_and_the_page_has_a_favicon(idle_server: Server, browser: WebDriver) -> None:
    browser.get(f"{idle_server.url}/ui/")
    until(lambda: browser.switch_to.active_element.get_attribute("id") == "apikey", what="focus on the key field")
    accessible(browser, "the sign-in page")
    browser.find_element(By.ID, "apikey").send_keys(idle_server.key or "")
    browser.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    until(lambda: browser.find_element(By.ID, "dashboard").is_displayed(), what="the dashboard")
    # The header says whose key this is.
    assert until(lambda: browser.find_element(By.ID, "org").text, what="the organisation") == "default"
    assert f"{(idle_server.key or '')[:10]}…" in browser.find_element(By.ID, "whoami").text
    # The key lives in session storage only.
    assert browser.execute_script("return sessionStorage.getItem('vidqueue.key')") == idle_server.key
    assert browser.execute_script("return localStorage.length") == 0

    # A favicon, served by the console, and nothing the page asked for was missing.
    icon = browser.find_element(By.CSS_SELECTOR, "link[rel=icon]").get_attribute("href")
    assert icon
    answer = httpx.get(icon)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("image/svg+xml")
    assert answer.text.startswith("<svg")
    assert not [line for line in browser_errors(browser) if "404" in line or "Uncaught" in line]

    browser.find_element(By.ID, "signout").click()
    until(lambda: browser.find_element(By.ID, "signin").is_displayed(), what="the sign-in page")
    assert not browser.find_element(By.ID, "nav").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('vidqueue.key')") is None


# -- submitting: the form, and where it takes you -------------------------------------------------------------


def test_submit_is_visible_at_1280x800_and_takes_you_to_the_request_followed_live(
    server: Server, browser: WebDriver, shots: Callable[..., Path]
) -> None:
    sign_in(browser, server)
    # Compact enough that Submit is on screen at 1280x800 whatever the model, without scrolling.
    for model in (TURBO, MASTER):
        choose_model(browser, model)
        assert in_view(browser, browser.find_element(By.ID, "submit-button")), model
    # The image's rules are said once.
    choose_model(browser, TURBO)
    image_field = browser.find_element(By.ID, "f-image").find_element(By.XPATH, "..").text
    assert image_field.count("10 MB") == 1 and image_field.count("300 px") == 1

    prompt = "a paper boat on a pond at dusk, followed live"
    request_id = submit_form(browser, TURBO, prompt)
    # The new request's page: it says so, names it by its prompt, and follows it as it runs.
    notice = until(lambda: browser.find_element(By.ID, "detail-notice").text, what="the confirmation")
    assert "Submitted" in notice
    assert browser.find_element(By.ID, "detail-title").text == prompt
    assert browser.switch_to.active_element.get_attribute("id") == "detail-title"
    progress_seen = set()
    statuses_seen = set()

    def watched() -> bool:
        statuses_seen.add(fact(browser, "Status"))
        progress_seen.add(fact(browser, "Progress"))
        return bool(browser.find_elements(By.ID, "video"))

    until(watched, timeout=60, what="the video, without reloading")
    assert "processing" in statuses_seen, statuses_seen
    assert progress_seen - {"0%", "100%"}, progress_seen  # progress moved on the page itself
    assert fact(browser, "Status") == "success"
    assert "badge-success" in status_badge(browser)

    # The player fits the window: its controls (drawn along its bottom edge) and Download are in view.
    video = browser.find_element(By.ID, "video")
    duration = until(lambda: browser.execute_script("return arguments[0].duration", video), what="video metadata")
    assert abs(float(duration) - 5.0) <= 0.5
    assert video.get_attribute("controls") is not None
    assert in_view(browser, video)
    assert in_view(browser, browser.find_element(By.ID, "download"))
    poster = video.get_attribute("poster")
    assert poster and "thumbnail" in poster
    assert browser.find_element(By.ID, "download").get_attribute("href") == video.get_attribute("src")
    accessible(browser, "a finished request's page")
    shots(browser, "desktop-request")

    # Back to the list: the request is first, highlighted, with its prompt and thumbnail; the form kept its values.
    browser.find_element(By.CSS_SELECTOR, "#detail .back a").click()
    until(lambda: browser.find_element(By.ID, "dashboard").is_displayed(), what="the dashboard")
    first = until(lambda: (found := items(browser)) and found[0]["thumbnailLoaded"] and found[0], what="the list")
    assert first["id"] == request_id
    assert first["fresh"]
    assert first["title"] == prompt
    assert first["badge"] == "success"
    assert browser.find_element(By.ID, "f-prompt").get_attribute("value") == prompt


def test_the_form_keeps_its_values_per_model_and_a_portrait_video_fits_too(server: Server, browser: WebDriver) -> None:
    sign_in(browser, server)
    choose_model(browser, TURBO)
    type_prompt(browser, "turbo's draft")
    Select(browser.find_element(By.ID, "f-duration")).select_by_value("10")
    choose_model(browser, MASTER)
    type_prompt(browser, "master's draft, tall")
    Select(browser.find_element(By.ID, "f-aspect_ratio")).select_by_value("9:16")

    def shown() -> tuple[str, str, str | None]:
        prompt = browser.find_element(By.ID, "f-prompt").get_attribute("value") or ""
        duration = Select(browser.find_element(By.ID, "f-duration")).first_selected_option.text
        shapes = browser.find_elements(By.ID, "f-aspect_ratio")
        return prompt, duration, Select(shapes[0]).first_selected_option.text if shapes else None

    choose_model(browser, TURBO)
    assert shown() == ("turbo's draft", "10", None)
    choose_model(browser, MASTER)
    assert shown() == ("master's draft, tall", "5", "9:16")
    # A reload (same tab) keeps the model and its values.
    browser.refresh()
    until(lambda: browser.find_elements(By.CSS_SELECTOR, f'#fields[data-model="{MASTER}"] #f-prompt'), what="form")
    assert shown() == ("master's draft, tall", "5", "9:16")

    request_id = submit_form(browser, MASTER, "master's draft, tall")
    with api_of(server) as api:
        sent = api.get(f"/requests/{request_id}").json()
    assert sent["payload"]["aspect_ratio"] == "9:16"
    # A portrait video fits the window as well.
    video = until(lambda: browser.find_element(By.ID, "video"), timeout=60, what="the video")
    until(lambda: browser.execute_script("return arguments[0].videoHeight", video), what="video metadata")
    assert in_view(browser, video)
    assert in_view(browser, browser.find_element(By.ID, "download"))
    browser.execute_script("history.back()")
    until(lambda: browser.find_element(By.ID, "dashboard").is_displayed(), what="the dashboard")
    until(lambda: browser.find_elements(By.CSS_SELECTOR, f'#fields[data-model="{MASTER}"] #f-prompt'), what="form")
    assert shown() == ("master's draft, tall", "5", "9:16")


def test_server_validation_is_shown_beside_the_field(idle_server: Server, browser: WebDriver) -> None:
    sign_in(browser, idle_server)
    choose_model(browser, MASTER)
    type_prompt(browser, "x" * 2501)
    browser.find_element(By.ID, "submit-button").click()
    message = until(lambda: browser.find_element(By.ID, "f-prompt-error").text, what="the prompt's error")
    assert "2500" in message
    assert browser.find_element(By.ID, "f-prompt").get_attribute("aria-invalid") == "true"
    assert "2501 / 2500" in browser.find_element(By.ID, "f-prompt-count").text
    assert browser.execute_script("return location.hash") == "#/"  # nothing was sent, so nowhere to go
    accessible(browser, "the form with an error on show")


# -- the list -------------------------------------------------------------------------------------------------

LONG_PROMPT = "a lighthouse keeper's cat watching the storm roll in over the harbour, " * 4


def test_the_list_shows_prompts_and_thumbnails_as_a_list_or_a_gallery(
    server: Server, browser: WebDriver, shots: Callable[..., Path]
) -> None:
    prompts = ["a fox in fresh snow", LONG_PROMPT.strip(), "paper lanterns over a river, 16:9"]
    with api_of(server) as api:
        ids = [submit(api, MASTER, {"prompt": p})["request_id"] for p in prompts]
    sign_in(browser, server)

    # Running requests show their prompt, a badge and a bar at once; thumbnails come as each one finishes.
    def listed() -> dict[str, dict[str, Any]]:
        return {i["id"]: i for i in items(browser) if i["id"] in ids}

    until(lambda: len(listed()) == len(ids), what="the new requests")

    # Two workers, three requests: the third runs alone after the first two finish, so at some moment the list
    # shows finished requests' thumbnails beside one that is running.
    def running_beside_finished() -> bool:
        now = items(browser)
        running = [i for i in now if i["status"] == "processing" and 0 < i["progress"] < 100]
        return bool(running) and any(i["thumbnailLoaded"] for i in now)

    until(running_beside_finished, timeout=60, what="thumbnails beside a running request")
    accessible(browser, "the list, live")
    shots(browser, "desktop-list")
    until(lambda: all(i["thumbnailLoaded"] for i in listed().values()), timeout=90, what="every thumbnail")
    shown = listed()
    assert [shown[i]["title"] for i in ids[::2]] == prompts[::2]
    long = shown[ids[1]]["title"]
    assert long.endswith("…") and len(long) <= 140 and prompts[1].startswith(long[:-1])
    assert all(s["badge"] == "success" and s["status"] == "success" for s in shown.values())
    accessible(browser, "the list")

    # The gallery: thumbnails side by side, several to a row, each big enough to tell apart.
    browser.find_element(By.ID, "view-grid").click()
    assert browser.find_element(By.ID, "view-grid").get_attribute("aria-pressed") == "true"

    def gallery() -> list[dict[str, float]]:
        boxes: list[dict[str, float]] = browser.execute_script(
            "return [...document.querySelectorAll('#requests > li .thumb')].map((t) => t.getBoundingClientRect())"
        )
        return boxes

    until(lambda: len({round(b["top"]) for b in gallery()[:3]}) == 1, what="three thumbnails in a row")
    assert all(b["width"] >= 180 for b in gallery())
    accessible(browser, "the gallery")
    shots(browser, "desktop-grid")
    # The choice of view lasts the session.
    browser.refresh()
    until(lambda: browser.find_element(By.ID, "view-grid").get_attribute("aria-pressed") == "true", what="grid")
    until(lambda: len(items(browser)) >= 3, what="the list after a reload")

    # On a phone: one column, no sideways scrolling, the gallery two across.
    viewport(browser, *PHONE)
    until(lambda: len({round(b["top"]) for b in gallery()[:2]}) == 1, what="two thumbnails in a row on a phone")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]
    accessible(browser, "the gallery on a phone")
    browser.find_element(By.ID, "view-list").click()
    until(lambda: browser.find_element(By.ID, "view-list").get_attribute("aria-pressed") == "true", what="list")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]
    # The list is below the form; a link at the form's top leads down to it.
    browser.find_element(By.ID, "to-list").click()
    until(lambda: in_view(browser, browser.find_element(By.ID, "list-title")), what="the list in view")
    assert browser.switch_to.active_element.get_attribute("id") == "list-title"
    shots(browser, "phone-list", top=False)
    viewport(browser, *DESKTOP)


# -- cancelling ---------------------------------------------------------------------------------------------


def test_cancel_asks_first_and_cancelled_has_a_badge(idle_server: Server, browser: WebDriver) -> None:
    with api_of(idle_server) as api:
        request_id = submit(api, TURBO, {"prompt": "a request to cancel"})["request_id"]
    sign_in(browser, idle_server, f"#/requests/{request_id}")
    until(lambda: browser.find_element(By.ID, "cancel").is_displayed(), what="Cancel")
    cancel = browser.find_element(By.ID, "cancel")
    assert "badge-queued" in status_badge(browser)
    dialog = browser.find_element(By.ID, "confirm-cancel")

    # Asked, and kept: nothing happens, and the keyboard is back on Cancel.
    cancel.click()
    until(lambda: dialog.get_attribute("open") is not None, what="the question")
    assert browser.switch_to.active_element.get_attribute("id") == "confirm-keep"
    assert "Cancel this request?" in dialog.text
    accessible(browser, "the cancel dialog")
    browser.find_element(By.ID, "confirm-keep").click()
    until(lambda: dialog.get_attribute("open") is None, what="the dialog to close")
    assert browser.switch_to.active_element.get_attribute("id") == "cancel"
    with api_of(idle_server) as api:
        assert api.get(f"/requests/{request_id}").json()["status"] == "queued"

    # Escape is "no" as well.
    cancel.click()
    until(lambda: dialog.get_attribute("open") is not None, what="the question again")
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    until(lambda: dialog.get_attribute("open") is None, what="Escape to close the dialog")
    with api_of(idle_server) as api:
        assert api.get(f"/requests/{request_id}").json()["status"] == "queued"

    # Asked, and confirmed: cancelled, with its badge, here and in the list.
    cancel.click()
    until(lambda: dialog.get_attribute("open") is not None, what="the question a third time")
    browser.find_element(By.ID, "confirm-yes").click()
    until(lambda: fact(browser, "Status") == "cancelled", what="cancelled")
    assert "badge-cancelled" in status_badge(browser)
    assert not browser.find_element(By.ID, "cancel").is_displayed()
    with api_of(idle_server) as api:
        assert api.get(f"/requests/{request_id}").json()["status"] == "cancelled"
    browser.find_element(By.CSS_SELECTOR, "#detail .back a").click()
    until(lambda: (found := item(browser, request_id)) and found["badge"] == "cancelled", what="the list's badge")
    # A badge is a coloured pill of its own, not bare text.
    background = browser.execute_script(
        "return getComputedStyle(document.querySelector(`#requests li[data-id='${arguments[0]}'] .badge`))"
        ".backgroundColor",
        request_id,
    )
    assert background not in ("rgba(0, 0, 0, 0)", "transparent")


# -- keyboard only, uploads, pages, failures, contrast --------------------------------------------------------

# WCAG 2 contrast of every visible piece of text and every form control against the background behind it.
CONTRAST_JS = (Path(__file__).parent / "contrast.js").read_text()


def contrast_failures(driver: WebDriver) -> list[dict[str, Any]]:
    """Text on the page whose contrast is below WCAG AA (4.5:1, or 3:1 for large text)."""
    found = driver.execute_script(CONTRAST_JS)
    assert found, "no text was measured"
    return [entry for entry in found if entry["ratio"] < entry["need"]]


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


def link_to(request_id: str) -> Callable[[WebElement], bool]:
    """A predicate: the element is the link to a request's page."""
    return lambda element: (element.get_attribute("href") or "").endswith(f"#/requests/{request_id}")


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
    failing_server: Server, browser: WebDriver, tmp_path: Path, shots: Callable[..., Path]
) -> None:
    api = failing_server.client()
    seeded = [submit(api, MASTER, {"prompt": f"seeded {i}"})["request_id"] for i in range(12)]

    # Sign in with the keyboard alone: the key field has focus, Enter signs in.
    browser.get(f"{failing_server.url}/ui/")
    until(lambda: browser.switch_to.active_element.get_attribute("id") == "apikey", what="focus on the key field")
    ActionChains(browser).send_keys(failing_server.key or "", Keys.ENTER).perform()
    until(lambda: browser.find_element(By.ID, "dashboard").is_displayed(), what="the dashboard")
    until(lambda: listed_total(browser) == 12, what="the seeded requests")
    # Newest first, ten to a page.
    until(lambda: [i["id"] for i in items(browser)] == seeded[::-1][:10], what="the first page")

    # Image upload, checked before sending: too small, too narrow, too big are refused beside the field.
    until(lambda: browser.find_elements(By.CSS_SELECTOR, f'#fields[data-model="{TURBO}"] #f-image-file'))
    refusals = {
        "at least 300 px": png(tmp_path / "small.png", 200, 200),
        "between 1:2.5 and 2.5:1": png(tmp_path / "narrow.png", 300, 900),
        "at most 10 MB": png(tmp_path / "huge.png", 2000, 1900, noise=True),
    }
    for message, path in refusals.items():
        browser.find_element(By.ID, "f-image-file").send_keys(str(path))

        def refused(m: str = message) -> bool:
            return m in browser.find_element(By.ID, "f-image-error").text

        until(refused, what=f"the refusal {message!r}")
        assert not browser.find_element(By.ID, "image-preview").is_displayed()
    contrast = contrast_failures(browser)  # with an error on show
    assert not contrast, contrast
    browser.find_element(By.ID, "f-image-file").send_keys(str(png(tmp_path / "good.png", 640, 360)))
    preview = browser.find_element(By.ID, "image-preview")
    until(preview.is_displayed, what="the preview")
    assert until(lambda: browser.execute_script("return arguments[0].naturalWidth", preview)) == 640
    assert browser.find_element(By.ID, "f-image-error").text == ""
    assert listed_total(browser) == 12  # nothing refused was sent

    # Fill the prompt and submit, by keyboard: the new request's page opens with the keyboard on its heading.
    tab_to(browser, by_id("f-prompt"), "the prompt", back=True)  # the prompt comes before the image
    ActionChains(browser).send_keys("a kite over the dunes, typed").perform()
    tab_to(browser, by_id("submit-button"), "the submit button")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    newest = until(
        lambda: (h := browser.execute_script("return location.hash")).startswith("#/requests/") and h,
        what="the new request's page",
    ).removeprefix("#/requests/")
    until(lambda: browser.switch_to.active_element.get_attribute("id") == "detail-title", what="focus on the title")
    sent = api.get(f"/requests/{newest}").json()
    assert sent["model"] == TURBO
    assert sent["payload"]["prompt"] == "a kite over the dunes, typed"
    assert sent["payload"]["image"]  # the uploaded file went with it

    # Back to the list by keyboard: the new request is first, highlighted.
    tab_to(browser, lambda e: e.text == "← All requests", "the way back", back=True)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    until(lambda: listed_total(browser) == 13, what="the list with the new request")
    until(lambda: (found := items(browser)) and found[0]["id"] == newest and found[0]["fresh"], what="it first")

    # Pages: Older shows the rest, Newer comes back; reached and pressed by keyboard.
    tab_to(browser, by_id("next-page"), "Older")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    until(lambda: browser.find_element(By.ID, "page-number").text == "Page 2", what="page 2")
    until(lambda: [i["id"] for i in items(browser)] == seeded[::-1][9:], what="the second page")
    assert browser.find_element(By.ID, "next-page").get_attribute("disabled") is not None
    # Older turned off under the keyboard's focus; focus moved to Newer rather than to the top of the page.
    assert browser.switch_to.active_element.get_attribute("id") == "prev-page"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    until(lambda: browser.find_element(By.ID, "page-number").text == "Page 1", what="page 1 again")
    until(lambda: items(browser)[0]["id"] == newest, what="the newest request first again")

    # A failed request's page says why, with no player and no cancel; reached by keyboard.
    until(lambda: items(browser)[1]["status"] == "failed", what="a failed request")
    failed = items(browser)[1]["id"]
    assert items(browser)[1]["badge"] == "failed"
    tab_to(browser, link_to(failed), f"the link to {failed}", back=True)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    until(lambda: browser.find_element(By.ID, "detail").is_displayed(), what="the request page")
    message = until(lambda: browser.find_element(By.ID, "detail-error").text, what="the failure message")
    assert "Emulated engine failure" in message
    assert message == api.get(f"/requests/{failed}").json()["error"]
    until(lambda: browser.switch_to.active_element.get_attribute("id") == "detail-title", what="focus on the title")
    assert fact(browser, "Status") == "failed"
    assert not browser.find_element(By.ID, "cancel").is_displayed()
    assert not browser.find_elements(By.ID, "video")
    payload = browser.find_element(By.ID, "detail-payload").get_attribute("textContent") or ""
    assert '"prompt": "seeded' in payload
    contrast = contrast_failures(browser)
    assert not contrast, contrast
    accessible(browser, "a failed request's page")
    shots(browser, "desktop-failed")
    viewport(browser, *PHONE)
    assert browser.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]
    accessible(browser, "a failed request's page on a phone")
    shots(browser, "phone-failed")
    api.close()
