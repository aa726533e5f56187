"""Image decodes under load: concurrent submits of big images must not multiply the API's memory.

A 40-megapixel PNG (8000x5000, the largest the pixel cap lets through) decodes to 120 MB of RGB. Sixteen at once,
each decoded fully in its own thread, took the API process from ~130 MB to 2.2 GB resident, and it stayed there
(glibc kept the freed arenas). Now at most two full decodes run at once (the rest wait their turn, they are not
refused) and the freed memory is handed back to the system after a large decode.

The API is the `vidqueue serve` process itself (uvicorn runs in it; workers are its children, and none run here),
so its RSS is read from /proc/<pid>/status.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw

from tests.cases import PROMPT, TURBO
from tests.support import Server, running_server

pytestmark = pytest.mark.slow

MB = 1024 * 1024
SUBMITS = 16
# Two decodes at once, 120 MB of pixels each, plus the decoder's and zlib's buffers and 16 request bodies in
# flight (~0.5 MB each here): well under 400 MB. Unbounded, 16 decodes need ~1.9 GB, so 600 MB tells them apart
# with room for allocator slack.
PEAK_GROWTH_MAX = 600 * MB
SETTLED_GROWTH_MAX = 150 * MB


def big_png_b64() -> str:
    """An 8000x5000 PNG (40 megapixels, exactly the cap) that compresses well: a few bands of colour."""
    image = Image.new("RGB", (8000, 5000), (30, 120, 200))
    draw = ImageDraw.Draw(image)
    for i in range(0, 8000, 400):
        draw.rectangle((i, 0, i + 199, 4999), fill=(200, 60 + i % 150, 40))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=6)
    image.close()
    return base64.b64encode(out.getvalue()).decode()


def rss(pid: int) -> int:
    """Resident set size of a process, in bytes (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    if not Path("/proc/self/status").exists():
        pytest.skip("reads memory from /proc")
    with running_server(tmp_path, workers=0) as server:
        yield server


def test_concurrent_big_image_submits_are_all_accepted_without_multiplying_memory(server: Server) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    image = big_png_b64()
    body = {"model": TURBO, "payload": {"prompt": PROMPT, "image": image}}

    with server.client() as api:
        # One submit first, so the code paths and their imports are loaded before the baseline is taken.
        assert api.post("/requests", json=body, timeout=30).status_code == 200
    time.sleep(0.5)
    baseline = rss(pid)

    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def post(_: int) -> int:
        with server.client() as api:
            return api.post("/requests", json=body, timeout=60).status_code

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(SUBMITS) as pool:
            statuses = list(pool.map(post, range(SUBMITS)))
    finally:
        done.set()
        sampler.join()
    elapsed = time.monotonic() - started
    time.sleep(1.0)
    settled = rss(pid)

    report = (
        f"baseline {baseline // MB} MB, peak {peak // MB} MB, after {settled // MB} MB, "
        f"{SUBMITS} submits in {elapsed:.1f} s"
    )
    print(report)
    # Waiting submits wait their turn: every one is accepted.
    assert statuses == [200] * SUBMITS, report
    assert peak - baseline < PEAK_GROWTH_MAX, report
    assert settled - baseline < SETTLED_GROWTH_MAX, report
    # The API still answers promptly afterwards.
    with server.client() as api:
        assert api.get("/requests", timeout=5).status_code == 200
    assert httpx.get(server.url + "/readyz", timeout=5).status_code == 200
