"""Reading a status stream (Server-Sent Events, ``GET …/requests/{id}/events``, a vidqueue extension) for ``wait``."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pydantic

from vidqueue.client.types import Request

TERMINAL = frozenset({"success", "failed", "cancelled"})


class EventSink:
    """A status stream (Server-Sent Events) being read: each event's request goes to ``on_event``.

    ``write`` answers False, so the reader stops, after a terminal state, at ``deadline`` (time.monotonic()), or
    when the stream is not one this SDK can read (then ``broken``).
    """

    MAX_EVENT_BYTES = 4 * 1024 * 1024

    def __init__(self, on_event: Callable[[Request], object], deadline: float) -> None:
        self.last: Request | None = None
        self.last_id: str | None = None
        self.is_stream = False  # the last response was an event stream
        self.broken = False
        self.events = 0  # events read from the last response
        self._on_event = on_event
        self._deadline = deadline
        self._buffer = b""

    def start(self, response: httpx.Response) -> bool:
        """Read the body only when it is an event stream."""
        self._buffer, self.events = b"", 0
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        self.is_stream = response.status_code == 200 and kind == "text/event-stream"
        return self.is_stream

    def write(self, chunk: bytes) -> bool:
        """Take a chunk of the stream; False to stop reading."""
        self._buffer = (self._buffer + chunk).replace(b"\r\n", b"\n")
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            if not self._event(block):
                return False
        if len(self._buffer) > self.MAX_EVENT_BYTES:
            self.broken = True
            return False
        return time.monotonic() < self._deadline

    def _event(self, block: bytes) -> bool:
        fields: dict[str, list[str]] = {}
        for line in block.decode("utf-8", "replace").split("\n"):
            if not line or line.startswith(":"):
                continue  # a comment: keep-alive
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))
        if "data" not in fields:
            return True
        try:
            request = Request.model_validate_json("\n".join(fields["data"]))
        except pydantic.ValidationError:
            self.broken = True
            return False
        self.last, self.events = request, self.events + 1
        if "id" in fields:
            self.last_id = fields["id"][-1]
        self._on_event(request)
        return request.status not in TERMINAL
