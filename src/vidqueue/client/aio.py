"""The asyncio client, on ``httpx.AsyncClient``; it mirrors ``Client`` method for method."""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from vidqueue.client._core import (
    MAX_POLL_INTERVAL,
    DownloadCallback,
    ProgressCallback,
    Send,
    Sleep,
    Steps,
    Stream,
    make_core,
)
from vidqueue.client.sync import DEFAULT_TIMEOUT
from vidqueue.client.types import Delivery, Model, Request

T = TypeVar("T")


class AsyncClient:
    """A vidqueue (or GMI Cloud request-queue) client for asyncio.

    ``base_url`` defaults to ``VIDQUEUE_BASE_URL``, else ``http://127.0.0.1:8000``; ``api_key`` to
    ``VIDQUEUE_API_KEY``, else ``GMI_API_KEY`` (with none, every call raises ``MissingAPIKey`` and sends nothing).
    ``https://console.gmicloud.ai`` speaks to GMI Cloud itself.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        organization_id: str | None = None,
        max_retries: int = 4,
        wait_timeout: float = 3600.0,
    ) -> None:
        self._core = make_core(base_url, api_key, organization_id, max_retries, wait_timeout)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=True)

    @property
    def base_url(self) -> str:
        """The server this client talks to."""
        return self._core.base_url

    @property
    def api_key(self) -> str | None:
        """The key sent with each call (from the argument or the environment), or None."""
        return self._core.api_key

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def models(self) -> builtins.list[Model]:
        """Every model the server offers; ``.model`` is the id."""
        return await self._run(self._core.models())

    async def model(self, model_id: str) -> Model:
        """One model's details, with its ``parameters``."""
        return await self._run(self._core.model(model_id))

    async def submit(
        self,
        model: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        priority: int | None = None,
    ) -> Request:
        """Queue a request; with an ``idempotency_key`` it is retried safely after a lost answer."""
        return await self._run(
            self._core.submit(
                model, payload, idempotency_key=idempotency_key, callback_url=callback_url, priority=priority
            )
        )

    async def get(self, request_id: str | Request) -> Request:
        """A request's current state."""
        return await self._run(self._core.get(request_id))

    async def list(
        self, model_id: str | None = None, status: str | None = None, *, page_size: int = 50
    ) -> AsyncIterator[Request]:
        """Every request of the organisation, newest first, fetched a page at a time as you iterate."""
        cursor: str | None = None
        while True:
            page, cursor = await self._run(self._core.list_page(model_id, status, page_size, cursor))
            for request in page:
                yield request
            if cursor is None:
                return

    async def deliveries(self, request_id: str | Request) -> builtins.list[Delivery]:
        """A request's webhook deliveries (to its callback_url), oldest first."""
        return await self._run(self._core.deliveries(request_id))

    async def cancel(self, request_id: str | Request) -> Request:
        """Cancel a request; answers it once the cancel took hold."""
        return await self._run(self._core.cancel(request_id))

    async def wait(
        self,
        request_id: str | Request,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        max_poll_interval: float = MAX_POLL_INTERVAL,
        on_progress: ProgressCallback | None = None,
        stream: bool = True,
    ) -> Request:
        """Wait until success (returned) or failure (RequestFailed, RequestCancelled); TimeoutError past ``timeout``.

        Follows the request's status stream (Server-Sent Events) where the server has one (vidqueue does, GMI Cloud
        does not), and polls otherwise or with ``stream=False``: every ``poll_interval`` seconds while something
        changes, backing off to ``max_poll_interval`` while nothing does. ``on_progress`` gets the request
        whenever its status, progress or queue position moved. ``timeout`` defaults to the client's
        ``wait_timeout`` (an hour).
        """
        return await self._run(
            self._core.wait(
                request_id,
                timeout=timeout,
                poll_interval=poll_interval,
                max_poll_interval=max_poll_interval,
                on_progress=on_progress,
                stream=stream,
            )
        )

    async def download(
        self,
        request: str | Request,
        path: str | os.PathLike[str],
        *,
        index: int = 0,
        on_progress: DownloadCallback | None = None,
    ) -> Path:
        """Save a finished request's video to ``path``; ``on_progress(bytes_so_far, total_or_None)``."""
        return await self._run(self._core.download(request, path, index=index, on_progress=on_progress))

    async def generate(
        self,
        model: str,
        payload: dict[str, Any],
        path: str | os.PathLike[str],
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_progress: ProgressCallback | None = None,
        on_download: DownloadCallback | None = None,
    ) -> Request:
        """Submit, wait and download in one call; answers the finished request."""
        return await self._run(
            self._core.generate(
                model,
                payload,
                path,
                timeout=timeout,
                poll_interval=poll_interval,
                on_progress=on_progress,
                on_download=on_download,
            )
        )

    async def _run(self, steps: Steps[T]) -> T:
        """Drive a step generator to its result with asyncio I/O."""
        reply: Any = None
        error: Exception | None = None
        try:
            while True:
                try:
                    step = steps.throw(error) if error is not None else steps.send(reply)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                reply, error = None, None
                try:
                    reply = await self._perform(step)
                except httpx.TransportError as exc:
                    error = exc
        finally:
            steps.close()  # an exception from a callback must still close the download's file

    async def _perform(self, step: Send | Stream | Sleep) -> Any:
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        send = step.send if isinstance(step, Stream) else step
        timeout = self._http.timeout
        if isinstance(step, Stream) and step.read_timeout is not None:
            timeout = httpx.Timeout(
                connect=timeout.connect, read=step.read_timeout, write=timeout.write, pool=timeout.pool
            )
        request = self._http.build_request(
            send.method, send.url, headers=send.headers, params=send.params, json=send.json, timeout=timeout
        )
        if isinstance(step, Send):
            return await self._http.send(request)
        response = await self._http.send(request, stream=True)
        try:
            if step.sink.start(response):
                async for chunk in response.aiter_bytes():
                    # A plain file write (chunks are small, the disk local), or an event parsed; False: stop.
                    if step.sink.write(chunk) is False:
                        break
            else:
                await response.aread()
        finally:
            await response.aclose()
        return response
