"""Webhooks: signing the Standard Webhooks way, and the dispatcher that drains the deliveries outbox.

Every status change of a request with a ``callback_url`` is stored as a delivery in the same statement as the change
(see store/deliveries.py). Dispatchers, one per API process, lease due deliveries, POST the request object as it was
at the change, signed with the organisation's secret, and record the outcome: delivered on a 2xx, else tried again
with backoff until ``max_age_s`` has passed. Workers never wait on a receiver.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import random
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import orjson

from vidqueue import __version__
from vidqueue.api.ops import WebhookMetrics
from vidqueue.api.present import present_request
from vidqueue.config import Settings
from vidqueue.errors import StoreUnavailable
from vidqueue.media import netguard
from vidqueue.media.storage import Storage
from vidqueue.store import Attempt, Delivery, Store

log = logging.getLogger("vidqueue.webhooks")

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 32 random bytes in base64, as Standard Webhooks libraries read it."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def retry_at(settings: Settings, delivery: Delivery, now: float) -> float | None:
    """When to try a failed delivery again (exponential backoff with jitter), or None once it is too old."""
    hooks = settings.webhooks
    wait: float = min(hooks.retry_base_s * 2.0 ** min(delivery.attempts, 30), hooks.max_retry_interval_s)
    # Jitter spreads the retries of many deliveries that failed together (a receiver that was down).
    at = now + wait * random.uniform(0.8, 1.2)
    deadline = delivery.created_at + hooks.max_age_s
    if now >= deadline:
        return None
    return min(at, deadline)


class Dispatcher:
    """Drains the outbox: a thread that keeps a small pool of sends busy with due deliveries, fair across
    organisations."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        storage: Storage,
        owner: str | None = None,
        metrics: WebhookMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.storage = storage
        self.owner = owner or f"webhooks-{os.getpid()}-{secrets.token_hex(3)}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._pool = ThreadPoolExecutor(settings.webhooks.concurrency, thread_name_prefix="webhook")
        self._secrets: dict[str, str] = {}
        self._lock = threading.Lock()
        self._in_flight = 0
        self._busy: dict[str, int] = {}  # sends in flight per organisation
        self._slot_freed = threading.Event()

    def start(self) -> None:
        """Start draining in the background."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the deliveries in flight (unsent ones stay pending for the next dispatcher)."""
        self._stop.set()
        self._slot_freed.set()
        self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                claimed = self.fill()
            except StoreUnavailable as exc:
                log.warning("webhooks: the store is unavailable (%s); trying again", exc)
                claimed = 0
            except Exception:  # a bug must not end deliveries for the life of the process
                log.exception("webhooks: dispatch failed")
                claimed = 0
            with self._lock:
                full = self._in_flight >= self.settings.webhooks.concurrency
            if claimed and not full:
                continue  # there may be more due: fill the free slots again at once
            # Nothing due (look again after the poll interval), or every slot busy: a send that ends wakes us.
            self._slot_freed.wait(self.settings.webhooks.poll_interval_s)
            self._slot_freed.clear()

    def fill(self) -> int:
        """Lease due deliveries for the free slots, organisations in turn, and start sending them; answer how many.

        Dispatch is continuous: a slot is refilled as soon as its send ends, never after a whole batch, and an
        organisation has at most ``per_org_concurrency`` sends in flight, so one organisation's slow receiver
        holds its own slots only.
        """
        hooks = self.settings.webhooks
        with self._lock:
            free = hooks.concurrency - self._in_flight
            busy = {org: n for org, n in self._busy.items() if n}
        if free <= 0:
            return 0
        # A lease outlives the send's own deadline, so no other dispatcher takes a delivery still in flight.
        due = self.store.claim_deliveries(
            self.owner, free, lease_s=hooks.timeout_s + 30, per_org=hooks.per_org_concurrency, busy=busy
        )
        for delivery in due:
            with self._lock:
                self._in_flight += 1
                self._busy[delivery.org_id] = self._busy.get(delivery.org_id, 0) + 1
            self._pool.submit(self._send, delivery)
        return len(due)

    def _send(self, delivery: Delivery) -> None:
        try:
            self.deliver(delivery)
        except Exception:  # recorded nowhere else: the lease runs out and the delivery is tried again
            log.exception("webhooks: sending %s failed", delivery.delivery_id)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._busy[delivery.org_id] -= 1
                if not self._busy[delivery.org_id]:
                    del self._busy[delivery.org_id]
            self._slot_freed.set()

    def deliver(self, delivery: Delivery) -> Attempt:
        """Send one delivery and record how it went."""
        body = orjson.dumps(present_request(delivery.request(), self.storage, self.settings.media_url_ttl_s))
        now = time.time()
        timestamp = int(now)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"vidqueue-webhooks/{__version__}",
            "webhook-id": delivery.delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret(delivery.org_id), delivery.delivery_id, timestamp, body),
        }
        attempt = self._post(delivery, body, headers)
        if not self.store.settle_delivery(delivery.delivery_id, self.owner, attempt):
            log.warning("webhooks: lost the lease of %s while sending it", delivery.delivery_id)
        result = "delivered" if attempt.ok else ("retrying" if attempt.retry_at is not None else "failed")
        if self.metrics is not None:
            self.metrics.attempted(result)
        level = logging.INFO if attempt.ok else logging.WARNING
        log.log(
            level,
            "webhook %s (%s → %s) attempt %d: %s",
            delivery.delivery_id,
            delivery.request_id,
            delivery.event,
            delivery.attempts + 1,
            "delivered" if attempt.ok else f"{attempt.error}; " + ("retrying" if attempt.retry_at else "giving up"),
        )
        return attempt

    def _post(self, delivery: Delivery, body: bytes, headers: dict[str, str]) -> Attempt:
        try:
            status = netguard.post(
                delivery.url,
                body,
                headers=headers,
                allow_private=self.settings.allow_private_urls,
                timeout_s=self.settings.webhooks.timeout_s,
            )
        except netguard.BlockedAddress as exc:
            # The address may have changed since the submit; it will not become public by waiting.
            return Attempt(ok=False, error=f"callback_url {exc}")
        except netguard.FetchError as exc:
            return Attempt(
                ok=False, error=f"callback_url {exc}", retry_at=retry_at(self.settings, delivery, time.time())
            )
        if 200 <= status < 300:
            return Attempt(ok=True, status_code=status)
        return Attempt(
            ok=False,
            status_code=status,
            error=f"the receiver answered HTTP {status}",
            retry_at=retry_at(self.settings, delivery, time.time()),
        )

    def _secret(self, org_id: str) -> str:
        # Secrets never change once made, so each is read once per process.
        if org_id not in self._secrets:
            self._secrets[org_id] = self.store.webhook_secret(org_id, new_secret)
        return self._secrets[org_id]
