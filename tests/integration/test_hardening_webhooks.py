"""Webhook dispatch is fair across organisations (issue 17, finding 4), against the real server.

The dispatcher used to lease a batch of due deliveries by time alone and wait for the whole batch: 24 deliveries to
one organisation's receiver that answers after 9.5 s delayed another organisation's first webhook by 28.6 s. Now
a slot is refilled as soon as its send ends, an organisation holds at most `per_org_concurrency` slots, and
organisations take turns, so a slow receiver delays other organisations by at most one timeout (here: not at all).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cases import PROMPT, TURBO
from tests.integration.test_webhooks import Receiver
from tests.support import free_port, running_server

pytestmark = pytest.mark.slow

TIMEOUT_S = 3.0
SLOW_S = 2.5  # the slow receiver answers (200) just inside the timeout, so each of its sends holds a slot
BACKLOG = 24


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver whose /slow path answers after SLOW_S and /fast path at once."""
    hooks = Receiver(free_port(), slow_s={"/slow": SLOW_S}).start()
    yield hooks
    hooks.stop()


def test_a_slow_receiver_does_not_delay_another_organisation(tmp_path: Path, receiver: Receiver) -> None:
    env = {"VIDQUEUE_WEBHOOK_TIMEOUT_S": str(TIMEOUT_S), "VIDQUEUE_WEBHOOK_CONCURRENCY": "8"}
    with running_server(tmp_path, workers=0, **env) as server:
        slow_key, fast_key = server.create_key("slow-org"), server.create_key("fast-org")
        with server.client(slow_key) as api:
            for _ in range(BACKLOG):
                body = {"model": TURBO, "payload": {"prompt": PROMPT}, "callback_url": receiver.url("/slow")}
                assert api.post("/requests", json=body).status_code == 200
        # The backlog is being sent (its first sends are in flight) when the other organisation submits.
        deadline = time.monotonic() + 10
        while not any(r.path == "/slow" for r in receiver.received) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(r.path == "/slow" for r in receiver.received)
        with server.client(fast_key) as api:
            submitted = time.time()
            body = {"model": TURBO, "payload": {"prompt": PROMPT}, "callback_url": receiver.url("/fast")}
            request_id = api.post("/requests", json=body).json()["request_id"]
        deadline = time.monotonic() + 4 * TIMEOUT_S
        while not any(r.path == "/fast" for r in receiver.received) and time.monotonic() < deadline:
            time.sleep(0.02)
        fast = [r for r in receiver.received if r.path == "/fast"]
        assert fast, "the other organisation's webhook never came"
        assert fast[0].obj["request_id"] == request_id
        delay = fast[0].at - submitted
        # At most one timeout; in fact about one poll interval, since the slow organisation holds 2 of 8 slots.
        assert delay < TIMEOUT_S, f"the other organisation's webhook waited {delay:.1f} s"
        # The slow organisation never had more than its 2 sends in flight: at most 2 arrivals per SLOW_S window.
        slow = sorted(r.at for r in receiver.received if r.path == "/slow")
        assert all(later - earlier > SLOW_S * 0.8 for earlier, later in zip(slow, slow[2:], strict=False)), slow
