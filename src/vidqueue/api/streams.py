"""Status streams: GET …/requests/{id}/events as Server-Sent Events, fed by the store's wake-ups.

One ``StatusHub`` per API process watches the store (``Store.watch_changes``: PostgreSQL's LISTEN/NOTIFY, the
SQLite file watcher) for the requests that have streams open. A change to one of them is read once and handed to
every stream of that request; nothing polls per client, and a stream holds no thread, only a coroutine that waits.

Events carry the request object as GET answers it. An event's id is ``{attempts}-{status}-{progress}`` (e.g.
``1-processing-40``), and ``-{queue_position}`` more while queued (``0-queued-0-3``): the state the client last saw.
A queued request's position moves when a request ahead of it leaves the queue: the SQLite watcher reads positions
with states; on PostgreSQL (and in memory) a change to any other request has the hub read its queued requests again,
at most every ``POSITIONS_EVERY_S``. A stream sends an event whenever that state changes and ends
after a terminal one. With ``Last-Event-ID`` a stream resumes: the current state is sent only when it differs from
the one named (nothing is kept of states in between, so there is nothing else to replay), and a request that ended
in exactly that state answers 204, which tells an EventSource to stop reconnecting.

An organisation holds at most ``limits.max_streams_per_org`` streams open on one API process (more get 429
``too_many_streams``), and a stream ends within a keep-alive of its key being revoked.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from vidqueue.api.auth import Auth, Caller, current_key
from vidqueue.api.intake import AuthenticatedRoute
from vidqueue.api.present import present_request
from vidqueue.api.schemas import ErrorOut
from vidqueue.api.state import AppState
from vidqueue.errors import NotFound, RateLimited, ServiceError, ShuttingDown
from vidqueue.store import RequestRecord, Status

log = logging.getLogger("vidqueue.api")

RETRY_MS = 2000  # how long an EventSource waits before it reconnects
STREAMS_RETRY_S = 5  # over the streams cap: streams end in seconds to minutes
POSITIONS_EVERY_S = 0.5  # queued requests' positions are read again at most this often on another's change
_EVENT_ID = re.compile(r"\d{1,9}-[a-z]{1,16}-\d{1,3}(?:-\d{1,9})?")


def event_id(record: RequestRecord) -> str:
    """The id of the event that carries this state of a request (its queue position too, while queued)."""
    base = f"{record.attempts}-{record.status.value}-{record.progress}"
    if record.status is Status.QUEUED and record.queue_position is not None:
        return f"{base}-{record.queue_position}"
    return base


def parse_last_event_id(value: str | None) -> str | None:
    """A Last-Event-ID this server could have sent, else None (a stream then starts from the current state)."""
    if value is None:
        return None
    value = value.strip()
    return value if _EVENT_ID.fullmatch(value) else None


class Subscription:
    """One open stream's view of a request: the latest state read for it, and whether the stream must end."""

    def __init__(self, request_id: str, org_id: str, joined_after: int) -> None:
        self.request_id = request_id
        self.org_id = org_id
        self.latest: RequestRecord | None = None
        self.gone = False  # the request no longer exists
        self.ended = False  # the server is stopping, or the store failed: end the stream (the client reconnects)
        self._joined_after = joined_after  # reads numbered up to this started before the stream: too old to use
        self._event = asyncio.Event()

    def offer(self, read: int, record: RequestRecord | None) -> None:
        """A state read by the hub (read number ``read``); None when the request is gone."""
        if read <= self._joined_after:
            return
        if record is None:
            self.gone = True
        else:
            self.latest = record
        self._event.set()

    def end(self) -> None:
        """End the stream."""
        self.ended = True
        self._event.set()

    async def wait(self, timeout_s: float) -> bool:
        """Wait for news; False after ``timeout_s`` without any."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


class StatusHub:
    """This process's watch on the store for the requests that have streams open; lives on the event loop."""

    def __init__(self, state: AppState) -> None:
        self._state = state
        self._subs: dict[str, set[Subscription]] = {}
        self._per_org: dict[str, int] = {}  # open streams by organisation
        self._watched: frozenset[str] = frozenset()  # read by the store's watcher thread
        self._reading: set[str] = set()
        self._dirty: set[str] = set()
        self._reads = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._positions_due: asyncio.TimerHandle | None = None
        self.closed = False

    def subscribe(self, request_id: str, org_id: str) -> Subscription:
        """Watch a request for one of ``org_id``'s streams (RateLimited past its cap); the first state comes from a
        read that starts now."""
        cap = self._state.settings.limits.max_streams_per_org
        if cap and self._per_org.get(org_id, 0) >= cap:
            raise RateLimited(
                f"Organisation '{org_id}' already has {cap} status streams open, its limit "
                "(limits.max_streams_per_org); close one, or poll GET …/requests/{request_id}.",
                retry_after=STREAMS_RETRY_S,
                code="too_many_streams",
            )
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._state.store.watch_changes(self._from_store, lambda: self._watched)
        sub = Subscription(request_id, org_id, self._reads)
        if self.closed:
            sub.end()
            return sub
        self._per_org[org_id] = self._per_org.get(org_id, 0) + 1
        self._subs.setdefault(request_id, set()).add(sub)
        self._watched = frozenset(self._subs)
        self._changed(request_id)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop watching for one stream."""
        subs = self._subs.get(sub.request_id)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        left = self._per_org[sub.org_id] - 1
        if left:
            self._per_org[sub.org_id] = left
        else:
            del self._per_org[sub.org_id]
        if not subs:
            del self._subs[sub.request_id]
            self._watched = frozenset(self._subs)

    def close(self) -> None:
        """End every stream (the server is stopping): clients reconnect elsewhere, or poll."""
        self.closed = True
        for subs in list(self._subs.values()):
            for sub in subs:
                sub.end()

    def close_soon(self) -> None:
        """``close``, from any thread (a signal handler too)."""
        if self._loop is None:
            self.closed = True
            return
        with suppress(RuntimeError):  # the loop has closed already
            self._loop.call_soon_threadsafe(self.close)

    def _from_store(self, request_id: str) -> None:
        # The store's thread (or, in memory, whichever thread wrote): hand over to the loop, never block.
        if self._loop is not None:
            with suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._changed, request_id)

    def _changed(self, request_id: str) -> None:
        if request_id == "":
            for rid in list(self._subs):
                self._changed(rid)
            return
        if request_id not in self._subs:
            self._positions_moved()  # another request changed: those queued behind it moved up
            return
        if request_id in self._reading:
            self._dirty.add(request_id)  # read again once the read under way is done, so the last state wins
            return
        self._reading.add(request_id)
        task = asyncio.get_running_loop().create_task(self._read(request_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _positions_moved(self) -> None:
        """Read the queued requests with streams again soon (once for many changes)."""
        if self._positions_due is None and self._loop is not None and not self.closed:
            self._positions_due = self._loop.call_later(POSITIONS_EVERY_S, self._read_positions)

    def _read_positions(self) -> None:
        self._positions_due = None
        if self.closed:
            return
        for request_id, subs in list(self._subs.items()):
            if any(sub.latest is not None and sub.latest.status is Status.QUEUED for sub in subs):
                self._changed(request_id)

    async def _read(self, request_id: str) -> None:
        """Read a request once for all its streams (reads of one request run one at a time, in order)."""
        try:
            while request_id in self._subs:
                self._dirty.discard(request_id)
                self._reads += 1
                number = self._reads
                try:
                    record = await self._state.call(self._state.store.get, request_id)
                except ServiceError as exc:
                    log.warning("a status stream could not read request %s: %s", request_id, exc)
                    for sub in list(self._subs.get(request_id, ())):
                        sub.end()
                    return
                for sub in list(self._subs.get(request_id, ())):
                    sub.offer(number, record)
                if request_id not in self._dirty:
                    return
        finally:
            self._reading.discard(request_id)


def _event(record: RequestRecord, state: AppState) -> bytes:
    data = orjson.dumps(present_request(record, state.storage, state.settings.media_url_ttl_s))
    return b"id: " + event_id(record).encode() + b"\ndata: " + data + b"\n\n"


async def stream_events(caller: Caller, sub: Subscription, last_id: str | None) -> AsyncIterator[bytes]:
    """The stream's bytes: an event per new state, keep-alive comments meanwhile, ending after a terminal state, or
    once the caller's key is revoked."""
    state = caller.state
    loop = asyncio.get_running_loop()
    every = state.settings.sse_keepalive_s
    # The subscription is let go by the response that sends this (EventStream), however the stream ends.
    yield f"retry: {RETRY_MS}\n\n".encode()
    beat = loop.time() + every
    while True:
        news = await sub.wait(max(0.0, beat - loop.time()))
        if sub.ended or sub.gone:
            return
        # Checked before anything more is sent (through the key cache: a store read every few seconds at most).
        if await current_key(state, caller.key.key_hash) is None:
            return
        record = sub.latest
        if news and record is not None and event_id(record) != last_id:
            last_id = event_id(record)
            yield _event(record, state)
            beat = loop.time() + every
        elif loop.time() >= beat:
            yield b": keep-alive\n\n"
            beat = loop.time() + every
        if record is not None and record.status.is_terminal():
            return


def hub_of(state: AppState) -> StatusHub:
    """The process's hub, made on first use."""
    if state.streams is None:
        state.streams = StatusHub(state)
    hub: StatusHub = state.streams
    return hub


_DESCRIPTION = """\
Server-Sent Events: one event per status or progress change, `data` the request object as GET answers it, `id`
`{attempts}-{status}-{progress}`; the stream ends after the terminal event. Comments (`: keep-alive`) come every
`sse_keepalive_s` (15 s) meanwhile. Send `Last-Event-ID` to resume: the current state comes only if it is not the
one named; a request that ended in that state answers 204. While the server drains: 503 (poll GET instead)."""

router = APIRouter(route_class=AuthenticatedRoute)


@router.get(
    "/requests/{request_id}/events",
    response_model=None,
    summary="A request's status as a stream (SSE)",
    description=_DESCRIPTION,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "The event stream"},
        204: {"description": "The request ended in the state Last-Event-ID names: nothing more will come"},
        **{
            code: {"model": ErrorOut, "description": text}
            for code, text in {
                401: "No or bad API key",
                403: "Organisation mismatch",
                404: "Unknown request",
                429: "The organisation has limits.max_streams_per_org streams open here; retry after Retry-After",
                503: "Draining, or the store is unavailable; poll GET …/requests/{request_id}",
            }.items()
        },
    },
)
async def request_events(
    request_id: str,
    caller: Auth,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="The id of the last event seen, to resume after it.")
    ] = None,
) -> Response:
    """Follow a request until it ends."""
    state = caller.state
    if state.draining:
        # A stream opened now would hold the server open past its drain; GET still answers.
        message = "The server is shutting down; poll the request with GET, or reconnect shortly."
        raise ShuttingDown(message, retry_after=2)
    record = await state.call(state.store.get, request_id, caller.org_id)
    if record is None:
        raise NotFound(f"Request '{request_id}' does not exist.")
    last_id = parse_last_event_id(last_event_id)
    if record.status.is_terminal() and event_id(record) == last_id:
        return Response(status_code=204)
    # Subscribed before the stream starts, so no change between this read and the first event is missed.
    hub = hub_of(state)
    sub = hub.subscribe(request_id, caller.org_id)
    headers: dict[str, Any] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    events = stream_events(caller, sub, last_id)
    return EventStream(events, lambda: hub.unsubscribe(sub), media_type="text/event-stream", headers=headers)


class EventStream(StreamingResponse):
    """A StreamingResponse that runs ``done`` when it ends, however it ends.

    The subscription (and its place under the organisation's cap) is let go here rather than in the generator: a
    client gone before the first byte leaves the generator never started, and nothing of it would run.
    """

    def __init__(self, content: AsyncIterator[bytes], done: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream, then let its subscription go."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._done()
