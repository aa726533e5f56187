"""The Python SDK, sync and async, against the real server on loopback (through a proxy that can cut transfers)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.cases import LISTED_MODEL_IDS, MASTER, PROMPT, TURBO
from tests.support import CuttingProxy, Server, fast_env, free_port, running_server
from vidqueue import (
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    Request,
    RequestCancelled,
    RequestFailed,
    ValidationError,
)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, CuttingProxy]]:
    """A server whose public URL is a cutting proxy in front of it; media URLs live 3 s."""
    port = free_port()
    # A 10 s emulator clip is about 0.4 MB: cut every 100 kB so that a download is cut twice on its way.
    proxy = CuttingProxy(port, cut_after=100_000)
    env = fast_env(VIDQUEUE_EMULATOR_LATENCY_S="1.0", VIDQUEUE_PUBLIC_URL=proxy.url, VIDQUEUE_MEDIA_URL_TTL_S="3")
    server = Server(data_dir=tmp_path_factory.mktemp("sdk") / "data", port=port, env=env)
    server.start()
    try:
        yield server, proxy
    finally:
        server.stop()
        proxy.close()


@pytest.fixture()
def server(proxied: tuple[Server, CuttingProxy]) -> Server:
    return proxied[0]


@pytest.fixture()
def proxy(proxied: tuple[Server, CuttingProxy]) -> CuttingProxy:
    return proxied[1]


@pytest.fixture()
def sdk(server: Server, proxy: CuttingProxy) -> Iterator[Client]:
    """A sync client going through the proxy, with the server's first key."""
    with Client(proxy.url, server.key) as client:
        yield client


def decode(path: Path) -> tuple[int, int, int]:
    """Frames, width and height of an MP4, decoded."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height


def media_bytes(request: Request) -> bytes:
    """The video behind a request's URL, fetched with plain httpx and no key."""
    assert request.video_url is not None
    resp = httpx.get(request.video_url, timeout=30)
    assert resp.status_code == 200
    return resp.content


# -- every method, sync --------------------------------------------------------------------------------------


def test_models_and_model_details(sdk: Client) -> None:
    models = sdk.models()
    assert [m.model for m in models] == LISTED_MODEL_IDS
    assert all(m.engine == "emulator" and m.parameters for m in models)
    turbo = sdk.model(TURBO)
    cfg = turbo.parameter("cfg_scale")
    assert cfg is not None and (cfg.min, cfg.max, cfg.step, cfg.default) == (0, 1, 0.1, 0.5)
    assert turbo.payload_schema is not None and turbo.payload_schema["type"] == "object"
    with pytest.raises(NotFoundError) as caught:
        sdk.model("kling-v9")
    assert caught.value.status_code == 404


def test_submit_wait_download_gives_the_requested_video(sdk: Client, tmp_path: Path) -> None:
    created = sdk.submit(MASTER, {"prompt": PROMPT, "aspect_ratio": "9:16", "duration": 5})
    assert created.status == "queued" and created.model == MASTER
    assert created.payload["duration"] == "5" and created.payload["cfg_scale"] == 0.5
    seen: list[Request] = []
    done = sdk.wait(created.request_id, poll_interval=0.1, on_progress=seen.append)
    assert done.status == "success" and done.progress == 100
    statuses = [r.status for r in seen]
    assert statuses[-1] == "success" and "processing" in statuses
    progress = [r.progress for r in seen if r.status == "processing"]
    assert progress == sorted(progress)
    assert done.outcome is not None and done.outcome.video is not None
    assert (done.outcome.video.width, done.outcome.video.height) == (720, 1280)
    got: list[tuple[int, int | None]] = []
    path = sdk.download(done, tmp_path / "m.mp4", on_progress=lambda n, total: got.append((n, total)))
    assert decode(path) == (120, 720, 1280)
    assert got[-1] == (path.stat().st_size, path.stat().st_size)
    assert path.read_bytes() == media_bytes(sdk.get(done.request_id))
    # By id as well as by object.
    assert sdk.download(created.request_id, tmp_path / "again.mp4").read_bytes() == path.read_bytes()


def test_generate_is_submit_wait_download(sdk: Client, tmp_path: Path) -> None:
    done = sdk.generate(TURBO, {"prompt": PROMPT, "duration": "10"}, tmp_path / "t.mp4", poll_interval=0.1)
    assert done.status == "success"
    assert decode(tmp_path / "t.mp4") == (240, 1280, 720)


def test_get_and_list_with_filters_and_pages(sdk: Client) -> None:
    ids = [sdk.submit(TURBO, {"prompt": f"list {i}"}).request_id for i in range(3)]
    got = sdk.get(ids[0])
    assert got.request_id == ids[0] and got.payload["prompt"] == "list 0"
    listed = [r.request_id for r in sdk.list(model_id=TURBO, page_size=1)]
    # Newest first, one request per page, every page followed.
    assert listed[:3] == ids[::-1]
    assert len(listed) == len(set(listed))
    assert all(r.model == TURBO for r in sdk.list(model_id=TURBO, page_size=2))
    for rid in ids:
        sdk.wait(rid, poll_interval=0.1)
    done = [r.request_id for r in sdk.list(status="success")]
    assert set(ids) <= set(done)
    assert all(r.status == "success" for r in sdk.list(status="success", page_size=3))


def test_cancel_a_queued_request(sdk: Client) -> None:
    # Two workers busy with 10 s clips, so the third request waits in the queue.
    busy = [sdk.submit(TURBO, {"prompt": "busy", "duration": "10"}) for _ in range(2)]
    queued = sdk.submit(TURBO, {"prompt": "never runs"})
    cancelled = sdk.cancel(queued.request_id)
    assert cancelled.status == "cancelled"
    assert sdk.cancel(queued).status == "cancelled"  # again: no change, no error
    with pytest.raises(RequestCancelled):
        sdk.wait(queued.request_id)
    for request in busy:
        sdk.cancel(request)


def test_cancel_during_wait_ends_the_wait_with_request_cancelled(sdk: Client) -> None:
    created = sdk.submit(TURBO, {"prompt": "cancel me while I wait", "duration": "10"})
    outcome: dict[str, Any] = {}

    def waiter() -> None:
        try:
            sdk.wait(created.request_id, poll_interval=0.1, timeout=60)
        except RequestCancelled as exc:
            outcome["cancelled"] = exc.request
        except Exception as exc:  # recorded for the assertion below
            outcome["other"] = exc

    thread = threading.Thread(target=waiter)
    thread.start()
    deadline = time.monotonic() + 30
    while sdk.get(created.request_id).status != "processing" and time.monotonic() < deadline:
        time.sleep(0.05)
    sdk.cancel(created.request_id)
    thread.join(timeout=30)
    assert "other" not in outcome, outcome
    assert outcome["cancelled"].status == "cancelled"
    assert outcome["cancelled"].processing_at is not None  # it was running when cancelled


def test_bad_key_and_wrong_organisation_are_authentication_errors(server: Server, proxy: CuttingProxy) -> None:
    with Client(proxy.url, "vq_not-a-key") as bad, pytest.raises(AuthenticationError) as caught:
        bad.models()
    assert caught.value.status_code == 401
    with (
        Client(proxy.url, server.key, organization_id="someone-else") as other,
        pytest.raises(AuthenticationError) as caught,
    ):
        other.get("6fb2b474-fb3a-480f-a142-f200537c6de4")
    assert caught.value.status_code == 403


def test_another_organisations_request_is_not_found(sdk: Client, server: Server, proxy: CuttingProxy) -> None:
    mine = sdk.submit(TURBO, {"prompt": "mine"})
    with Client(proxy.url, server.create_key("globex")) as theirs, pytest.raises(NotFoundError):
        theirs.get(mine.request_id)
    with pytest.raises(NotFoundError):
        sdk.get("6fb2b474-fb3a-480f-a142-f200537c6de4")


def test_an_invalid_parameter_names_the_field_and_the_rule(sdk: Client) -> None:
    with pytest.raises(ValidationError) as caught:
        sdk.submit(TURBO, {"prompt": "x" * 2501, "cfg_scale": 0.55, "speed": 2})
    fields = {d.field: d.message for d in caught.value.details}
    assert set(fields) == {"payload.prompt", "payload.cfg_scale", "payload.speed"}
    assert "2500" in fields["payload.prompt"]
    assert "0.1" in fields["payload.cfg_scale"]
    assert caught.value.status_code == 400


def test_a_submit_with_an_idempotency_key_is_made_once(sdk: Client) -> None:
    first = sdk.submit(TURBO, {"prompt": "only once"}, idempotency_key="sdk-once")
    again = sdk.submit(TURBO, {"prompt": "only once"}, idempotency_key="sdk-once")
    assert again.request_id == first.request_id
    with pytest.raises(ConflictError) as caught:
        sdk.submit(TURBO, {"prompt": "something else"}, idempotency_key="sdk-once")
    assert caught.value.status_code == 409


# -- downloads that break and URLs that expire -----------------------------------------------------------------


def test_a_download_cut_midway_resumes_and_is_byte_identical(sdk: Client, proxy: CuttingProxy, tmp_path: Path) -> None:
    done = sdk.generate(MASTER, {"prompt": PROMPT, "duration": "10"}, tmp_path / "whole.mp4", poll_interval=0.1)
    whole = (tmp_path / "whole.mp4").read_bytes()
    assert len(whole) > 3 * proxy.cut_after
    proxy.arm(2)
    cuts, heads = proxy.cuts, len(proxy.heads)
    path = sdk.download(sdk.get(done.request_id), tmp_path / "resumed.mp4")
    assert proxy.cuts == cuts + 2
    assert path.read_bytes() == whole
    media = [h for h in proxy.heads[heads:] if h.startswith("GET /media/")]
    assert len(media) == 3
    assert "range: bytes=" not in media[0].lower()
    assert "range: bytes=" in media[1].lower() and "range: bytes=" in media[2].lower()
    assert decode(path) == (240, 1280, 720)


def test_an_expired_url_is_refreshed_by_fetching_the_request_again(sdk: Client, tmp_path: Path) -> None:
    done = sdk.generate(TURBO, {"prompt": PROMPT}, tmp_path / "a.mp4", poll_interval=0.1)
    stale = sdk.get(done.request_id)
    time.sleep(4.1)  # past the 3 s lifetime of its URLs (expiry is checked in whole seconds)
    assert stale.video_url is not None
    assert httpx.get(stale.video_url, timeout=30).status_code == 403
    path = sdk.download(stale, tmp_path / "b.mp4")
    assert path.read_bytes() == (tmp_path / "a.mp4").read_bytes()


# -- the async client --------------------------------------------------------------------------------------


def test_async_client_mirrors_every_method(server: Server, proxy: CuttingProxy, tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncClient(proxy.url, server.key) as c:
            assert [m.model for m in await c.models()] == LISTED_MODEL_IDS
            assert (await c.model(MASTER)).parameter("aspect_ratio") is not None
            created = await c.submit(MASTER, {"prompt": PROMPT, "aspect_ratio": "1:1"})
            assert (await c.get(created.request_id)).model == MASTER
            assert created.request_id in [r.request_id async for r in c.list(model_id=MASTER, page_size=2)]
            done = await c.wait(created, poll_interval=0.1)
            assert done.status == "success"
            path = await c.download(done, tmp_path / "sq.mp4")
            assert decode(path) == (120, 720, 720)
            generated = await c.generate(TURBO, {"prompt": PROMPT}, tmp_path / "g.mp4", poll_interval=0.1)
            assert generated.status == "success" and decode(tmp_path / "g.mp4") == (120, 1280, 720)
            proxy.arm(1)
            cuts = proxy.cuts
            again = await c.download(done.request_id, tmp_path / "sq2.mp4")
            assert proxy.cuts == cuts + 1
            assert again.read_bytes() == path.read_bytes()
            with pytest.raises(ValidationError) as caught:
                await c.submit(MASTER, {"prompt": PROMPT, "aspect_ratio": "4:3"})
            assert caught.value.details[0].field == "payload.aspect_ratio"
            with pytest.raises(NotFoundError):
                await c.get("no-such-request")

            # Cancel while another task waits.
            long = await c.submit(TURBO, {"prompt": "async cancel", "duration": "10"})
            waiter = asyncio.create_task(c.wait(long.request_id, poll_interval=0.1, timeout=60))
            await asyncio.sleep(0.3)
            cancelled = await c.cancel(long.request_id)
            assert cancelled.status == "cancelled"
            with pytest.raises(RequestCancelled):
                await waiter

        async with AsyncClient(proxy.url, "vq_wrong") as bad:
            with pytest.raises(AuthenticationError):
                await bad.models()

    asyncio.run(main())


# -- a request that fails --------------------------------------------------------------------------------


def test_a_failed_request_raises_request_failed_from_wait_sync_and_async(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=1, VIDQUEUE_EMULATOR_FAILURE_RATE="1") as srv:
        with Client(srv.url, srv.key) as c:
            created = c.submit(TURBO, {"prompt": "doomed"})
            with pytest.raises(RequestFailed) as caught:
                c.wait(created.request_id, poll_interval=0.1)
            assert caught.value.code == "engine_error"
            assert "failure" in caught.value.message
            assert caught.value.request.status == "failed"
            with pytest.raises(RequestFailed):
                c.generate(TURBO, {"prompt": "doomed too"}, tmp_path / "never.mp4", poll_interval=0.1)
            assert not (tmp_path / "never.mp4").exists()

        async def main() -> RequestFailed:
            async with AsyncClient(srv.url, srv.key) as c:
                created = await c.submit(MASTER, {"prompt": "doomed async"})
                try:
                    await c.wait(created.request_id, poll_interval=0.1)
                except RequestFailed as exc:
                    return exc
            raise AssertionError("wait did not raise")

        failure = asyncio.run(main())
        assert failure.code == "engine_error"
