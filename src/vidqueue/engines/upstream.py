"""What the kling and gmi engines share: one paid task per request, retries to a deadline, polling, copying results.

The rule that matters most is that a request never creates a second paid upstream task, whatever crashes:

1. Before each create the engine checkpoints ``{"creating": true}``; the create names vidqueue's request id
   (Kling's ``external_task_id``, an Idempotency-Key for GMI).
2. The upstream's task id is checkpointed as soon as the create answers, before any waiting.
3. A later attempt with a task id polls it. One with only the ``creating`` mark, or a create whose answer was lost
   (a dropped connection, a timeout, a 5xx, a garbled body), first asks the upstream for a task made for this
   request, and creates one only when the upstream says there is none.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx

from vidqueue.engines.base import GeneratedMedia, Job, JobContext
from vidqueue.errors import JobCancelled, JobFailed
from vidqueue.media.encode import probe, write_thumbnail
from vidqueue.media.netguard import FetchError, fetch_to_file

log = logging.getLogger("vidqueue.upstream")

T = TypeVar("T")

_MAX_BACKOFF_S = 30.0
_MAX_RETRY_AFTER_S = 120.0
_SLEEP_SLICE_S = 0.25  # waits are cut into slices this long, with a cancel check between them
_DOWNLOAD_TRIES = 3
_WAIT_SHARE = 0.9  # progress while the upstream works; the copy of the results takes it the rest of the way


class UpstreamOptions(Protocol):
    """What an upstream engine reads from its settings (``config.UpstreamSettings`` has these fields)."""

    @property
    def base_url(self) -> str: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def request_timeout_s(self) -> float: ...
    @property
    def poll_interval_s(self) -> float: ...
    @property
    def max_poll_interval_s(self) -> float: ...
    @property
    def retry_backoff_s(self) -> float: ...
    @property
    def retry_deadline_s(self) -> float: ...
    @property
    def max_wait_s(self) -> float: ...
    @property
    def download_timeout_s(self) -> float: ...
    @property
    def max_video_bytes(self) -> int: ...


class Transient(Exception):
    """A call that may work if tried again: rate limits, 5xx, the network, timeouts, garbled answers."""

    def __init__(
        self, message: str, *, timeout: bool = False, ambiguous: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.timeout = timeout
        # The upstream may have acted on the call before the answer was lost (a create may exist).
        self.ambiguous = ambiguous
        self.retry_after = retry_after


class NoSuchTask(Exception):
    """The upstream has no task by that id."""


@dataclass(frozen=True)
class TaskState:
    """An upstream task as one poll saw it."""

    phase: Literal["waiting", "running", "succeeded", "failed"]
    urls: list[str] = field(default_factory=list)
    message: str | None = None
    progress: float | None = None  # 0-1, when the upstream reports it


def transport_failure(exc: httpx.HTTPError, provider: str) -> Transient:
    """A network-level failure as a Transient: ambiguous unless the request surely never left."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return Transient(f"could not connect to {provider} ({exc})")
    if isinstance(exc, httpx.TimeoutException):
        return Transient(f"{provider} did not answer in time", timeout=True, ambiguous=True)
    return Transient(f"the connection to {provider} failed ({type(exc).__name__})", ambiguous=True)


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds, if it is a number."""
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def expected_seconds(payload: dict[str, Any]) -> float:
    """A rough time the upstream takes for this payload, for the progress estimate."""
    seconds = 90.0 * (2.0 if str(payload.get("duration", "5")) == "10" else 1.0)
    return seconds * (1.5 if payload.get("mode") == "pro" else 1.0)


def estimate(elapsed: float, expected: float) -> float:
    """Progress from elapsed time: quick at first, never reaching the end before the upstream says so."""
    return _WAIT_SHARE * (1.0 - math.exp(-elapsed / expected))


class UpstreamEngine(abc.ABC):
    """An engine that has a paid upstream make the video, waits for it, and copies the result into storage."""

    kind: str
    provider: str  # the upstream's name in messages: "Kling", "GMI Cloud"
    #: The vidqueue model ids this upstream has a counterpart for.
    served: frozenset[str]
    #: How long after a create's answer was lost the upstream may still make its task. An upstream that cannot
    #: find tasks by our id at once waits this long, looking, before it may create again.
    settle_s: float = 0.0

    def __init__(
        self,
        models: set[str],
        settings: UpstreamOptions,
        *,
        allow_private_urls: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = set(models) - self.served
        if unknown:
            raise ValueError(f"the {self.kind} engine does not serve {sorted(unknown)}")
        self._models = set(models)
        self.settings = settings
        self.concurrency = settings.concurrency
        self.shared_limit: int | None = settings.concurrency
        self.allow_private_urls = allow_private_urls
        self._transport = transport
        self._clock = clock
        self._client: httpx.AsyncClient | None = None

    # -- what a provider implements -----------------------------------------------------------------------
    @abc.abstractmethod
    async def create(self, job: Job) -> str:
        """Create the upstream task for ``job``; answer its id."""

    @abc.abstractmethod
    async def find(self, job: Job, since: float) -> str | None:
        """The id of a task an earlier attempt created for ``job`` (at or after ``since``, Unix time), or None."""

    @abc.abstractmethod
    async def poll(self, job: Job, task_id: str) -> TaskState:
        """The task's state now; raise NoSuchTask if the upstream does not know it."""

    # -- the engine interface -----------------------------------------------------------------------------
    def models(self) -> set[str]:
        """Model ids this engine serves."""
        return set(self._models)

    def setup(self) -> None:
        """Nothing to load: the HTTP client is opened on the event loop at first use."""
        return None

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def http(self) -> httpx.AsyncClient:
        """The engine's HTTP client (one connection pool for every request in flight)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.settings.base_url,
                timeout=self.settings.request_timeout_s,
                transport=self._transport,
                headers={"User-Agent": "vidqueue"},
            )
        return self._client

    async def generate(self, job: Job, ctx: JobContext) -> GeneratedMedia:
        """Create (or find) the upstream task, wait for it, and copy its videos into the work folder."""
        started = self._clock()
        task_id = await self._task_for(job, ctx)
        try:
            urls = await self._wait(job, ctx, task_id, started)
            videos = await self._copy(urls, ctx, task_id)
        except JobCancelled:
            raise JobCancelled(
                f"The request was cancelled by its owner. {self.provider} has no cancel call: its task {task_id} "
                "may still run to the end and be billed."
            ) from None
        try:
            info = await asyncio.to_thread(probe, videos[0])
            thumbnail = await asyncio.to_thread(write_thumbnail, videos[0], ctx.workdir / "thumbnail.jpg")
        except JobFailed as exc:
            message = f"{self.provider} returned a file vidqueue cannot read: {exc.message}"
            raise JobFailed(message, "upstream_error") from None
        await self._progress(ctx, 1.0)
        return GeneratedMedia(
            videos=videos,
            info=info,
            thumbnail=thumbnail,
            extra={"upstream": {"provider": self.kind, "task_id": task_id}},
        )

    # -- one task per request -----------------------------------------------------------------------------
    async def _task_for(self, job: Job, ctx: JobContext) -> str:
        state = ctx.resume_state or {}
        if state.get("task_id"):
            log.info("request %s: resuming %s task %s", job.request_id, self.provider, state["task_id"])
            return str(state["task_id"])
        since = float(state.get("since", time.time()))
        # An earlier attempt that died after marking "creating" may have created the task.
        ambiguous = bool(state.get("creating"))
        doubt_since = -float("inf") if ambiguous else None  # when the last create answer was lost

        async def attempt() -> str:
            nonlocal ambiguous, doubt_since
            if ambiguous:
                found = await self.find(job, since)
                if found is not None:
                    log.info("request %s: found the %s task %s made earlier", job.request_id, self.provider, found)
                    return found
                if doubt_since is not None and self._clock() - doubt_since < self.settle_s:
                    # A create the upstream is still working on would not be listed yet: look again later.
                    raise Transient(f"waiting to see whether {self.provider} received the lost create")
                ambiguous = False  # the upstream has none: creating one now cannot make a second
            try:
                return await self.create(job)
            except Transient as exc:
                if exc.ambiguous:
                    ambiguous, doubt_since = True, self._clock()
                raise
            except JobFailed as exc:
                # After a lost answer, a refusal may be the upstream rejecting a second create for this request.
                if doubt_since is not None and exc.code != "upstream_rejected":
                    found = await self.find(job, since)
                    if found is not None:
                        return found
                raise

        await self._checkpoint(ctx, {"creating": True, "since": since})
        try:
            task_id = await self._retrying(ctx, "create", attempt)
        except JobCancelled:
            if not ambiguous:
                raise
            raise JobCancelled(
                f"The request was cancelled by its owner while vidqueue was finding out whether {self.provider} "
                "had received it: a task may exist upstream and be billed."
            ) from None
        await self._checkpoint(ctx, {"task_id": task_id, "since": since})
        log.info("request %s: %s task %s", job.request_id, self.provider, task_id)
        return task_id

    # -- waiting ------------------------------------------------------------------------------------------
    async def _wait(self, job: Job, ctx: JobContext, task_id: str, started: float) -> list[str]:
        expected = expected_seconds(job.payload)
        interval = self.settings.poll_interval_s
        while True:
            try:
                state = await self._retrying(ctx, "poll", lambda: self.poll(job, task_id))
            except NoSuchTask:
                raise JobFailed(
                    f"{self.provider} no longer knows task {task_id}; submit the request again.", "upstream_error"
                ) from None
            if state.phase == "succeeded":
                if not state.urls:
                    raise JobFailed(f"{self.provider} finished task {task_id} without a video.", "upstream_error")
                return state.urls
            if state.phase == "failed":
                reason = state.message or "no reason given"
                raise JobFailed(f"{self.provider} could not generate the video: {reason}", "upstream_error")
            elapsed = self._clock() - started
            if elapsed >= self.settings.max_wait_s:
                raise JobFailed(
                    f"{self.provider} did not finish task {task_id} within {self.settings.max_wait_s:g} s; "
                    "vidqueue stopped waiting (the task may still finish upstream and be billed).",
                    "upstream_timeout",
                )
            fraction = estimate(elapsed, expected)
            if state.progress is not None:
                fraction = max(fraction, _WAIT_SHARE * state.progress)
            await self._progress(ctx, fraction)
            await self._sleep(ctx, interval)
            interval = min(self.settings.max_poll_interval_s, interval * 1.5)

    # -- copying the results ------------------------------------------------------------------------------
    async def _copy(self, urls: list[str], ctx: JobContext, task_id: str) -> list[Path]:
        videos: list[Path] = []
        for index, url in enumerate(urls):
            path = ctx.workdir / ("video.mp4" if index == 0 else f"video-{index}.mp4")
            await self._download(url, path, ctx)
            videos.append(path)
            await self._progress(ctx, _WAIT_SHARE + (1 - _WAIT_SHARE) * (index + 1) / len(urls) * 0.9)
        return videos

    async def _download(self, url: str, path: Path, ctx: JobContext) -> None:
        where = _public_part(url)
        for attempt in range(1, _DOWNLOAD_TRIES + 1):
            try:
                await asyncio.to_thread(
                    fetch_to_file,
                    url,
                    path,
                    allow_private=self.allow_private_urls,
                    timeout_s=self.settings.download_timeout_s,
                    max_bytes=self.settings.max_video_bytes,
                )
                return
            except FetchError as exc:
                if not exc.transient or attempt == _DOWNLOAD_TRIES:
                    raise JobFailed(
                        f"The result video from {self.provider} ({where}) {exc}; the request cannot finish without it.",
                        "upstream_error",
                    ) from None
                log.warning("download of %s failed (try %d): %s", where, attempt, exc)
                await self._sleep(ctx, self.settings.retry_backoff_s * 2 ** (attempt - 1))

    # -- retries, waits, the context ----------------------------------------------------------------------
    async def _retrying(self, ctx: JobContext, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call``, retrying Transient failures with backoff and jitter until the retry deadline."""
        first_failure: float | None = None
        delay = self.settings.retry_backoff_s
        while True:
            if await asyncio.to_thread(ctx.cancelled):
                raise JobCancelled()
            try:
                return await call()
            except Transient as exc:
                now = self._clock()
                first_failure = now if first_failure is None else first_failure
                if now - first_failure >= self.settings.retry_deadline_s:
                    code = "upstream_timeout" if exc.timeout else "upstream_error"
                    raise JobFailed(
                        f"{self.provider} kept failing for {self.settings.retry_deadline_s:g} s ({exc.message}); "
                        "try again later.",
                        code,
                    ) from None
                wait = delay / 2 + random.uniform(0, delay / 2)  # jitter spreads retries of many requests
                if exc.retry_after is not None:
                    wait = max(wait, min(exc.retry_after, _MAX_RETRY_AFTER_S))
                log.warning("%s %s failed, retrying in %.1f s: %s", self.provider, what, wait, exc.message)
                await self._sleep(ctx, wait)
                delay = min(_MAX_BACKOFF_S, delay * 2)

    async def _sleep(self, ctx: JobContext, seconds: float) -> None:
        end = self._clock() + seconds
        while (left := end - self._clock()) > 0:
            if await asyncio.to_thread(ctx.cancelled):
                raise JobCancelled()
            await asyncio.sleep(min(_SLEEP_SLICE_S, left))

    async def _progress(self, ctx: JobContext, fraction: float) -> None:
        await asyncio.to_thread(ctx.progress, fraction)

    async def _checkpoint(self, ctx: JobContext, state: dict[str, Any]) -> None:
        await asyncio.to_thread(ctx.checkpoint, state)

    # -- helpers for providers ----------------------------------------------------------------------------
    async def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One HTTP call; network failures become Transient."""
        try:
            return await self.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise transport_failure(exc, self.provider) from None


def _public_part(url: str) -> str:
    """A URL without its query (result URLs carry signatures that must not reach logs or clients)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
