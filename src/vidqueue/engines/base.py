"""The engine interface: one claimed request in, media files out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vidqueue.media.types import VideoInfo


@dataclass(frozen=True)
class Job:
    """One claimed request, as an engine sees it."""

    request_id: str
    org_id: str
    model: str
    payload: dict[str, Any]  # validated, defaults filled in
    attempt: int = 1
    input_image: bytes | None = None  # the checked image (JPEG or PNG bytes) when the payload has one


@dataclass(frozen=True)
class GeneratedMedia:
    """What an engine made: files in the job's work folder, and facts about the video."""

    videos: list[Path]
    info: VideoInfo  # of the first video
    thumbnail: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class JobContext(Protocol):
    """What a running job may ask of the worker that runs it."""

    @property
    def workdir(self) -> Path:
        """A private, empty folder for this attempt's files."""
        ...

    @property
    def resume_state(self) -> dict[str, Any] | None:
        """The last checkpoint of an earlier attempt, if any."""
        ...

    def progress(self, fraction: float) -> None:
        """Report progress from 0.0 to 1.0; cheap to call often (writes are throttled)."""
        ...

    def cancelled(self) -> bool:
        """Whether the request was cancelled; engines check between steps and raise JobCancelled."""
        ...

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Persist state (an upstream task id, say) before waiting on it."""
        ...

    def stage_done(self) -> None:
        """The job's device work has ended: the worker may start the next request while this one finishes."""
        ...


class Engine(Protocol):
    """Turns one claimed request into media, in a worker thread (local engines: emulator, diffusers)."""

    kind: str
    #: Requests one worker process runs at once with this engine.
    concurrency: int
    #: Requests in flight at once across every worker (an upstream account's limit), or None for no such cap.
    shared_limit: int | None

    def models(self) -> set[str]:
        """Model ids this engine instance serves."""
        ...

    def setup(self) -> None:
        """Load weights or open clients; once per process."""
        ...

    def generate(self, job: Job, ctx: JobContext) -> GeneratedMedia:
        """Generate the media for ``job``; raise JobFailed or JobCancelled to end it otherwise."""
        ...


class AsyncEngine(Protocol):
    """Turns one claimed request into media on the worker's event loop (upstream engines, which mostly wait).

    ``ctx`` methods touch the store; an async engine calls them through ``asyncio.to_thread``.
    """

    kind: str
    concurrency: int
    shared_limit: int | None

    def models(self) -> set[str]:
        """Model ids this engine instance serves."""
        ...

    def setup(self) -> None:
        """Check settings and credentials; once per process."""
        ...

    async def generate(self, job: Job, ctx: JobContext) -> GeneratedMedia:
        """Generate the media for ``job``; raise JobFailed or JobCancelled to end it otherwise."""
        ...

    async def aclose(self) -> None:
        """Close the engine's HTTP clients; on the loop that ran ``generate``."""
        ...


AnyEngine = Engine | AsyncEngine
