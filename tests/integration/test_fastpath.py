"""The fast path (api/fastpath.py) answers exactly as FastAPI's routes do, and submits arriving together share a commit.

Two real servers share one data folder: one as shipped (the plain submit and read answered in front of FastAPI), one
with OpenTelemetry on, which routes every call through FastAPI. The same call to each must get the same answer:
status, the headers a client reads, and the body (less what differs between two requests: the id and times).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cases import MASTER, PROMPT, TURBO, VIOLATIONS
from tests.support import BASE, SDK_BASE, Server, fast_env, free_port

# What differs between two requests submitted one after the other.
PER_REQUEST = ("request_id", "created_at", "updated_at", "queued_at", "queue_position")
HEADERS = ("content-type", "retry-after", "www-authenticate")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """(the server as shipped, the same data served with every call through FastAPI), no workers."""
    data = Path(tmp_path_factory.mktemp("fastpath")) / "data"
    fast = Server(data_dir=data, port=free_port(), env=fast_env(), workers=0).start()
    routed = Server(data_dir=data, port=free_port(), env=fast_env(VIDQUEUE_OTEL="1"), workers=0)
    try:
        routed.start()
        routed.key = fast.key
        yield fast, routed
    finally:
        routed.stop()
        fast.stop()


def _answer(resp: httpx.Response) -> tuple[int, dict[str, str | None], Any]:
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text
    if isinstance(body, dict) and resp.status_code == 200:
        body = {k: v for k, v in body.items() if k not in PER_REQUEST}
    return resp.status_code, {h: resp.headers.get(h) for h in HEADERS}, body


def _both(pair: tuple[Server, Server], method: str, path: str, **kwargs: Any) -> tuple[Any, Any]:
    fast, routed = pair
    answers = []
    for server in (fast, routed):
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answers.append(_answer(client.request(method, path, **kwargs)))
    return answers[0], answers[1]


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("not JSON", b"{nope", "application/json"),
    ("JSON null", b"null", "application/json"),
    ("an array", b"[]", "application/json"),
    ("empty", b"", "application/json"),
    ("text/plain", json.dumps({"model": MASTER, "payload": {"prompt": PROMPT}}).encode(), "text/plain"),
    (
        "unknown field",
        json.dumps({"model": MASTER, "payload": {"prompt": PROMPT}, "x": 1}).encode(),
        "application/json",
    ),
    ("payload a list", json.dumps({"model": MASTER, "payload": [1]}).encode(), "application/json"),
    (
        "priority 101",
        json.dumps({"model": MASTER, "payload": {"prompt": PROMPT}, "priority": 101}).encode(),
        "application/json",
    ),
    ("unknown model", json.dumps({"model": "nope", "payload": {"prompt": PROMPT}}).encode(), "application/json"),
    ("lone surrogate", b'{"model": "%s", "payload": {"prompt": "a\\ud800"}}' % MASTER.encode(), "application/json"),
    (
        "loopback callback",
        json.dumps({"model": MASTER, "payload": {"prompt": PROMPT}, "callback_url": "ftp://example.com/x"}).encode(),
        "application/json",
    ),
    (
        "deep nesting",
        b'{"model": "%s", "payload": {"prompt": "x", "a": %s1%s}}' % (MASTER.encode(), b"[" * 300, b"]" * 300),
        "application/json",
    ),
]


@pytest.mark.parametrize(("label", "body", "content_type"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_a_bad_submit_gets_the_routes_answer(
    pair: tuple[Server, Server], label: str, body: bytes, content_type: str
) -> None:
    fast, routed = _both(
        pair, "POST", f"{BASE}/requests", content=body, headers={**_auth(pair[0].key), "Content-Type": content_type}
    )
    assert fast == routed, label
    assert fast[0] in (400, 404, 415), fast


@pytest.mark.parametrize(("model", "payload", "field"), VIOLATIONS[::4])
def test_a_payload_violation_gets_the_routes_answer(
    pair: tuple[Server, Server], model: str, payload: dict[str, Any], field: str
) -> None:
    fast, routed = _both(
        pair, "POST", f"{BASE}/requests", json={"model": model, "payload": payload}, headers=_auth(pair[0].key)
    )
    assert fast == routed
    assert fast[0] == 400 and field in json.dumps(fast[2]), fast


@pytest.mark.parametrize("base", [BASE, SDK_BASE])
@pytest.mark.parametrize(
    ("label", "headers"),
    [
        ("no key", {}),
        ("not bearer", {"Authorization": "Basic abc"}),
        ("unknown key", {"Authorization": "Bearer vq_nope"}),
        ("other organisation", {"X-Organization-ID": "someone-else"}),
    ],
)
def test_a_refused_caller_gets_the_routes_answer(
    pair: tuple[Server, Server], base: str, label: str, headers: dict[str, str]
) -> None:
    if label == "other organisation":
        headers = {**headers, **_auth(pair[0].key)}
    body = {"model": MASTER, "payload": {"prompt": PROMPT}}
    for method, path, extra in (("POST", "/requests", {"json": body}), ("GET", "/requests/abc", {})):
        fast, routed = _both(pair, method, base + path, headers=headers, **extra)
        assert fast == routed, (label, method)
        assert fast[0] in (401, 403), fast


@pytest.mark.parametrize("base", [BASE, SDK_BASE])
def test_a_good_submit_and_its_reads_get_the_routes_answer(pair: tuple[Server, Server], base: str) -> None:
    body = {"model": TURBO, "payload": {"prompt": PROMPT, "duration": "10"}, "priority": 3}
    fast, routed = _both(pair, "POST", f"{base}/requests", json=body, headers=_auth(pair[0].key))
    assert fast == routed
    assert fast[0] == 200 and fast[2]["status"] == "queued" and fast[2]["model"] == TURBO, fast
    # One request read through each server: the same row, so the same answer to the byte, position included.
    with httpx.Client(base_url=pair[0].url + base, headers=_auth(pair[0].key), timeout=30) as client:
        created = client.post("/requests", json=body).json()
    read = [
        httpx.get(f"{server.url}{base}/requests/{created['request_id']}", headers=_auth(pair[0].key)) for server in pair
    ]
    assert read[0].status_code == 200 and read[0].content == read[1].content
    assert read[0].json()["queue_position"] >= 1
    missing = _both(pair, "GET", f"{base}/requests/no-such-request", headers=_auth(pair[0].key))
    assert missing[0] == missing[1] and missing[0][0] == 404


def test_calls_the_fast_path_does_not_take_are_still_served(pair: tuple[Server, Server]) -> None:
    fast, _ = pair
    body = {"model": MASTER, "payload": {"prompt": PROMPT}}
    with fast.client() as api:
        # An Idempotency-Key, a chunked body and a charset parameter: FastAPI's route answers the first two.
        first = api.post("/requests", json=body, headers={"Idempotency-Key": "k-1"})
        again = api.post("/requests", json=body, headers={"Idempotency-Key": "k-1"})
        assert (
            first.status_code == again.status_code == 200 and first.json()["request_id"] == again.json()["request_id"]
        )
        chunked = api.post(
            "/requests", content=iter([json.dumps(body).encode()]), headers={"Content-Type": "application/json"}
        )
        assert chunked.status_code == 200, chunked.text
        charset = api.post(
            "/requests", content=json.dumps(body), headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert charset.status_code == 200, charset.text
        # Other reads under the request's path go to their routes.
        rid = charset.json()["request_id"]
        assert api.get(f"/requests/{rid}/deliveries").json() == {"request_id": rid, "deliveries": []}
        assert api.get("/requests", params={"limit": 1}).json()["requests"][0]["request_id"] == rid


def test_fast_path_calls_are_counted_under_their_routes(pair: tuple[Server, Server]) -> None:
    fast, _ = pair

    def count(method: str, route: str, status: str) -> float:
        text = httpx.get(fast.url + "/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "vidqueue_http_request_duration_seconds_count" and labels == {
                    "method": method,
                    "route": route,
                    "status": status,
                }:
                    return sample.value
        return 0.0

    before = (count("POST", "/requests", "200"), count("GET", "/requests/{request_id}", "404"))
    with fast.client() as api:
        assert api.post("/requests", json={"model": MASTER, "payload": {"prompt": PROMPT}}).status_code == 200
        assert api.get("/requests/no-such-request").status_code == 404
    assert count("POST", "/requests", "200") == before[0] + 1
    assert count("GET", "/requests/{request_id}", "404") == before[1] + 1


def test_submits_sent_together_are_all_stored_with_their_own_positions(tmp_path: Path) -> None:
    """60 submits at once (batched into shared transactions): each answered, stored once, positions 1..60 in order."""
    server = Server(data_dir=tmp_path / "data", port=free_port(), env=fast_env(), workers=0).start()
    try:

        async def burst() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=60)
            async with httpx.AsyncClient(base_url=server.url + BASE, headers=_auth(server.key), limits=limits) as api:
                body = {"model": MASTER, "payload": {"prompt": PROMPT}}
                return await asyncio.gather(*(api.post("/requests", json=body) for _ in range(60)))

        answers = asyncio.run(burst())
        assert [a.status_code for a in answers] == [200] * 60
        created = [a.json() for a in answers]
        assert sorted(c["queue_position"] for c in created) == list(range(1, 61))
        with server.client() as api:
            listed = api.get("/requests", params={"limit": 100}).json()
            assert listed["total"] == 60
            assert {r["request_id"] for r in listed["requests"]} == {c["request_id"] for c in created}
            # The answers' positions are the stored queue's: every request reads back with the position it was given.
            for c in created[::7]:
                assert api.get(f"/requests/{c['request_id']}").json()["queue_position"] == c["queue_position"]
    finally:
        server.stop()
