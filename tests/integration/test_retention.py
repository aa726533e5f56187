"""Retention against the real server: old finished requests answer 404, their files are gone, metrics count them."""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.cases import PROMPT, TURBO
from tests.support import Server, run_cli, running_server, submit, wait_for

MAX_AGE_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Requests are kept 1 s after they finish and pruned every 0.3 s; each one runs 3 s."""
    with running_server(
        tmp_path_factory.mktemp("retention"),
        workers=2,
        VIDQUEUE_EMULATOR_LATENCY_S="3",
        VIDQUEUE_RETENTION_DAYS=repr(MAX_AGE_S / 86400),
        VIDQUEUE_RETENTION_INTERVAL_S="0.3",
    ) as srv:
        yield srv


def _image() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (600, 400), (30, 120, 200)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _metric(server: Server, name: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} is not on /metrics"
    return float(found.group(1))


def test_finished_requests_and_their_media_are_pruned_and_running_ones_kept(server: Server) -> None:
    with server.client() as api:
        old = submit(api, TURBO, {"prompt": PROMPT, "image": _image()})["request_id"]
        assert wait_for(api, old)["status"] == "success"
        folder = server.data_dir / "media" / "requests" / old
        assert {p.name for p in folder.iterdir()} >= {"input.png", "video.mp4", "thumbnail.jpg"}

        running = submit(api, TURBO, {"prompt": PROMPT})["request_id"]
        wait_for(api, running, {"processing"})
        deadline = time.monotonic() + 10
        while api.get(f"/requests/{old}").status_code != 404:
            assert time.monotonic() < deadline, "the old request was not pruned"
            time.sleep(0.05)

        # Already older than the retention period, but not finished: kept, and it finishes normally.
        kept = api.get(f"/requests/{running}")
        assert kept.status_code == 200 and kept.json()["status"] == "processing"
        # The row goes first (one transaction), its media folder right after.
        while folder.exists():
            assert time.monotonic() < deadline, "the old request's media were not pruned"
            time.sleep(0.05)
        assert all(item["request_id"] != old for item in api.get("/requests").json()["requests"])
        assert wait_for(api, running)["status"] == "success"

    assert _metric(server, "vidqueue_retention_pruned_requests_total") >= 1
    assert _metric(server, "vidqueue_retention_pruned_media_total") >= 3
    assert _metric(server, "vidqueue_retention_media_errors_total") == 0
    assert _metric(server, "vidqueue_retention_last_run_timestamp_seconds") > time.time() - 5


def test_prune_by_hand_deletes_old_finished_requests_and_says_how_many(tmp_path: Path) -> None:
    from vidqueue.bootstrap import open_storage, store_for
    from vidqueue.config import load_settings
    from vidqueue.store import NewRequest

    data = tmp_path / "data"
    settings = load_settings(env={"VIDQUEUE_DATA_DIR": str(data)})
    store, media = store_for(settings), open_storage(settings)
    for rid in ("done", "waiting"):
        store.enqueue(NewRequest(request_id=rid, org_id="o", model="m", payload={}))
    store.claim("w", ["m"], 60)
    media.put_bytes("requests/done/video.mp4", b"mp4", "video/mp4")
    store.finish("done", "w", {"media": [{"id": "v", "key": "requests/done/video.mp4"}]})
    store.close()

    kept = run_cli("prune", "--data-dir", str(data))  # finished just now: the default 30 days keep it
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.startswith("Pruned 0 requests and 0 media objects (finished more than 30 days ago)")
    time.sleep(0.2)
    out = run_cli("prune", "--days", "0.000001", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Pruned 1 requests and 1 media objects")
    assert not (data / "media" / "requests" / "done").exists()
    store = store_for(settings)
    assert store.get("done") is None and store.get("waiting") is not None
    store.close()
