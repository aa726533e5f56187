"""An emulator clip plays in headless Chromium (Debian's package, driven by Selenium) with the pictures FFmpeg sees."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.console_browser import start_chromium
from tests.unit.test_emulator import FakeContext, job
from vidqueue.engines.emulator import EmulatorEngine

pytestmark = pytest.mark.slow

# Plays the video and grabs the picture shown at about 0 s, 1.5 s and 3 s, as PNG data URLs.
PLAY_AND_GRAB = """
const done = arguments[0];
const video = document.getElementById("v");
const shots = [];
video.onerror = () => done({error: video.error ? video.error.code : -1});
video.requestVideoFrameCallback(function grab(now, meta) {
  if (meta.mediaTime >= shots.length * 1.5) {
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    shots.push([meta.mediaTime, canvas.toDataURL("image/png")]);
  }
  if (shots.length < 3) {
    video.requestVideoFrameCallback(grab);
    return;
  }
  const quality = video.getVideoPlaybackQuality();
  done({width: video.videoWidth, height: video.videoHeight, duration: video.duration, shots,
        corrupted: quality.corruptedVideoFrames});
});
video.play();
"""


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server for a folder holding a page with one video element."""
    (tmp_path / "index.html").write_text('<video id="v" src="video.mp4" muted playsinline></video>')

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", tmp_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture()
def browser() -> Iterator[WebDriver]:
    driver = start_chromium("--autoplay-policy=no-user-gesture-required")
    try:
        yield driver
    finally:
        driver.quit()


def test_chromium_plays_an_emulator_clip_frame_for_frame(site: tuple[str, Path], browser: WebDriver) -> None:
    url, folder = site
    workdir = folder / "work"
    workdir.mkdir()
    media = EmulatorEngine({"kling-v2-5-turbo"}).generate(
        job({"prompt": "a fox", "duration": "5"}), FakeContext(workdir)
    )
    (folder / "video.mp4").write_bytes(media.videos[0].read_bytes())
    with av.open(str(folder / "video.mp4")) as container:
        decoded = [frame.to_ndarray(format="rgb24").astype(int) for frame in container.decode(video=0)]

    browser.get(url)
    played = browser.execute_async_script(PLAY_AND_GRAB)

    assert "error" not in played, played
    assert (played["width"], played["height"], played["duration"]) == (1280, 720, 5)
    assert played["corrupted"] == 0
    shots = []
    for media_time, data_url in played["shots"]:
        png = base64.b64decode(data_url.split(",", 1)[1])
        shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
        index = round(media_time * 24)
        # The browser shows what FFmpeg decodes (up to its own YUV to RGB rounding) ...
        nearest = min(range(max(0, index - 1), min(120, index + 2)), key=lambda i: np.abs(shot - decoded[i]).mean())
        assert np.abs(shot - decoded[nearest]).mean() < 4
        shots.append(shot)
    # ... and what it shows moves.
    assert np.abs(shots[0] - shots[1]).mean() > 1
    assert np.abs(shots[1] - shots[2]).mean() > 1
