"""The SDK's logic, written once for both clients: every method is a generator of I/O steps.

A method yields ``Send`` (one HTTP exchange), ``Stream`` (a download into a sink) or ``Sleep`` steps and gets
back the response; the sync client drives the generator with ``httpx.Client`` and ``time.sleep``, the async one
with ``httpx.AsyncClient`` and ``asyncio.sleep``. Transport errors are thrown back into the generator, so the
retry, wait and resume rules below are the same code for both.
"""

from __future__ import annotations

import email.utils
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import pydantic

from vidqueue.client import errors
from vidqueue.client._events import TERMINAL as _TERMINAL
from vidqueue.client._events import EventSink
from vidqueue.client.types import Delivery, Model, Request

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)
_UNSET: Any = object()

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
API_PATH = "/api/v1/ie/requestqueue/apikey"
USER_AGENT = "vidqueue-python/0.1"
MAX_POLL_INTERVAL = 5.0  # seconds between polls that ``wait`` backs off to while nothing changes
STREAM_READ_TIMEOUT = 60.0  # a status stream silent this long (no event, no keep-alive) is reopened

ProgressCallback = Callable[[Request], None]
DownloadCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Send:
    """One HTTP exchange; the driver answers with the read ``httpx.Response``."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    json: Any = None


@dataclass(frozen=True)
class Stream:
    """A GET whose body goes to ``sink`` chunk by chunk when ``sink.start(response)`` says so, until the body ends
    or ``sink.write`` answers False; with ``read_timeout``, a read that waits longer raises ReadTimeout."""

    send: Send
    sink: Sink | EventSink
    read_timeout: float | None = None


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds before the next step."""

    seconds: float


Step = Send | Stream | Sleep
Steps = Generator[Step, Any, T]

# Transport errors after which the same call may simply be made again.
_TRANSIENT = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_EXPIRED_STATUSES = frozenset({401, 403, 404, 410})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def api_root(base_url: str) -> str:
    """The request-queue root under ``base_url``: kept as given when it already names one, else the API-key path."""
    root = base_url.rstrip("/")
    return root if "/api/v1/ie/requestqueue" in root else root + API_PATH


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (a number or an HTTP date), if there is one."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from(response: httpx.Response) -> errors.APIError:
    """The SDK exception for an error answer, with the server's message, code and field details."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    message, code, details = _read_error_body(body)
    if not message:
        message = response.reason_phrase or f"HTTP {response.status_code}"
    status = response.status_code
    cls: type[errors.APIError]
    if status in (400, 413, 415, 422):
        cls = errors.ValidationError
    elif status in (401, 403):
        cls = errors.AuthenticationError
    elif status == 404:
        cls = errors.NotFoundError
    elif status == 409:
        cls = errors.ConflictError
    elif status == 429:
        cls = errors.RateLimitError
    elif status >= 500:
        cls = errors.ServerError
    else:
        cls = errors.APIError
    return cls(
        message,
        status_code=status,
        code=code,
        details=details,
        body=body,
        retry_after=retry_after(response),
    )


def _read_error_body(body: Any) -> tuple[str, str | None, list[errors.FieldDetail]]:
    """Message, code and details from vidqueue's error body, or the looser shapes other servers use."""
    if isinstance(body, str):
        return body.strip()[:500], None, []
    if not isinstance(body, dict):
        return "", None, []
    error, code = body.get("error"), body.get("code")
    message = ""
    if isinstance(error, str):
        message = error
    elif isinstance(error, dict):
        message = str(error.get("message") or "")
        code = code or error.get("code")
    if not message and isinstance(body.get("message"), str):
        message = body["message"]
    details: list[errors.FieldDetail] = []
    for item in body.get("details") or []:
        if isinstance(item, dict):
            details.append(errors.FieldDetail(str(item.get("field") or ""), str(item.get("message") or "")))
    detail = body.get("detail")  # FastAPI's default shape: a string, or a list of {loc, msg}
    if isinstance(detail, str) and not message:
        message = detail
    elif isinstance(detail, list):
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc") or [] if p != "body")
                details.append(errors.FieldDetail(where, str(item.get("msg") or "")))
        message = message or "; ".join(str(d) for d in details)
    return message, (str(code) if code is not None else None), details


class Sink:
    """Where a download's bytes go: a ``.part`` file that a resumed transfer appends to."""

    def __init__(self, file: IO[bytes], on_progress: DownloadCallback | None) -> None:
        self.file = file
        self.received = 0
        self.total: int | None = None
        self.validator: str | None = None  # ETag or Last-Modified, for If-Range
        self.rejected = False  # the last answer was a range other than the one asked for
        self._on_progress = on_progress

    def request_headers(self) -> dict[str, str]:
        """Headers for the next attempt: a Range from where the last one stopped."""
        # identity: byte offsets in Range must be offsets in the file as stored
        headers = {"Accept-Encoding": "identity"}
        if self.received:
            headers["Range"] = f"bytes={self.received}-"
            if self.validator:
                headers["If-Range"] = self.validator
        return headers

    def start(self, response: httpx.Response) -> bool:
        """Take a response's headers; True when its body should be written here."""
        self.rejected = False
        if response.status_code == 206:
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if match is None or int(match.group(1)) != self.received:
                self.rejected = True
                return False
            if match.group(3) != "*":
                self.total = int(match.group(3))
        elif response.status_code == 200:
            # A whole body: the first attempt, or a server that ignored (or could not honour) the Range.
            self.restart()
            length = response.headers.get("content-length")
            self.total = int(length) if length and length.isdigit() else None
        else:
            return False
        etag = response.headers.get("etag")
        strong = etag if etag and not etag.startswith("W/") else None
        self.validator = strong or response.headers.get("last-modified") or self.validator
        return True

    def write(self, chunk: bytes) -> None:
        """Append a chunk of the body."""
        self.file.write(chunk)
        self.received += len(chunk)
        if self._on_progress is not None:
            self._on_progress(self.received, self.total)

    def complete(self) -> bool:
        """True when every byte of a known length arrived (an unknown length counts as complete)."""
        return self.total is None or self.received == self.total

    def restart(self) -> None:
        """Drop what arrived so far: the next attempt asks for the whole file."""
        self.file.seek(0)
        self.file.truncate()
        self.received = 0
        self.validator = None


@dataclass
class Core:
    """The settings every call needs, and the calls themselves as step generators."""

    base_url: str
    api_key: str | None
    organization_id: str | None = None
    max_retries: int = 4
    wait_timeout: float = 3600.0
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_retry_after: float = 120.0

    @property
    def root(self) -> str:
        """The request-queue root URL."""
        return api_root(self.base_url)

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (0-based): doubling from the base, capped, half of it jittered."""
        delay = min(self.backoff_cap, self.backoff_base * 2.0**attempt)
        return delay / 2 + random.uniform(0, delay / 2)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        if not self.api_key:
            raise errors.MissingAPIKey()  # every API call needs one: say so here, not after a round trip and a 401
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", "Authorization": f"Bearer {self.api_key}"}
        if self.organization_id:
            headers["X-Organization-ID"] = self.organization_id
        headers.update(extra or {})
        return headers

    # -- one call, with the retry rules -------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        retry: bool,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Steps[httpx.Response]:
        """One API call; retried on 429/502/503/504 and dropped connections only when ``retry`` (a safe call)."""
        send = Send(method, self.root + path, self._headers(headers), params, json)
        attempt = 0
        while True:
            try:
                response: httpx.Response = yield send
            except _TRANSIENT as exc:
                if retry and attempt < self.max_retries:
                    yield Sleep(self.backoff(attempt))
                    attempt += 1
                    continue
                raise transport_error(exc, method, send.url) from exc
            if response.status_code in _RETRY_STATUSES and retry and attempt < self.max_retries:
                wait = retry_after(response)
                if wait is None or wait <= self.max_retry_after:
                    yield Sleep(self.backoff(attempt) if wait is None else wait)
                    attempt += 1
                    continue
            if response.is_error:
                raise error_from(response)
            return response

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise _unreadable(response, "it is not JSON") from exc

    def _read(self, kind: type[M], response: httpx.Response, data: Any = _UNSET) -> M:
        """An answer (or a part of it) as ``kind``; a ServerError when it is not that shape."""
        try:
            return kind.model_validate(self._json(response) if data is _UNSET else data)
        except pydantic.ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "the answer"
            raise _unreadable(response, f"{where}: {problem['msg']}") from exc

    def _object(self, response: httpx.Response) -> dict[str, Any]:
        body = self._json(response)
        if isinstance(body, list):  # a server without an envelope answers the list itself
            return {"items": body}
        if not isinstance(body, dict):
            raise _unreadable(response, "it is not a JSON object")
        return body

    # -- the API ------------------------------------------------------------------------------------------

    def models(self) -> Steps[list[Model]]:
        """Every model; a bare ``model_ids`` list (GMI's documented answer) gives models with only an id."""
        response = yield from self.call("GET", "/models", retry=True)
        body = self._object(response)
        listed = body.get("models") or body.get("items") or []
        models = [self._read(Model, response, m) for m in listed if isinstance(m, dict)]
        known = {m.model for m in models}
        models += [Model(model=str(m)) for m in body.get("model_ids") or [] if str(m) not in known]
        return models

    def model(self, model_id: str) -> Steps[Model]:
        """One model's details."""
        response = yield from self.call("GET", f"/models/{_segment(model_id)}", retry=True)
        return self._read(Model, response)

    def submit(
        self,
        model: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        priority: int | None = None,
    ) -> Steps[Request]:
        """Queue a request; retried after a failure only when an Idempotency-Key makes that safe."""
        body: dict[str, Any] = {"model": model, "payload": payload}
        if callback_url is not None:
            body["callback_url"] = callback_url
        if priority is not None:
            body["priority"] = priority
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = yield from self.call(
            "POST", "/requests", retry=idempotency_key is not None, json=body, headers=headers
        )
        return self._read(Request, response)

    def get(self, request_id: str | Request) -> Steps[Request]:
        """A request's current state (with fresh media URLs when it succeeded)."""
        response = yield from self.call("GET", f"/requests/{_segment(request_id)}", retry=True)
        return self._read(Request, response)

    def deliveries(self, request_id: str | Request) -> Steps[list[Delivery]]:
        """A request's webhook deliveries, oldest first (vidqueue only: GMI Cloud has no webhooks)."""
        response = yield from self.call("GET", f"/requests/{_segment(request_id)}/deliveries", retry=True)
        body = self._object(response)
        return [self._read(Delivery, response, d) for d in body.get("deliveries") or []]

    def list_page(
        self, model_id: str | None, status: str | None, limit: int, cursor: str | None
    ) -> Steps[tuple[list[Request], str | None]]:
        """One page of the organisation's requests, newest first, and the cursor of the next."""
        params: dict[str, Any] = {"limit": limit}
        for name, value in (("model_id", model_id), ("status", status), ("cursor", cursor)):
            if value is not None:
                params[name] = value
        response = yield from self.call("GET", "/requests", retry=True, params=params)
        body = self._object(response)
        requests = [self._read(Request, response, r) for r in body.get("requests") or body.get("items") or []]
        next_cursor = body.get("next_cursor")
        return requests, (str(next_cursor) if next_cursor and requests else None)

    def cancel(self, request_id: str | Request) -> Steps[Request]:
        """Cancel a request (safe to repeat: a cancel of a finished request changes nothing)."""
        response = yield from self.call("POST", f"/requests/{_segment(request_id)}/cancel", retry=True)
        return self._read(Request, response)

    def wait(
        self,
        request_id: str | Request,
        *,
        timeout: float | None,
        poll_interval: float,
        max_poll_interval: float,
        on_progress: ProgressCallback | None,
        stream: bool = True,
    ) -> Steps[Request]:
        """Follow the request until it ends: its success, or RequestFailed / RequestCancelled / TimeoutError.

        With ``stream``, from its status stream (GET …/events, a vidqueue extension) while the server serves one;
        else, or once the stream is gone (GMI Cloud has none; a server stopping ends it), by polling.
        """
        if poll_interval <= 0:
            raise ValueError("poll_interval must be more than 0")
        ceiling = self.wait_timeout if timeout is None else timeout
        deadline = time.monotonic() + ceiling
        interval = poll_interval
        seen: tuple[Any, ...] | None = None

        def report(request: Request) -> bool:
            """Tell ``on_progress`` of a state not seen before; answer whether it was new."""
            nonlocal seen
            state = (request.status, request.progress, request.queue_position)
            if state == seen:
                return False
            seen = state
            if on_progress is not None:
                on_progress(request)
            return True

        if stream:
            ended = yield from self._follow_stream(_segment(request_id), deadline, report)
            if ended is not None:
                return _ended(ended)
        while True:
            request = yield from self.get(request_id)
            # Something moved: look again soon; else back off.
            backed_off = min(max(max_poll_interval, poll_interval), interval * 1.5)
            interval = poll_interval if report(request) else backed_off
            if request.status in _TERMINAL:
                return _ended(request)
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.TimeoutError(
                    f"request {request.request_id} is still {request.status} after {ceiling:g} s of waiting; "
                    "it keeps going: wait again, or cancel it",
                    request=request,
                )
            yield Sleep(min(interval, left))

    def _follow_stream(
        self, request_id: str, deadline: float, on_event: Callable[[Request], object]
    ) -> Steps[Request | None]:
        """Read the request's status stream to its terminal event, reconnecting with Last-Event-ID when it breaks.

        None when polling must take over: no stream here (404 from GMI Cloud), an error answer (polling raises it
        the usual way), a stream that keeps breaking, or the deadline.
        """
        url = f"{self.root}/requests/{request_id}/events"
        sink = EventSink(on_event, deadline)
        failures = 0
        while (left := deadline - time.monotonic()) > 0:
            extra = {"Accept": "text/event-stream"}
            if sink.last_id:
                extra["Last-Event-ID"] = sink.last_id
            send = Send("GET", url, self._headers(extra))
            try:
                yield Stream(send, sink, read_timeout=min(left, STREAM_READ_TIMEOUT))
            except _TRANSIENT:
                failures += 1
                if failures > self.max_retries:
                    return None
                yield Sleep(min(self.backoff(failures), max(0.0, deadline - time.monotonic())))
                continue
            if not sink.is_stream or sink.broken:  # a 204 (nothing more to stream) too: a GET has the outcome
                return None
            if sink.last is not None and sink.last.status in _TERMINAL:
                return sink.last
            # The stream ended early (the server is stopping): open it again from the last event.
            failures = 0 if sink.events else failures + 1
            if failures > self.max_retries:
                return None
        return None

    def download(
        self,
        request: Request | str,
        path: str | os.PathLike[str],
        *,
        index: int,
        on_progress: DownloadCallback | None,
    ) -> Steps[Path]:
        """Stream a result to ``path``: resumed with Range after a broken connection, fresh URL when one expired."""
        if isinstance(request, str) or request.status != "success":
            request = yield from self.get(request)  # by id, or a stale object: ask for the current state
        url = _media_url(request, index)
        target = Path(path)
        part = target.with_name(target.name + ".part")
        failures = refreshes = 0
        try:
            with open(part, "wb") as file:
                sink = Sink(file, on_progress)
                while True:
                    before = sink.received
                    send = Send("GET", url, {"User-Agent": USER_AGENT, **sink.request_headers()})
                    try:
                        response: httpx.Response = yield Stream(send, sink)
                    except _TRANSIENT as exc:
                        failures = 0 if sink.received > before else failures + 1
                        if failures > self.max_retries:
                            raise transport_error(exc, "GET", url) from exc
                        yield Sleep(self.backoff(failures))
                        continue
                    if response.status_code in (200, 206):
                        if sink.rejected:
                            sink.restart()
                        elif sink.complete():
                            break
                        failures = 0 if sink.received > before else failures + 1
                        if failures > self.max_retries:
                            raise errors.NetworkError(f"GET {url} keeps ending before the whole file arrived")
                        continue
                    if response.status_code == 416 and sink.total is not None and sink.received == sink.total:
                        break
                    if response.status_code in _EXPIRED_STATUSES and refreshes < 3:
                        # Media URLs expire; a fresh GET of the request signs new ones.
                        refreshes += 1
                        request = yield from self.get(request.request_id)
                        url = _media_url(request, index)
                        continue
                    if response.status_code in _RETRY_STATUSES and failures < self.max_retries:
                        failures += 1
                        yield Sleep(retry_after(response) or self.backoff(failures))
                        continue
                    raise error_from(response)
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            # Nothing resumes a .part across calls, so a transfer that gave up leaves no litter.
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
        return target

    def generate(
        self,
        model: str,
        payload: dict[str, Any],
        path: str | os.PathLike[str],
        *,
        timeout: float | None,
        poll_interval: float,
        on_progress: ProgressCallback | None,
        on_download: DownloadCallback | None,
    ) -> Steps[Request]:
        """Submit (with a fresh Idempotency-Key, so a lost answer is retried safely), wait, download."""
        created = yield from self.submit(model, payload, idempotency_key=str(uuid.uuid4()))
        done = yield from self.wait(
            created.request_id,
            timeout=timeout,
            poll_interval=poll_interval,
            max_poll_interval=MAX_POLL_INTERVAL,  # wait() never polls slower than poll_interval asks
            on_progress=on_progress,
        )
        yield from self.download(done, path, index=0, on_progress=on_download)
        return done


def _ended(request: Request) -> Request:
    """A finished request: returned when it succeeded, else RequestFailed or RequestCancelled."""
    if request.status == "failed":
        raise errors.RequestFailed(request)
    if request.status == "cancelled":
        raise errors.RequestCancelled(request)
    return request


def _unreadable(response: httpx.Response, why: str) -> errors.ServerError:
    """The error for a success answer the SDK cannot read."""
    request = response.request
    return errors.ServerError(
        f"the answer to {request.method} {request.url.path} could not be read: {why}",
        status_code=response.status_code,
        body=response.text[:500],
    )


def _segment(value: str | Request) -> str:
    """An id (or a Request's id) as one URL path segment; a stray slash must not change the path."""
    if isinstance(value, Request):
        value = value.request_id
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"not a valid id: {value!r}")
    return value


def _media_url(request: Request, index: int) -> str:
    """The URL of result ``index``, or the exception that says why there is none."""
    if request.status == "failed":
        raise errors.RequestFailed(request)
    if request.status == "cancelled":
        raise errors.RequestCancelled(request)
    urls = request.outcome.urls if request.outcome else []
    if request.status != "success" or not urls:
        raise errors.RequestNotFinished(request)
    if not 0 <= index < len(urls):
        raise IndexError(f"request {request.request_id} has {len(urls)} result file(s); there is no index {index}")
    return urls[index]


def transport_error(exc: Exception, method: str, url: str) -> errors.VidqueueError:
    """The SDK exception for a call that got no answer."""
    where = f"{method} {httpx.URL(url).copy_with(query=None)}"
    if isinstance(exc, httpx.TimeoutException):
        return errors.TimeoutError(f"{where} got no answer in time ({type(exc).__name__})")
    return errors.NetworkError(f"{where} failed: {exc or type(exc).__name__}")


def make_core(
    base_url: str | None,
    api_key: str | None,
    organization_id: str | None,
    max_retries: int,
    wait_timeout: float,
) -> Core:
    """A Core from constructor arguments, falling back to the documented environment variables."""
    if max_retries < 0:
        raise ValueError("max_retries must be 0 or more")
    if wait_timeout <= 0:
        raise ValueError("wait_timeout must be more than 0")
    env = os.environ
    return Core(
        base_url=base_url or env.get("VIDQUEUE_BASE_URL") or DEFAULT_BASE_URL,
        api_key=api_key or env.get("VIDQUEUE_API_KEY") or env.get("GMI_API_KEY") or None,
        organization_id=organization_id or env.get("VIDQUEUE_ORGANIZATION_ID") or None,
        max_retries=max_retries,
        wait_timeout=wait_timeout,
    )
