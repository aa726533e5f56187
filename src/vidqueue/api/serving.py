"""Serving the API under uvicorn: limits on request heads, and a drain (on SIGTERM, refuse new work, then close)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from vidqueue.api.errors import error_body
from vidqueue.api.state import AppState

log = logging.getLogger("vidqueue.api")

LINGER_S = 2.0  # after a refusal, what the client still sends is read and dropped this long, so it gets the answer


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools) with two limits on a request's head: its size and its time.

    uvicorn sets neither for httptools (``h11_max_incomplete_event_size`` is h11's alone, and its keep-alive timer
    starts only after a first response): a head could grow to any size, and a connection that never finishes its
    first head stayed open for good. Here a head over ``max_header_bytes`` gets 431, and a head not complete
    ``header_timeout_s`` after the connection opened or after the read that left it unfinished gets 408 (a
    connection that sent nothing is just closed); either way the connection closes. ``guarded_http`` sets both.

    The parser hands over headers only when whole, so an unfinished head is measured by the reads it spans: each read
    that began and ended inside it counts in full. A head that started inside a read can pass the cap by up to that
    read (asyncio reads 256 KiB at most) before it is refused; a complete head is measured exactly.
    """

    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # a head is awaited (a new connection) or under way
        self._head_started = False  # its first byte has come
        self._head_bytes = 0  # bytes of the unfinished head counted so far
        self._heads = 0  # heads completed on this connection
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock on the first head."""
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse the bytes; refuse a head that has grown past the cap, and time one left unfinished."""
        if self._refused:
            return  # lingering after a refusal: dropped
        counting, heads = self._in_head, self._heads
        super().data_received(data)
        if not self._in_head or self._refused or self.transport.is_closing():
            return
        if counting and heads == self._heads:
            self._head_bytes += len(data)  # the read began and ended inside this head
            if self._head_bytes > self.max_header_bytes:
                self._refuse_large()
                return
        self._arm()

    def on_message_begin(self) -> None:
        """A new head starts."""
        super().on_message_begin()
        self._in_head, self._head_started, self._head_bytes = True, True, 0

    def on_headers_complete(self) -> None:
        """The head is whole: measure it exactly, then run the request."""
        if self._refused:
            return
        self._in_head, self._head_started = False, False
        self._heads += 1
        self._disarm()
        if len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) > self.max_header_bytes:
            self._refuse_large()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """Body bytes, unless the head was refused."""
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        """The end of a request, unless its head was refused."""
        if not self._refused:
            super().on_message_complete()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self._refused or self.transport.is_closing():
            return
        if not self._head_started:
            self.transport.close()  # an idle connection that never began a request: nothing to answer
            return
        message = f"The request headers did not arrive within {self.header_timeout_s:g} s (header_timeout_s)."
        self._refuse(408, message, "request_timeout")

    def _refuse_large(self) -> None:
        message = f"The request headers are over the {self.max_header_bytes} byte limit (max_header_bytes)."
        self._refuse(431, message, "headers_too_large")

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer ``status`` with the usual error body and close, reading and dropping what still comes meanwhile."""
        self._refused = True
        self._disarm()
        log.debug("refused a request head: %s", message)
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # an answer to an earlier request is under way: no second one inside it
            return
        body = orjson.dumps(error_body(message, code))
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # Half-close, and keep reading for a while: closing with unread bytes would reset the connection, and the
        # client, still sending, would lose the answer.
        self.transport.write_eof()
        self._deadline = self.loop.call_later(LINGER_S, self.transport.close)


def guarded_http(max_header_bytes: int, header_timeout_s: float) -> type[GuardedHttp]:
    """The HTTP protocol class for uvicorn.Config(http=...), with these limits on request heads."""

    class Limited(GuardedHttp):
        pass

    Limited.max_header_bytes, Limited.header_timeout_s = max_header_bytes, header_timeout_s
    return Limited


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains before it closes.

    uvicorn stops listening at the first signal, so a load balancer that has not yet seen the instance go gets
    refused connections. Here the first SIGTERM (or SIGINT) marks the app draining instead: submits and /readyz
    answer 503 with Retry-After while reads, cancels and in-flight calls go on. ``on_stop`` runs at once (the
    workers stop claiming), open status streams end (new ones get 503), and uvicorn closes once ``drain_s`` has
    passed and ``wait`` has returned (the workers have finished, so their last results can still be read). A second
    signal closes at once, and runs ``on_stop`` again (the workers hand back what they still run).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        state: AppState,
        *,
        drain_s: float,
        on_stop: Callable[[], None] = lambda: None,
        wait: Callable[[], object] = lambda: None,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config)
        self._state = state
        self._drain_s = drain_s
        self._on_stop = on_stop
        self._wait = wait
        self._on_ready = on_ready
        self._signals = 0
        self._cut_short = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does; once it listens, call ``on_ready``."""
        await super().startup(sockets=sockets)
        if self.started:
            self._on_ready()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first stop signal starts the drain; a second closes now."""
        self._signals += 1
        # Work leaves the signal handler: it runs between bytecodes of the event loop's thread, which must not block.
        threading.Thread(target=self._on_stop, name="stop-workers", daemon=True).start()
        if self._signals == 1:
            self._state.draining = True
            if self._state.streams is not None:
                self._state.streams.close_soon()  # open status streams end now; the clients poll or go elsewhere
            threading.Thread(target=self._drain, name="drain", daemon=True).start()
            return
        self._cut_short.set()
        super().handle_exit(sig, frame)

    def _drain(self) -> None:
        log.info("stopping: draining for %.1f s (new submits get 503, reads go on)", self._drain_s)
        if not self._cut_short.wait(self._drain_s):
            self._wait()
        self.should_exit = True


def listen(host: str, port: int, backlog: int = 2048) -> list[socket.socket]:
    """Listen on ``port`` now, on every address ``host`` names (as uvicorn would), for ``DrainingServer.run``.

    Done before anything else starts, so a busy port (OSError EADDRINUSE) is known before any worker runs, and no
    other process can take the port meanwhile; connections wait in the backlog until uvicorn accepts them, once the
    app is up. An unknown host name raises socket.gaierror.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 address has its own socket
            sock.bind(address)
            sock.listen(backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
