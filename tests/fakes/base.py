"""Shared core of the upstream fakes: a threaded loopback HTTP server, fault scripting, a call log, result videos.

A fake is a real HTTP server on 127.0.0.1 (a free port), so the code under test talks to it over a socket exactly
as it would talk to the provider. Subclasses map method and path to a route name and an action; this module runs
the action, or first applies the next scripted fault for that route.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, Self
from urllib.parse import parse_qs, urlsplit

import numpy as np

from vidqueue.media.encode import encode_mp4, rgb_to_yuv420

Route = Literal["create", "query", "list", "download"]
ROUTES: tuple[Route, ...] = ("create", "query", "list", "download")
FaultKind = Literal["status", "reset", "delay", "malformed", "hold"]

# The result videos: small and short, so making one costs a few milliseconds.
VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FPS, VIDEO_FRAMES = 160, 90, 24, 24

_RESULT_PATH = re.compile(r"^/results/([^/]+)/(\d+)\.mp4$")


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour of a fake, consumed by the next call on the route it was injected for."""

    kind: FaultKind
    http_status: int = 500
    code: int | None = None  # Kling envelope code; None: a text/plain body for kind "status"
    message: str = "injected fault"
    seconds: float = 0.0
    after: bool = False  # for "reset": perform the call's action first (e.g. create the task), then reset


@dataclass(frozen=True)
class Request:
    """One received HTTP request, as the routes see it."""

    method: str
    path: str
    query: dict[str, str]  # the last value of each parameter
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass(frozen=True)
class Reply:
    """An HTTP answer to send."""

    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, obj: Any) -> Reply:
        """A JSON answer."""
        return cls(status, json.dumps(obj).encode())

    @classmethod
    def text(cls, status: int, text: str) -> Reply:
        """A text/plain answer."""
        return cls(status, text.encode(), "text/plain; charset=utf-8")


class Rejected(Exception):
    """Raised inside an action to answer with ``reply`` at once (auth or validation failures)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


Action = Callable[[Request], Reply]


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # held or delayed calls must not keep the test process (or server_close) waiting

    def __init__(self, fake: FakeUpstream) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; the fake's call log says what happened


class FakeUpstream:
    """Base of the provider fakes: server lifecycle, faults, call log, task progression and result videos."""

    # Subclasses set these: the status a task finishes with on success, and a truncated body for "malformed".
    success_status: ClassVar[str] = "success"
    malformed_body: ClassVar[bytes] = b'{"data": {"'

    def __init__(self) -> None:
        self.polls_to_finish: int = 2
        self.finish_as: str = self.success_status
        self.fail_message: str = "Generation failed: the content could not be rendered."
        self.videos_per_task: int = 1
        self.missing_results: bool = False
        self._lock = threading.RLock()
        self._video_lock = threading.Lock()
        self._faults: dict[str, deque[Fault]] = {route: deque() for route in ROUTES}
        self._calls: list[tuple[str, str]] = []
        self._tasks: dict[str, dict[str, Any]] = {}
        self._creates = 0
        self._seq = 0
        self._videos: dict[tuple[str, int], bytes] = {}
        self._errors: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> Self:
        """Start serving on a free loopback port."""
        if self._server is not None:
            raise RuntimeError("fake already started")
        self._server = _Server(self)
        # A short poll interval: shutdown() waits up to one interval, and tests start and stop many fakes.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True, name=type(self).__name__
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (calls still in flight are abandoned)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, like ``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("fake not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- scripting and inspection

    def inject(self, route: Route, *faults: Fault) -> None:
        """Queue faults for a route; each later call on it consumes one, in order, then calls behave normally."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; expected one of {ROUTES}")
        with self._lock:
            self._faults[route].extend(faults)

    def faults_left(self, route: Route) -> int:
        """How many injected faults the route has not consumed yet."""
        with self._lock:
            return len(self._faults[route])

    @property
    def creates(self) -> int:
        """Tasks actually created."""
        with self._lock:
            return self._creates

    @property
    def calls(self) -> list[tuple[str, str]]:
        """Every request received, in order, as (method, path without query string), failed ones included."""
        with self._lock:
            return list(self._calls)

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        """A snapshot of the tasks by id: each record has the received ``body``, ``kind``, ``status``, ``queries``."""
        with self._lock:
            return {tid: dict(task) for tid, task in self._tasks.items()}

    @property
    def errors(self) -> list[str]:
        """Tracebacks of exceptions the fake itself raised while answering (answered 500); empty if all went well."""
        with self._lock:
            return list(self._errors)

    def video_bytes(self, task_id: str, n: int = 0) -> bytes:
        """The MP4 that ``/results/{task_id}/{n}.mp4`` serves (made on first use, then cached)."""
        key = (task_id, n)
        with self._video_lock:
            if key not in self._videos:
                self._videos[key] = _make_video(f"{task_id}/{n}")
            return self._videos[key]

    # -- for subclasses

    def _route(self, method: str, path: str) -> tuple[Route | None, Action]:
        """The route name (None: faults never apply) and the action for a method and path."""
        raise NotImplementedError

    def _fault_reply(self, fault: Fault) -> Reply:
        """The answer for a "status" fault."""
        raise NotImplementedError

    def _on_call(self, route: Route | None, request: Request) -> None:
        """Hook run for every call before faults apply (e.g. to record headers)."""

    def _add_task(self, task_id: str, task: dict[str, Any]) -> None:
        """Store a new task and count it as created."""
        with self._lock:
            self._seq += 1
            task.setdefault("queries", 0)
            task["seq"] = self._seq
            task["videos"] = 0
            self._tasks[task_id] = task
            self._creates += 1

    def _advance(self, task: dict[str, Any]) -> bool:
        """Count one query of a task (call with the lock held); True when this query changed its status."""
        if task["status"] in (self.success_status, "failed"):
            return False
        task["queries"] += 1
        if task["queries"] >= self.polls_to_finish:
            if self.finish_as == "failed":
                task["status"] = "failed"
                task["status_msg"] = self.fail_message
            else:
                task["status"] = self.success_status
                task["videos"] = self.videos_per_task
            return True
        changed: bool = task["status"] != "processing"
        task["status"] = "processing"
        return changed

    def _result_url(self, task_id: str, n: int) -> str:
        return f"{self.url}/results/{task_id}/{n}.mp4"

    def _download(self, request: Request) -> Reply:
        match = _RESULT_PATH.match(request.path)
        assert match is not None
        task_id, n = match.group(1), int(match.group(2))
        with self._lock:
            task = self._tasks.get(task_id)
            ready = task is not None and task["status"] == self.success_status and n < task["videos"]
        if self.missing_results or not ready:
            return Reply.text(404, "Not Found")
        return Reply(200, self.video_bytes(task_id, n), "video/mp4")

    # -- serving

    def _serve(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        request = Request(
            method=handler.command,
            path=parts.path,
            query={k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=handler.rfile.read(length) if length > 0 else b"",
        )
        route: Route | None
        action: Action
        if request.method == "GET" and _RESULT_PATH.match(request.path):
            route, action = "download", self._download
        else:
            route, action = self._route(request.method, request.path)
        with self._lock:
            self._calls.append((request.method, request.path))
            fault = self._faults[route].popleft() if route and self._faults[route] else None
        self._on_call(route, request)

        if fault is None:
            reply = self._run(action, request)
        elif fault.kind == "status":
            reply = self._fault_reply(fault)
        elif fault.kind == "malformed":
            reply = Reply(200, self.malformed_body)
        elif fault.kind == "delay":
            time.sleep(fault.seconds)
            reply = self._run(action, request)
        elif fault.kind == "hold":
            reply = self._run(action, request)
            time.sleep(fault.seconds)
        elif fault.kind == "reset":
            if fault.after:
                self._run(action, request)
            _reset(handler)
            return
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        _send(handler, reply)

    def _run(self, action: Action, request: Request) -> Reply:
        try:
            return action(request)
        except Rejected as rejected:
            return rejected.reply
        except Exception:
            # Answer anyway, so a bug in the fake shows as a 500 plus ``errors`` rather than a hung client.
            with self._lock:
                self._errors.append(traceback.format_exc())
            return Reply.text(500, "fake crashed; see fake.errors")


def int_param(request: Request, name: str, default: int, low: int, high: int, bad: Callable[[str], Exception]) -> int:
    """A query parameter as an integer in [low, high], ``default`` when absent; ``bad(message)`` is raised otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise bad(f"{name} must be between {low} and {high}")
    return value


def _send(handler: _Handler, reply: Reply) -> None:
    handler.close_connection = True  # one call per connection: a reset or a stop never meets a pooled connection
    try:
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(reply.body)
    except OSError:
        pass  # the client went away (e.g. it was killed during a "hold"); nothing to answer


def _reset(handler: _Handler) -> None:
    """Abort the connection with a TCP RST and no answer."""
    handler.close_connection = True
    sock = handler.connection
    # SO_LINGER on with a zero timeout makes close() send RST instead of FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # The handler's rfile holds a reference to the socket that would keep the descriptor open past close().
    # Once it is closed, http.server's own flush/shutdown steps find a closed socket and skip it (wfile is
    # unbuffered, so there is nothing left for it to write).
    handler.rfile.close()
    sock.close()


def _make_video(seed: str) -> bytes:
    """A 1 s solid-colour MP4 whose colour (hence bytes) follows from ``seed``."""
    digest = hashlib.sha256(seed.encode()).digest()
    rgb = np.empty((VIDEO_HEIGHT, VIDEO_WIDTH, 3), np.uint8)
    rgb[...] = np.frombuffer(digest[:3], np.uint8)
    frame = rgb_to_yuv420(rgb)
    with tempfile.TemporaryDirectory(prefix="vidqueue-fake-") as tmp:
        path = Path(tmp) / "video.mp4"
        # encode_mp4 needs a real file (faststart rewrites it); threads=1 keeps the bytes reproducible.
        encode_mp4(
            (frame for _ in range(VIDEO_FRAMES)),
            width=VIDEO_WIDTH,
            height=VIDEO_HEIGHT,
            fps=VIDEO_FPS,
            path=path,
            preset="ultrafast",
            threads=1,
        )
        return path.read_bytes()
