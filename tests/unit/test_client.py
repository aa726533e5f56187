"""The SDK against httpx.MockTransport: GMI Cloud's public answers, retries, errors, waiting and resumed downloads."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import vidqueue
from vidqueue import (
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    Request,
    RequestCancelled,
    RequestFailed,
    RequestNotFinished,
    ServerError,
    ValidationError,
    VidqueueError,
)
from vidqueue.client import _core

GMI = "https://console.gmicloud.ai"
ROOT = GMI + "/api/v1/ie/requestqueue/apikey"
VIDEO = bytes(range(256)) * 4096  # 1 MiB that shows any misplaced byte
RID = "6fb2b474-fb3a-480f-a142-f200537c6de4"

# What GMI's public docs show: no vidqueue extension fields, the older outcome keys.
GMI_QUEUED = {
    "request_id": RID,
    "model": "kling-v2-5-turbo",
    "status": "queued",
    "created_at": 1753468514,
    "updated_at": 1753468514,
    "queued_at": 1753468514,
}
GMI_SUCCESS = {
    **GMI_QUEUED,
    "org_id": "8a1f0e",
    "status": "success",
    "is_public": False,
    "payload": {"prompt": "a fox", "duration": "5"},
    "outcome": {
        "video_url": "https://storage.example.com/out/video.mp4?token=abc",
        "thumbnail_image_url": "https://storage.example.com/out/thumb.jpg",
    },
    "qworker_id": "qw-77",
    "a_field_from_the_future": {"x": 1},
}


Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **kwargs: Any) -> Client:
    """A sync client for GMI Cloud whose transport is ``handler``."""
    kwargs.setdefault("api_key", "gmi-key")
    return Client(GMI, transport=httpx.MockTransport(handler), **kwargs)


def aclient(handler: Handler, **kwargs: Any) -> AsyncClient:
    """An async client for GMI Cloud whose transport is ``handler``."""
    kwargs.setdefault("api_key", "gmi-key")
    return AsyncClient(GMI, transport=httpx.MockTransport(handler), **kwargs)


@pytest.fixture
def naps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every sleep the clients take, recorded instead of slept."""
    slept: list[float] = []

    async def asleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("vidqueue.client.sync.time.sleep", slept.append)
    monkeypatch.setattr("vidqueue.client.aio.asyncio.sleep", asleep)
    return slept


# -- the package surface -----------------------------------------------------------------------------------


def test_all_names_exactly_the_public_surface_and_each_is_importable() -> None:
    expected = {
        "Client",
        "AsyncClient",
        "VidqueueError",
        "APIError",
        "AuthenticationError",
        "NotFoundError",
        "ValidationError",
        "ConflictError",
        "RateLimitError",
        "ServerError",
        "NetworkError",
        "TimeoutError",
        "RequestFailed",
        "RequestCancelled",
        "RequestNotFinished",
        "FieldDetail",
        "MissingAPIKey",
        "Model",
        "Parameter",
        "PriceInfo",
        "Request",
        "Outcome",
        "OutcomeError",
        "MediaUrl",
        "Delivery",
        "VideoInfo",
        "__version__",
    }
    assert set(vidqueue.__all__) == expected
    assert len(vidqueue.__all__) == len(expected)
    for name in vidqueue.__all__:
        assert getattr(vidqueue, name) is not None
    for name in set(expected) - {"__version__"}:
        assert getattr(vidqueue.client, name) is getattr(vidqueue, name)


def test_every_sdk_exception_descends_from_the_root_and_timeout_is_also_the_builtin() -> None:
    for name in vidqueue.__all__:
        value = getattr(vidqueue, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, VidqueueError), name
    assert issubclass(vidqueue.TimeoutError, TimeoutError)
    for cls in (AuthenticationError, NotFoundError, ValidationError, RateLimitError, ServerError, ConflictError):
        assert issubclass(cls, vidqueue.APIError)


def test_the_client_package_imports_nothing_of_the_server() -> None:
    import subprocess
    import sys

    code = (
        "import sys, vidqueue\n"
        "from vidqueue import Client, AsyncClient\n"
        "server = [m for m in sys.modules if m.startswith('vidqueue.') and not m.startswith('vidqueue.client')]\n"
        "heavy = [m for m in ('fastapi', 'starlette', 'sqlalchemy', 'av', 'PIL', 'numpy') if m in sys.modules]\n"
        "print(server, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[] []"


def no_key_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VIDQUEUE_API_KEY", "GMI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_with_no_key_every_call_raises_missing_api_key_and_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    no_key_anywhere(monkeypatch)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    with Client(GMI, transport=httpx.MockTransport(handler)) as c:
        calls: list[Callable[[], object]] = [
            c.models,
            lambda: c.submit("kling-v2-5-turbo", {"prompt": "a fox"}),
            lambda: c.get(RID),
            lambda: list(c.list()),
            lambda: c.cancel(RID),
            lambda: c.wait(RID, timeout=1),
        ]
        for call in calls:
            with pytest.raises(vidqueue.MissingAPIKey) as caught:
                call()
            assert "VIDQUEUE_API_KEY" in str(caught.value)
    assert seen == []
    # To a caller it is what a server would answer: an authentication error, under the usual root.
    assert isinstance(caught.value, AuthenticationError)
    assert caught.value.code == "missing_api_key"


def test_the_async_client_with_no_key_raises_missing_api_key_and_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_key_anywhere(monkeypatch)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    async def main() -> None:
        async with AsyncClient(GMI, transport=httpx.MockTransport(handler)) as c:
            with pytest.raises(vidqueue.MissingAPIKey, match="VIDQUEUE_API_KEY"):
                await c.models()
            with pytest.raises(vidqueue.MissingAPIKey, match="VIDQUEUE_API_KEY"):
                await c.submit("kling-v2-5-turbo", {"prompt": "a fox"})
            with pytest.raises(vidqueue.MissingAPIKey, match="VIDQUEUE_API_KEY"):
                await c.wait(RID, timeout=1)

    asyncio.run(main())
    assert seen == []


def test_defaults_come_from_the_documented_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VIDQUEUE_BASE_URL", "VIDQUEUE_API_KEY", "GMI_API_KEY", "VIDQUEUE_ORGANIZATION_ID"):
        monkeypatch.delenv(name, raising=False)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"model_ids": []})

    with Client(transport=httpx.MockTransport(handler)) as c:
        assert c.base_url == "http://127.0.0.1:8000"
        assert c.api_key is None

    monkeypatch.setenv("GMI_API_KEY", "from-gmi")
    with Client(transport=httpx.MockTransport(handler)) as c:
        c.models()
    assert str(seen[-1].url) == "http://127.0.0.1:8000/api/v1/ie/requestqueue/apikey/models"
    assert seen[-1].headers["authorization"] == "Bearer from-gmi"

    monkeypatch.setenv("VIDQUEUE_API_KEY", "from-vidqueue")
    monkeypatch.setenv("VIDQUEUE_BASE_URL", "http://vq.internal:9000/")
    with Client(transport=httpx.MockTransport(handler), organization_id="org-1") as c:
        c.models()
    assert seen[-1].headers["authorization"] == "Bearer from-vidqueue"
    assert seen[-1].headers["x-organization-id"] == "org-1"
    assert str(seen[-1].url) == "http://vq.internal:9000/api/v1/ie/requestqueue/apikey/models"

    # An argument beats the variables; a base URL that already names the queue's path is kept as given.
    with Client("https://h.example/api/v1/ie/requestqueue", "arg", transport=httpx.MockTransport(handler)) as c:
        c.models()
    assert seen[-1].headers["authorization"] == "Bearer arg"
    assert str(seen[-1].url) == "https://h.example/api/v1/ie/requestqueue/models"


# -- GMI Cloud's public answers ----------------------------------------------------------------------------


def gmi_handler(calls: list[httpx.Request]) -> Handler:
    """GMI Cloud as its public docs show it: bare model_ids, video_url outcomes, no extension fields."""

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        path = request.url.path
        if request.url.host == "storage.example.com":
            assert "authorization" not in request.headers  # the key never leaves for another host
            return httpx.Response(200, content=VIDEO, headers={"content-length": str(len(VIDEO))})
        assert request.headers["authorization"] == "Bearer gmi-key"
        if path.endswith("/models"):
            return httpx.Response(200, json={"model_ids": ["kling-v2-5-turbo", "Kling-Text2Video-V2-Master"]})
        if path.endswith("/models/kling-v2-5-turbo"):
            return httpx.Response(200, json={"model": "kling-v2-5-turbo", "parameters": [{"name": "prompt"}]})
        if path.endswith("/requests") and request.method == "POST":
            body = json.loads(request.content)
            assert body == {"model": "kling-v2-5-turbo", "payload": {"prompt": "a fox"}}
            return httpx.Response(200, json=GMI_QUEUED)
        if path.endswith(f"/requests/{RID}"):
            # queued, then processing, then done: what a poller sees
            polls = sum(1 for c in calls if c.url.path.endswith(f"/requests/{RID}"))
            if polls == 1:
                return httpx.Response(200, json=GMI_QUEUED)
            if polls == 2:
                return httpx.Response(200, json={**GMI_QUEUED, "status": "processing"})
            return httpx.Response(200, json=GMI_SUCCESS)
        if path.endswith("/requests"):
            return httpx.Response(200, json={"requests": [GMI_SUCCESS]})  # no total, no cursor
        return httpx.Response(404, json={"error": "not found"})

    return handle


def test_models_from_a_bare_model_ids_list() -> None:
    calls: list[httpx.Request] = []
    with client(gmi_handler(calls)) as c:
        models = c.models()
        one = c.model("kling-v2-5-turbo")
    assert [m.model for m in models] == ["kling-v2-5-turbo", "Kling-Text2Video-V2-Master"]
    assert models[0].parameters == []
    assert one.parameter("prompt") is not None
    assert one.parameter("seed") is None
    assert calls[0].url.path == "/api/v1/ie/requestqueue/apikey/models"


def test_generate_against_gmi_answers_reads_the_older_video_url(tmp_path: Path) -> None:
    calls: list[httpx.Request] = []
    seen: list[str] = []
    with client(gmi_handler(calls)) as c:
        done = c.generate(
            "kling-v2-5-turbo",
            {"prompt": "a fox"},
            tmp_path / "fox.mp4",
            poll_interval=0.01,
            on_progress=lambda r: seen.append(r.status),
        )
    assert done.status == "success"
    assert done.video_url == "https://storage.example.com/out/video.mp4?token=abc"
    assert done.outcome is not None and done.outcome.media_urls == [] and done.outcome.video is None
    assert done.progress is None and done.queue_position is None  # extension fields absent: no harm
    assert done.model_extra == {"a_field_from_the_future": {"x": 1}}
    assert seen == ["queued", "processing", "success"]
    assert (tmp_path / "fox.mp4").read_bytes() == VIDEO
    assert not list(tmp_path.glob("*.part"))
    submit = next(r for r in calls if r.method == "POST")
    assert submit.headers["idempotency-key"]  # generate makes its submit safe to retry


def test_list_without_pagination_fields_stops_after_the_one_page() -> None:
    calls: list[httpx.Request] = []
    with client(gmi_handler(calls)) as c:
        found = list(c.list(model_id="kling-v2-5-turbo"))
    assert [r.request_id for r in found] == [RID]
    assert len([r for r in calls if r.url.path.endswith("/requests")]) == 1
    assert calls[-1].url.params["model_id"] == "kling-v2-5-turbo"


def test_async_client_reads_gmi_answers_too(tmp_path: Path) -> None:
    calls: list[httpx.Request] = []

    async def main() -> tuple[list[str], Request, list[str]]:
        async with aclient(gmi_handler(calls)) as c:
            models = [m.model for m in await c.models()]
            done = await c.generate("kling-v2-5-turbo", {"prompt": "a fox"}, tmp_path / "a.mp4", poll_interval=0.01)
            listed = [r.request_id async for r in c.list()]
            return models, done, listed

    models, done, listed = asyncio.run(main())
    assert models == ["kling-v2-5-turbo", "Kling-Text2Video-V2-Master"]
    assert done.status == "success"
    assert listed == [RID]
    assert (tmp_path / "a.mp4").read_bytes() == VIDEO


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ({"media_urls": [{"id": "0", "url": "https://a/v.mp4"}], "video_url": "https://a/old.mp4"}, "https://a/v.mp4"),
        ({"video_url": "https://a/old.mp4"}, "https://a/old.mp4"),
        ({"media_urls": [{"url": "https://a/1.mp4"}, {"url": "https://a/2.mp4"}]}, "https://a/1.mp4"),
        ({}, None),
        (None, None),
    ],
)
def test_both_outcome_shapes_give_the_video_url(shape: dict[str, Any] | None, expected: str | None) -> None:
    request = Request.model_validate({"request_id": "r", "status": "success", "outcome": shape})
    assert request.video_url == expected


def test_timestamps_are_read_in_seconds_from_several_spellings() -> None:
    request = Request.model_validate(
        {
            "request_id": "r",
            "created_at": 1753468514000,  # milliseconds
            "updated_at": "2025-07-25T18:35:14Z",
            "queued_at": "1753468514",
            "processing_at": 1753468514.9,
        }
    )
    assert request.created_at == request.updated_at == request.queued_at == request.processing_at == 1753468514


def test_an_error_object_in_place_of_the_one_line_error_is_read() -> None:
    request = Request.model_validate(
        {
            "request_id": "r",
            "status": "failed",
            "error": {"code": "x", "message": "it broke"},
            "outcome": {"error": "no"},
        }
    )
    assert request.error == "it broke"
    assert request.outcome is not None and request.outcome.error is not None
    assert request.outcome.error.message == "no"


# -- errors ------------------------------------------------------------------------------------------------


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    """A transport that gives every call the same answer."""

    def handle(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return handle


@pytest.mark.parametrize(
    ("status", "body", "cls", "message"),
    [
        (401, {"error": "Invalid API key"}, AuthenticationError, "Invalid API key"),
        (403, {"error": "organisation mismatch", "code": "forbidden"}, AuthenticationError, "organisation mismatch"),
        (404, {"error": "Model not found"}, NotFoundError, "Model not found"),
        (409, {"error": "key reused", "code": "idempotency_conflict"}, ConflictError, "key reused"),
        (400, {"error": "Content policy violation"}, ValidationError, "Content policy violation"),
        (413, {"error": {"message": "too big", "code": "too_large"}}, ValidationError, "too big"),
        (500, "Internal Server Error", ServerError, "Internal Server Error"),
        (502, "<html>bad gateway</html>", ServerError, "<html>bad gateway</html>"),
        (418, {"message": "short and stout"}, vidqueue.APIError, "short and stout"),
    ],
)
def test_error_answers_map_to_their_exception(status: int, body: Any, cls: type[Exception], message: str) -> None:
    with client(answer(status, body), max_retries=0) as c, pytest.raises(cls) as caught:
        c.get(RID)
    error = caught.value
    assert isinstance(error, vidqueue.APIError)
    assert error.status_code == status
    assert error.message == message
    assert str(status) in str(error)


def test_validation_error_carries_field_details_in_both_shapes() -> None:
    ours = {
        "error": "The payload breaks 2 rules.",
        "code": "invalid_payload",
        "details": [
            {"field": "payload.cfg_scale", "message": "must be between 0 and 1"},
            {"field": "payload.bogus", "message": "is not a parameter"},
        ],
    }
    with client(answer(400, ours)) as c, pytest.raises(ValidationError) as caught:
        c.submit("kling-v2-5-turbo", {"prompt": "x", "cfg_scale": 3, "bogus": 1})
    assert caught.value.code == "invalid_payload"
    assert [(d.field, d.message) for d in caught.value.details] == [
        ("payload.cfg_scale", "must be between 0 and 1"),
        ("payload.bogus", "is not a parameter"),
    ]
    assert "payload.cfg_scale: must be between 0 and 1" in str(caught.value)

    fastapi_default = {"detail": [{"loc": ["body", "payload", "prompt"], "msg": "Field required"}]}
    with client(answer(422, fastapi_default)) as c, pytest.raises(ValidationError) as caught:
        c.submit("kling-v2-5-turbo", {})
    assert [(d.field, d.message) for d in caught.value.details] == [("payload.prompt", "Field required")]


def test_rate_limit_error_carries_retry_after_once_retries_are_spent(naps: list[float]) -> None:
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(429, json={"error": "slow down"}, headers={"Retry-After": "7"})

    with client(handle, max_retries=2) as c, pytest.raises(RateLimitError) as caught:
        c.get(RID)
    assert caught.value.retry_after == 7
    assert len(calls) == 3
    assert naps == [7, 7]  # Retry-After honoured, not the backoff


def test_a_non_json_success_answer_is_a_server_error() -> None:
    with client(answer(200, "<html>login</html>")) as c, pytest.raises(ServerError) as caught:
        c.get(RID)
    assert "not JSON" in caught.value.message


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"status": "queued"}, "request_id"),
        ({"request_id": "r", "progress": "lots"}, "progress"),
        ("done", "the answer"),
    ],
)
def test_an_answer_of_the_wrong_shape_is_a_server_error_naming_the_field(body: Any, where: str) -> None:
    with client(answer(200, body)) as c, pytest.raises(ServerError) as caught:
        c.cancel(RID)
    assert where in caught.value.message
    assert "/cancel" in caught.value.message


# -- retries -----------------------------------------------------------------------------------------------


def flaky(failures: list[Any], then: Handler) -> tuple[Handler, list[httpx.Request]]:
    """A transport that fails with each of ``failures`` in turn (an exception or a status), then answers."""
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) <= len(failures):
            failure = failures[len(calls) - 1]
            if isinstance(failure, int):
                return httpx.Response(failure, json={"error": "busy"}, headers={"Retry-After": "1"})
            raise failure("boom", request=request)
        return then(request)

    return handle, calls


def test_safe_calls_retry_connection_errors_and_busy_answers(naps: list[float]) -> None:
    handler, calls = flaky(
        [httpx.ConnectError, httpx.ReadTimeout, 503, httpx.RemoteProtocolError], answer(200, GMI_QUEUED)
    )
    with client(handler) as c:
        assert c.get(RID).status == "queued"
    assert len(calls) == 5
    assert len(naps) == 4
    assert naps[2] == 1  # the 503's Retry-After
    # The backoff doubles from 0.5 s (half of each delay jittered): attempt 0 in [0.25, 0.5], 1 in [0.5, 1] …
    assert 0.25 <= naps[0] <= 0.5 and 0.5 <= naps[1] <= 1.0 and 2.0 <= naps[3] <= 4.0


def test_a_submit_without_idempotency_key_is_never_retried(naps: list[float]) -> None:
    handler, calls = flaky([httpx.ReadError], answer(200, GMI_QUEUED))
    with client(handler) as c, pytest.raises(NetworkError):
        c.submit("kling-v2-5-turbo", {"prompt": "a fox"})
    assert len(calls) == 1 and naps == []

    handler, calls = flaky([503], answer(200, GMI_QUEUED))
    with client(handler) as c, pytest.raises(ServerError) as caught:
        c.submit("kling-v2-5-turbo", {"prompt": "a fox"})
    assert caught.value.retry_after == 1
    assert len(calls) == 1


def test_a_submit_with_idempotency_key_is_retried_with_the_same_key(naps: list[float]) -> None:
    handler, calls = flaky([httpx.ReadError, 429], answer(200, GMI_QUEUED))
    with client(handler) as c:
        created = c.submit("kling-v2-5-turbo", {"prompt": "a fox"}, idempotency_key="k-1", callback_url="https://h/cb")
    assert created.request_id == RID
    assert len(calls) == 3
    assert {r.headers["idempotency-key"] for r in calls} == {"k-1"}
    assert {r.content for r in calls} == {calls[0].content}
    assert json.loads(calls[0].content)["callback_url"] == "https://h/cb"


def test_a_timeout_after_the_retries_is_the_sdk_timeout_error(naps: list[float]) -> None:
    handler, calls = flaky([httpx.ReadTimeout] * 10, answer(200, GMI_QUEUED))
    with client(handler, max_retries=3) as c, pytest.raises(vidqueue.TimeoutError) as caught:
        c.get(RID)
    assert len(calls) == 4
    assert isinstance(caught.value, TimeoutError)
    assert "/requests/" in caught.value.message


def test_an_over_long_retry_after_is_not_slept_through(naps: list[float]) -> None:
    calls: list[httpx.Request] = []

    def long_wait(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, json={"error": "down for maintenance"}, headers={"Retry-After": "3600"})

    with client(long_wait) as c, pytest.raises(ServerError) as caught:
        c.get(RID)
    assert caught.value.retry_after == 3600
    assert naps == []


# -- waiting -----------------------------------------------------------------------------------------------


def sequence(states: list[dict[str, Any]]) -> Handler:
    """Answers each GET of the request with the next state, the last one forever; no status stream (as GMI Cloud)."""
    seen = [0]

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"message": "not found"})
        i = min(seen[0], len(states) - 1)
        seen[0] += 1
        return httpx.Response(200, json={"request_id": RID, **states[i]})

    return handle


def test_wait_reports_each_change_and_backs_off_while_nothing_moves(naps: list[float]) -> None:
    states = [{"status": "queued", "queue_position": 2}] * 4 + [
        {"status": "queued", "queue_position": 1},
        {"status": "processing", "progress": 40},
        {"status": "processing", "progress": 40},
        {"status": "success", "progress": 100, "outcome": {"video_url": "https://x/v.mp4"}},
    ]
    seen: list[tuple[str, Any]] = []
    with client(sequence(states)) as c:
        done = c.wait(
            RID,
            poll_interval=1.0,
            max_poll_interval=2.0,
            on_progress=lambda r: seen.append((r.status, r.queue_position or r.progress)),
        )
    assert done.status == "success"
    assert seen == [("queued", 2), ("queued", 1), ("processing", 40), ("success", 100)]
    # Unchanged polls back off by 1.5 times up to the cap; a change resets to the interval.
    assert naps == [1.0, 1.5, 2.0, 2.0, 1.0, 1.0, 1.5]


def test_wait_raises_request_failed_with_code_and_message() -> None:
    failed = {
        "status": "failed",
        "error": "The prompt was refused by the content policy.",
        "outcome": {"error": {"code": "upstream_rejected", "message": "The prompt was refused by the content policy."}},
    }
    with client(sequence([failed])) as c, pytest.raises(RequestFailed) as caught:
        c.wait(RID)
    assert caught.value.code == "upstream_rejected"
    assert caught.value.message == "The prompt was refused by the content policy."
    assert caught.value.request.status == "failed"
    assert RID in str(caught.value)


def test_wait_raises_request_cancelled() -> None:
    with client(sequence([{"status": "cancelled"}])) as c, pytest.raises(RequestCancelled) as caught:
        c.wait(RID)
    assert caught.value.request.request_id == RID


def test_wait_gives_up_at_its_timeout_with_the_last_state(naps: list[float]) -> None:
    with client(sequence([{"status": "processing", "progress": 10}])) as c, pytest.raises(vidqueue.TimeoutError) as c2:
        c.wait(RID, timeout=0.05, poll_interval=0.01)
    assert c2.value.request is not None and c2.value.request.progress == 10
    assert "still processing" in c2.value.message
    with client(sequence([{"status": "queued"}]), wait_timeout=0.05) as c, pytest.raises(vidqueue.TimeoutError):
        c.wait(RID, poll_interval=0.01)  # the client's default ceiling


def test_an_unknown_status_is_waited_through() -> None:
    states = [{"status": "pending"}, {"status": "success", "outcome": {"video_url": "https://x/v.mp4"}}]
    with client(sequence(states)) as c:
        assert c.wait(RID, poll_interval=0.001).status == "success"


# -- downloads ---------------------------------------------------------------------------------------------


class Breaking(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that sends ``cut`` bytes of ``data`` and then drops the connection."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut = data, cut

    def __iter__(self) -> Iterator[bytes]:
        yield self.data[: self.cut]
        raise httpx.ReadError("connection reset")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data[: self.cut]
        raise httpx.ReadError("connection reset")


class MediaServer:
    """A media host that honours Range and If-Range, breaks the first ``breaks`` transfers, and can expire URLs."""

    def __init__(self, *, breaks: int = 0, honour_range: bool = True, expire_first: bool = False) -> None:
        self.breaks = breaks
        self.honour_range = honour_range
        self.expire_first = expire_first
        self.media: list[httpx.Request] = []
        self.api: list[httpx.Request] = []
        self.etag = '"' + hashlib.md5(VIDEO).hexdigest() + '"'

    def state(self) -> dict[str, Any]:
        token = len(self.api)
        return {
            "request_id": RID,
            "status": "success",
            "outcome": {"media_urls": [{"id": "0", "url": f"https://media.example/v.mp4?t={token}"}]},
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "media.example":
            self.api.append(request)
            return httpx.Response(200, json=self.state())
        self.media.append(request)
        if self.expire_first and request.url.params["t"] == "0":
            return httpx.Response(403, json={"error": "The media URL is invalid or has expired."})
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("range", ""))
        if match and self.honour_range and request.headers.get("if-range") in (None, self.etag):
            start = int(match.group(1))
        body = VIDEO[start:]
        headers = {"etag": self.etag, "content-length": str(len(body))}
        status = 200
        if start:
            status = 206
            headers["content-range"] = f"bytes {start}-{len(VIDEO) - 1}/{len(VIDEO)}"
        if self.breaks:
            self.breaks -= 1
            return httpx.Response(status, headers=headers, stream=Breaking(body, len(body) // 3))
        return httpx.Response(status, headers=headers, content=body)


def ranges(server: MediaServer) -> list[str | None]:
    return [r.headers.get("range") for r in server.media]


def test_download_resumes_with_range_after_broken_connections(tmp_path: Path, naps: list[float]) -> None:
    server = MediaServer(breaks=2)
    progress: list[tuple[int, int | None]] = []
    with client(server) as c:
        path = c.download(RID, tmp_path / "v.mp4", on_progress=lambda done, total: progress.append((done, total)))
    assert path.read_bytes() == VIDEO
    first = len(VIDEO) // 3
    second = first + (len(VIDEO) - first) // 3
    assert ranges(server) == [None, f"bytes={first}-", f"bytes={second}-"]
    assert all(r.headers["if-range"] == server.etag for r in server.media[1:])
    assert all(r.headers["accept-encoding"] == "identity" for r in server.media)
    assert all("authorization" not in r.headers for r in server.media)
    assert progress[-1] == (len(VIDEO), len(VIDEO))
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


def test_download_restarts_when_the_server_ignores_range(tmp_path: Path, naps: list[float]) -> None:
    server = MediaServer(breaks=1, honour_range=False)
    with client(server) as c:
        c.download(RID, tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO
    assert len(server.media) == 2


def test_download_fetches_the_request_again_when_its_url_expired(tmp_path: Path, naps: list[float]) -> None:
    server = MediaServer(expire_first=True)
    with client(server) as c:
        stale = Request.model_validate(server.state())
        c.download(stale, tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO
    assert [r.url.params["t"] for r in server.media] == ["0", "1"]
    assert len(server.api) == 1  # one fresh GET of the request


def test_download_of_a_stale_unfinished_request_object_asks_for_its_current_state(tmp_path: Path) -> None:
    server = MediaServer()
    with client(server) as c:
        c.download(Request(request_id=RID, status="processing"), tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO
    assert len(server.api) == 1


def test_async_download_resumes_too(tmp_path: Path, naps: list[float]) -> None:
    server = MediaServer(breaks=3)

    async def main() -> Path:
        async with aclient(server) as c:
            return await c.download(RID, tmp_path / "v.mp4")

    assert asyncio.run(main()).read_bytes() == VIDEO
    assert len(server.media) == 4


def test_download_gives_up_after_its_retries_and_leaves_no_finished_file(tmp_path: Path, naps: list[float]) -> None:
    server = MediaServer(breaks=100)
    with client(server, max_retries=2) as c, pytest.raises(NetworkError):
        c.download(RID, tmp_path / "v.mp4")
    # Each break still moved the file forward, so it kept going while bytes arrived.
    assert len(server.media) > 3
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .part


def test_download_of_an_unfinished_or_failed_request_says_why(tmp_path: Path) -> None:
    with client(sequence([{"status": "processing"}])) as c, pytest.raises(RequestNotFinished) as caught:
        c.download(RID, tmp_path / "v.mp4")
    assert "processing" in str(caught.value)
    failed = {"status": "failed", "outcome": {"error": {"code": "engine_error", "message": "boom"}}}
    with client(sequence([failed])) as c, pytest.raises(RequestFailed) as failure:
        c.download(RID, tmp_path / "v.mp4")
    assert failure.value.code == "engine_error"
    assert not (tmp_path / "v.mp4").exists()


# -- pagination --------------------------------------------------------------------------------------------


def test_list_follows_cursors_lazily() -> None:
    pages = {None: (["a", "b"], "c1"), "c1": (["c", "d"], "c2"), "c2": (["e"], None)}
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        ids, nxt = pages[request.url.params.get("cursor")]
        body = {"requests": [{"request_id": i, "status": "success"} for i in ids], "total": 5, "next_cursor": nxt}
        return httpx.Response(200, json=body)

    with client(handle) as c:
        it = c.list(status="success", page_size=2)
        assert next(it).request_id == "a"
        assert len(calls) == 1  # nothing fetched before it is needed
        assert [r.request_id for r in it] == ["b", "c", "d", "e"]
    assert len(calls) == 3
    assert {r.url.params["status"] for r in calls} == {"success"}
    assert {r.url.params["limit"] for r in calls} == {"2"}


def test_a_bare_list_answer_is_one_page() -> None:
    with client(answer(200, [{"request_id": "a"}, {"request_id": "b"}])) as c:
        assert [r.request_id for r in c.list()] == ["a", "b"]


def test_ids_cannot_change_the_path() -> None:
    with client(answer(200, GMI_QUEUED)) as c:
        for bad in ("", "../models", "a/b", ".."):
            with pytest.raises(ValueError):
                c.get(bad)
    assert _core.api_root("https://x/") == "https://x/api/v1/ie/requestqueue/apikey"
