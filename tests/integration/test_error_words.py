"""Every refusal in vidqueue's own words, naming the field, on the GMI paths and on /v1; the SDK without a key."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import vidqueue
from tests.cases import PROMPT, TURBO
from tests.support import BASE, SDK_BASE, Server, free_port, running_server

# Pydantic's phrasing: none of it may reach a client.
PYDANTIC_WORDS = (
    "Input should",
    "String should",
    "should have",
    "valid dictionary",
    "Field required",
    "Extra inputs",
    "Value error",
    "unable to parse",
    "greater than or equal",
    "less than or equal",
    "pydantic",
)
STATUSES = "must be one of queued, processing, success, failed, cancelled"
NOT_AN_IMAGE = "is not a JPEG or PNG image"
MISSING = "0b8f2a52-7c1e-4a43-9d0e-3f1b2c4d5e6f"
TEXT_AS_BASE64 = base64.b64encode(b"These are the notes for the shoot, not a picture of it.\n" * 3).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without workers: every call here is refused before anything would run."""
    tmp: Path = tmp_path_factory.mktemp("words")
    with running_server(tmp, workers=0) as srv:
        yield srv


@dataclass(frozen=True)
class Bad:
    """A call that must be refused: the field to name and the words to use (on GMI's shape and on /v1's)."""

    method: str
    path: str
    status: int
    field: str | None = None
    words: str | None = None
    json: Any = None
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None


def submit(payload: Any = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": TURBO, "payload": {"prompt": PROMPT} if payload is None else payload}
    body.update(fields)
    return body


GMI_CASES = [
    Bad("GET", "/requests", 400, "status", STATUSES, params={"status": "done"}),
    Bad("GET", "/requests", 400, "limit", "must be at least 1", params={"limit": "0"}),
    Bad("GET", "/requests", 400, "limit", "must be at most 100", params={"limit": "101"}),
    Bad("GET", "/requests", 400, "limit", "must be an integer", params={"limit": "ten"}),
    Bad("GET", "/requests", 400, "cursor", params={"cursor": "%%not-a-cursor"}),
    Bad("POST", "/requests", 400, "body", "must be a JSON object", json=[1, 2]),
    Bad("POST", "/requests", 400, "body", "must be a JSON object", json="a fox"),
    Bad("POST", "/requests", 400, "body", "must be a JSON object", json=None),
    Bad("POST", "/requests", 400, "payload", "must be a JSON object", json=submit(payload=["a fox"])),
    Bad("POST", "/requests", 400, "payload", "is required", json={"model": TURBO}),
    Bad("POST", "/requests", 400, "model", "must be a string", json={"model": 5, "payload": {"prompt": PROMPT}}),
    Bad("POST", "/requests", 400, "model", "must not be empty", json={"model": "", "payload": {"prompt": PROMPT}}),
    Bad("POST", "/requests", 400, "priority", "must be an integer", json=submit(priority="high")),
    Bad("POST", "/requests", 400, "priority", "must be an integer", json=submit(priority=1.5)),
    Bad("POST", "/requests", 400, "priority", "must be at most 100", json=submit(priority=1000)),
    Bad("POST", "/requests", 400, "priority", "must be at least -100", json=submit(priority=-1000)),
    Bad("POST", "/requests", 400, "callback_url", "must be a string", json=submit(callback_url=5)),
    Bad("POST", "/requests", 400, "callback_url", "must not be empty", json=submit(callback_url="")),
    Bad("POST", "/requests", 400, "colour", "is not a known field", json=submit(colour="red")),
    Bad("POST", "/requests", 400, "payload.duration", json=submit(payload={"prompt": PROMPT, "duration": "7"})),
    Bad("POST", "/requests", 400, "payload.image", NOT_AN_IMAGE, json=submit({"prompt": PROMPT, "image": "aGVsbG8="})),
    Bad(
        "POST",
        "/requests",
        400,
        "payload.image",
        NOT_AN_IMAGE,
        json=submit({"prompt": PROMPT, "image": TEXT_AS_BASE64}),
    ),
    Bad(
        "POST",
        "/requests",
        400,
        "Idempotency-Key",
        "must be at most 255 characters",
        json=submit(),
        headers={"Idempotency-Key": "k" * 256},
    ),
    Bad("POST", "/requests", 404, "model", "does not exist", json={"model": "kling-v9", "payload": {"prompt": PROMPT}}),
    Bad("GET", "/models/kling-v9", 404, "model", "does not exist"),
    Bad("GET", f"/requests/{MISSING}", 404),
    Bad("POST", f"/requests/{MISSING}/cancel", 404),
    Bad("DELETE", f"/requests/{MISSING}", 404),
    Bad("GET", f"/requests/{MISSING}/deliveries", 404),
]

V1_CASES = [
    Bad("GET", "/videos", 400, "limit", "must be at least 1", params={"limit": "0"}),
    Bad("GET", "/videos", 400, "limit", "must be at most 100", params={"limit": "1000"}),
    Bad("GET", "/videos", 400, "limit", "must be an integer", params={"limit": "ten"}),
    Bad("GET", "/videos", 400, "order", "must be one of asc, desc", params={"order": "newest"}),
    Bad("GET", "/videos", 400, "after", params={"after": MISSING}),
    Bad(
        "GET",
        f"/videos/{MISSING}/content",
        400,
        "variant",
        "must be one of video, thumbnail",
        params={"variant": "gif"},
    ),
    Bad("POST", "/videos", 400, "body", "must be a JSON object", json=[1, 2]),
    Bad(
        "POST",
        "/videos",
        400,
        "input_reference",
        NOT_AN_IMAGE,
        json={"model": TURBO, "prompt": PROMPT, "input_reference": "aGVsbG8="},
    ),
    Bad("POST", "/videos", 400, "seconds", json={"model": TURBO, "prompt": PROMPT, "seconds": "7"}),
    Bad("POST", "/videos", 404, "model", "does not exist", json={"model": "kling-v9", "prompt": PROMPT}),
    Bad("GET", "/models/kling-v9", 404, "model", "does not exist"),
    Bad("GET", f"/videos/{MISSING}", 404),
    Bad("DELETE", f"/videos/{MISSING}", 404),
]


def call(client: httpx.Client, bad: Bad) -> httpx.Response:
    kwargs: dict[str, Any] = {"params": bad.params, "headers": bad.headers}
    if bad.method == "POST":
        kwargs["content"] = json.dumps(bad.json).encode()  # None is JSON's null, not an empty body
        kwargs["headers"] = {"Content-Type": "application/json", **(bad.headers or {})}
    return client.request(bad.method, bad.path, **kwargs)


def assert_own_words(resp: httpx.Response) -> None:
    for words in PYDANTIC_WORDS:
        assert words not in resp.text, resp.text


@pytest.mark.parametrize("base", [BASE, SDK_BASE])
def test_every_refusal_on_the_gmi_paths_names_its_field_in_vidqueue_words(server: Server, base: str) -> None:
    with server.client(base=base) as client:
        for bad in GMI_CASES:
            resp = call(client, bad)
            assert resp.status_code == bad.status, (bad, resp.text)
            assert_own_words(resp)
            body = resp.json()
            if bad.field is None:
                continue
            details = {d["field"]: d["message"] for d in body["details"]}
            assert bad.field in details, (bad, body)
            assert body["error"].startswith(bad.field) or bad.status == 404, (bad, body)
            if bad.words is not None:
                assert bad.words in details[bad.field], (bad, body)


def test_every_refusal_on_v1_names_its_field_in_vidqueue_words(server: Server) -> None:
    with server.client(base="/v1") as client:
        for bad in V1_CASES:
            resp = call(client, bad)
            assert resp.status_code == bad.status, (bad, resp.text)
            assert_own_words(resp)
            error = resp.json()["error"]
            if bad.field is None:
                continue
            assert error["param"] == bad.field, (bad, error)
            if bad.words is not None:
                assert bad.words in error["message"], (bad, error)


def test_the_list_status_rule_reads_as_one_sentence(server: Server) -> None:
    with server.client() as client:
        resp = client.get("/requests", params={"status": "done"})
    assert resp.status_code == 400
    assert resp.json()["error"] == f"status {STATUSES}"
    assert resp.json()["details"] == [{"field": "status", "message": STATUSES}]


def test_an_unknown_model_is_404_with_model_in_details(server: Server) -> None:
    with server.client() as client:
        resp = client.post("/requests", json={"model": "kling-v2-5-TURBO", "payload": {"prompt": PROMPT}})
    assert resp.status_code == 404
    body = resp.json()
    assert body["code"] == "not_found"
    [detail] = body["details"]
    assert detail["field"] == "model"
    assert "did you mean 'kling-v2-5-turbo'" in detail["message"]


def test_an_uploaded_file_that_is_not_an_image_is_named_so_on_v1(server: Server) -> None:
    with server.client(base="/v1") as client:
        resp = client.post(
            "/videos",
            data={"model": TURBO, "prompt": PROMPT},
            files={"input_reference": ("notes.txt", b"These are notes, not a picture.\n", "text/plain")},
        )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == "input_reference"
    assert NOT_AN_IMAGE in error["message"]


# -- the SDK with no key --------------------------------------------------------------------------------------


def test_the_sdk_without_a_key_says_so_before_sending_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VIDQUEUE_API_KEY", "GMI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    # Nothing listens here: a request that went out would be a NetworkError, not this.
    closed = f"http://127.0.0.1:{free_port()}"
    with vidqueue.Client(closed, max_retries=0) as client, pytest.raises(vidqueue.MissingAPIKey) as caught:
        client.submit(TURBO, {"prompt": PROMPT})
    assert "VIDQUEUE_API_KEY" in str(caught.value)
    assert "HTTP" not in str(caught.value)

    async def main() -> None:
        async with vidqueue.AsyncClient(closed, max_retries=0) as client:
            await client.models()

    with pytest.raises(vidqueue.MissingAPIKey, match="VIDQUEUE_API_KEY"):
        asyncio.run(main())
