"""Request limits against the real server: submits per minute and active requests per organisation, the queue cap,
the body cap."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cases import PROMPT, TURBO
from tests.support import Server, running_server, submit, wait_for

BODY = {"model": TURBO, "payload": {"prompt": PROMPT}}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An API-only server allowing 3 submits a minute per organisation and bodies up to 64 KiB."""
    tmp: Path = tmp_path_factory.mktemp("limited")
    with running_server(tmp, workers=0, VIDQUEUE_REQUESTS_PER_MINUTE="3", VIDQUEUE_MAX_BODY_BYTES="65536") as srv:
        yield srv


def _error(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "code", "details"} and body["code"] == code, body
    return str(body["error"])


def test_the_submit_over_the_per_minute_limit_gets_429_with_an_honest_retry_after(limited: Server) -> None:
    key = limited.create_key("per-minute")
    with limited.client(key) as api:
        accepted = [api.post("/requests", json=BODY, headers={"Idempotency-Key": f"pm-{i}"}) for i in range(3)]
        assert [r.status_code for r in accepted] == [200, 200, 200]
        refused = api.post("/requests", json=BODY)
        message = _error(refused, 429, "rate_limited")
        assert "3 requests per minute" in message and "limits.requests_per_minute" in message
        # One more fits when the first of the three leaves the 60 s window: a minute after it, give or take.
        assert 50 <= int(refused.headers["Retry-After"]) <= 60
        # A retry of a submit that went through is not a new submit: it answers the original, limit or not.
        replay = api.post("/requests", json=BODY, headers={"Idempotency-Key": "pm-0"})
        assert replay.status_code == 200, replay.text
        assert replay.json()["request_id"] == accepted[0].json()["request_id"]
        # Reads are never limited.
        assert api.get("/requests").json()["total"] == 3


def test_limits_are_per_organisation(limited: Server) -> None:
    busy, calm = limited.create_key("busy"), limited.create_key("calm")
    with limited.client(busy) as api:
        for _ in range(3):
            submit(api, TURBO, {"prompt": PROMPT})
        assert api.post("/requests", json=BODY).status_code == 429
    with limited.client(calm) as api:
        assert submit(api, TURBO, {"prompt": PROMPT})["status"] == "queued"


def test_a_body_over_the_cap_gets_413_naming_the_limit(limited: Server) -> None:
    with limited.client() as api:
        big = {"model": TURBO, "payload": {"prompt": "x" * 70_000}}
        message = _error(api.post("/requests", json=big), 413, "payload_too_large")
        assert "64 KiB" in message and "limits.max_body_bytes" in message
        # A chunked body (no Content-Length) is counted as it arrives.
        chunks = (part for part in [b'{"model": "x", "payload": {"prompt": "', b"x" * 70_000, b'"}}'])
        chunked = api.post("/requests", content=chunks, headers={"Content-Type": "application/json"})
        assert "64 KiB" in _error(chunked, 413, "payload_too_large")


def test_over_max_active_gets_429_until_one_finishes(tmp_path: Path) -> None:
    env = {"VIDQUEUE_MAX_ACTIVE_PER_ORG": "2", "VIDQUEUE_EMULATOR_LATENCY_S": "1.5"}
    with running_server(tmp_path, workers=1, **env) as server, server.client() as api:
        first = submit(api, TURBO, {"prompt": PROMPT})
        submit(api, TURBO, {"prompt": PROMPT})
        refused = api.post("/requests", json=BODY)
        message = _error(refused, 429, "too_many_active")
        assert "limit of 2" in message and "limits.max_active_per_org" in message
        assert refused.headers["Retry-After"] == "5"
        assert wait_for(api, first["request_id"])["status"] == "success"
        assert submit(api, TURBO, {"prompt": PROMPT})["status"] == "queued"


def test_a_full_queue_gets_503_with_retry_after_for_every_organisation(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=0, VIDQUEUE_MAX_QUEUED="2") as server, server.client() as api:
        first = submit(api, TURBO, {"prompt": PROMPT})
        submit(api, TURBO, {"prompt": PROMPT})
        refused = api.post("/requests", json=BODY)
        message = _error(refused, 503, "queue_full")
        assert "limit of 2" in message and "limits.max_queued" in message
        assert int(refused.headers["Retry-After"]) >= 1
        with server.client(server.create_key("elsewhere")) as other:
            assert _error(other.post("/requests", json=BODY), 503, "queue_full")
        assert api.post(f"/requests/{first['request_id']}/cancel").status_code == 200
        deadline = time.monotonic() + 5
        while (resp := api.post("/requests", json=BODY)).status_code != 200:
            assert time.monotonic() < deadline, resp.text
            time.sleep(0.1)
