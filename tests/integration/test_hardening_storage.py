"""Storage faults cost nothing twice (issue 17, findings 5 and 6), against the real server and real filesystems.

Finding 5: with the media folder read-only a request sat `processing` for its lease, was generated again, then
ended `failed` `worker_lost`; `/readyz` said ready; an image submit got 500. Now the worker keeps its lease and the
generated files and stores again with backoff: storage that comes back means success after one generation, storage
that stays away means `failed` `storage_unavailable`. `/readyz` answers 503 and an image submit 503.

Finding 6: on a full disk accepted requests ended `failed` `engine_error` "No space left on device". Now the request
goes back to the queue (not counted as an attempt), the worker pauses its claims with backoff, and the request
finishes once space returns.

The faults are real: the media folder is bind-mounted read-only over itself, and the full disk is a small tmpfs
filled with a file. Both need root, which this machine kind's test runs have (scripts/test runs as root).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.cases import PROMPT, TURBO
from tests.support import Server, decode_video, running_server, solid_png_b64, wait_for


def mount(*args: str) -> None:
    """Run mount(8); these tests change filesystems, which needs root."""
    assert os.geteuid() == 0, "these tests mount filesystems and must run as root (as scripts/test does here)"
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only (a read-only bind mount over itself) for the span of the block."""
    mount("--bind", str(folder), str(folder))
    try:
        mount("-o", "remount,bind,ro", str(folder))
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def starts(journal: Path) -> Counter[str]:
    """Generations started per request, from the emulator's journal."""
    if not journal.exists():
        return Counter()
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    return Counter(line["request_id"] for line in lines if line["event"] == "start")


def wait_until(check: object, timeout: float = 30.0) -> None:
    """Poll ``check()`` until it is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def refuses_for_storage(resp: httpx.Response) -> None:
    """A 503 storage_unavailable answer with Retry-After and no traceback."""
    assert resp.status_code == 503, resp.text
    assert resp.json()["code"] == "storage_unavailable" and "Traceback" not in resp.text
    assert int(resp.headers["Retry-After"]) >= 1


def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"VIDQUEUE_EMULATOR_JOURNAL": str(tmp_path / "journal.jsonl"), "VIDQUEUE_LEASE_S": "3", **extra}


def media_folder(server: Server) -> Path:
    return server.data_dir / "media"


def test_storage_that_comes_back_means_one_generation_and_success(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    with running_server(tmp_path, workers=1, **server_env(tmp_path)) as server, server.client() as api:
        assert api.get(f"{server.url}/readyz").status_code == 200
        with read_only(media_folder(server)):
            refuses_for_storage(api.get(f"{server.url}/readyz"))
            image = {"model": TURBO, "payload": {"prompt": PROMPT, "image": solid_png_b64(640, 400)}}
            refuses_for_storage(api.post("/requests", json=image))
            request_id = api.post("/requests", json={"model": TURBO, "payload": {"prompt": PROMPT}}).json()[
                "request_id"
            ]
            wait_until(lambda: starts(journal)[request_id] == 1)
            # Well past a lease (3 s): the worker still holds it, retrying the store, and nothing ran again.
            time.sleep(5)
            row = api.get(f"/requests/{request_id}").json()
            assert row["status"] == "processing", row
        done = wait_for(api, request_id, timeout=60)
        assert done["status"] == "success", done
        assert starts(journal)[request_id] == 1 and done["attempts"] == 1
        video = httpx.get(done["outcome"]["media_urls"][0]["url"]).content
        assert decode_video(video)[0] > 0
        assert api.get(f"{server.url}/readyz").status_code == 200
        assert api.post("/requests", json=image).status_code == 200


def test_storage_that_stays_away_fails_the_request_as_storage_unavailable(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    env = server_env(tmp_path, VIDQUEUE_STORAGE_RETRY_S="3")
    with running_server(tmp_path, workers=1, **env) as server, server.client() as api:
        with read_only(media_folder(server)):
            request_id = api.post("/requests", json={"model": TURBO, "payload": {"prompt": PROMPT}}).json()[
                "request_id"
            ]
            done = wait_for(api, request_id, timeout=60)
        assert done["status"] == "failed", done
        error = done["outcome"]["error"]
        assert error["code"] == "storage_unavailable", done
        assert "media storage could not be written" in error["message"] and "not run again" in error["message"]
        assert starts(journal)[request_id] == 1 and done["attempts"] == 1


@contextmanager
def small_disk(folder: Path, size_mb: int) -> Iterator[None]:
    """A tmpfs of ``size_mb`` mounted on ``folder`` for the span of the block."""
    folder.mkdir(parents=True, exist_ok=True)
    mount("-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder))
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` with one file, to the last byte; answer it (delete it to free the space)."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        size = 1024 * 1024
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError:
                size //= 2  # what is left is smaller than this: try halves down to one byte
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_is_transient_requests_wait_for_space_and_finish(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    data = tmp_path / "data"
    # The worker's scratch folder and the media folder share one small disk, as they share one on most machines.
    with small_disk(data / "work", 64), small_disk(data / "media", 64):
        env = server_env(tmp_path, VIDQUEUE_DISK_FULL_BACKOFF_MAX_S="2")
        with running_server(tmp_path, workers=1, **env) as server, server.client() as api:
            filler_work, filler_media = fill(data / "work"), fill(data / "media")
            refuses_for_storage(api.get(f"{server.url}/readyz"))
            image = {"model": TURBO, "payload": {"prompt": PROMPT, "image": solid_png_b64(640, 400)}}
            refuses_for_storage(api.post("/requests", json=image))
            ids = [
                api.post("/requests", json={"model": TURBO, "payload": {"prompt": f"{PROMPT} {i}"}}).json()[
                    "request_id"
                ]
                for i in range(4)
            ]
            time.sleep(4)
            rows = [api.get(f"/requests/{rid}").json() for rid in ids]
            # Nothing failed: the requests wait in the queue (or on a store retry), none counted as a crash.
            assert all(r["status"] in ("queued", "processing") for r in rows), [r.get("outcome") for r in rows]
            assert all(r["attempts"] <= 1 for r in rows), rows
            filler_work.unlink()
            filler_media.unlink()
            done = [wait_for(api, rid, timeout=90) for rid in ids]
            assert [d["status"] for d in done] == ["success"] * 4, done
            assert all(d["attempts"] == 1 for d in done), [d["attempts"] for d in done]
            assert api.get(f"{server.url}/readyz").status_code == 200
            assert api.post("/requests", json=image).status_code == 200
    assert set(starts(journal)) >= set(ids)
