"""The gmi engine: GMI Cloud's request queue (the API vidqueue itself copies), with the operator's GMI API key.

GMI documents no way to tag a request with our id, so a create whose answer was lost is looked for in GMI's
request list (same model and payload, made since the first attempt began). The create also carries an Idempotency-Key
(our request id), which a server that honours it (vidqueue does) uses to answer the first request again.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import httpx

from vidqueue.engines.base import Job
from vidqueue.engines.upstream import (
    NoSuchTask,
    TaskState,
    Transient,
    UpstreamEngine,
    UpstreamOptions,
    retry_after,
)
from vidqueue.errors import JobFailed

QUEUE_PATH = "/api/v1/ie/requestqueue/apikey"
MODELS = {"kling-v2-5-turbo", "Kling-Text2Video-V2-Master"}
_PHASES: dict[str, Any] = {
    "queued": "waiting",
    "dispatched": "waiting",
    "processing": "running",
    "success": "succeeded",
    "failed": "failed",
    "cancelled": "failed",
}
_FIND_PAGES = 3  # pages of GMI's newest requests searched for a lost create
# GMI's whole-second created_at and our clock may disagree this much; wider would match an older twin request.
_CLOCK_SLACK_S = 5


class GmiEngine(UpstreamEngine):
    """Forwards each request to GMI Cloud and copies the finished video into vidqueue's storage."""

    kind = "gmi"
    provider = "GMI Cloud"
    served = frozenset(MODELS)

    def __init__(
        self,
        models: set[str],
        settings: UpstreamOptions,
        api_key: str,
        *,
        allow_private_urls: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(models, settings, allow_private_urls=allow_private_urls, transport=transport, clock=clock)
        self._api_key = api_key
        # A create GMI is still working on when our call timed out shows up in its list only once it is made.
        self.settle_s = 2 * settings.request_timeout_s
        base = settings.base_url
        # A base URL that already names the queue path is used as it is.
        self._root = "" if "/requestqueue" in base else QUEUE_PATH

    @staticmethod
    def upstream_payload(job: Job) -> dict[str, Any]:
        """The payload GMI gets: ours, with the checked input image inlined as base64 (never our stored URL)."""
        payload = dict(job.payload)
        if job.input_image is not None:
            payload["image"] = base64.b64encode(job.input_image).decode("ascii")
        return payload

    async def _call(
        self, method: str, path: str, *, ambiguous: bool, json: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        response = await self.send(
            method,
            f"{self._root}{path}",
            json=json,
            headers={"Authorization": f"Bearer {self._api_key}", **(headers or {})},
        )
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if 200 <= status < 300:
            if not isinstance(body, dict):
                raise Transient(f"GMI Cloud sent an unreadable answer (HTTP {status})", ambiguous=ambiguous)
            return body
        message = str(body.get("error") or "") if isinstance(body, dict) else ""
        said = f"GMI Cloud said: {message}" if message else "GMI Cloud gave no reason"
        if status == 429:
            raise Transient("GMI Cloud is rate limiting (HTTP 429)", retry_after=retry_after(response))
        if status >= 500:
            raise Transient(f"GMI Cloud answered HTTP {status}", ambiguous=ambiguous, retry_after=retry_after(response))
        if status in (401, 403):
            raise JobFailed(f"GMI Cloud did not accept vidqueue's key ({said}); check GMI_API_KEY.", "upstream_error")
        if status in (404, 405):
            raise NoSuchTask(message)
        if status in (400, 422):
            # GMI answers 400 both for payloads it refuses and for content-policy rejections.
            raise JobFailed(f"GMI Cloud rejected the request ({said}).", "upstream_rejected")
        raise JobFailed(f"GMI Cloud answered HTTP {status} ({said}).", "upstream_error")

    async def create(self, job: Job) -> str:
        """POST the request; answer GMI's request id."""
        try:
            body = await self._call(
                "POST",
                "/requests",
                ambiguous=True,
                json={"model": job.model, "payload": self.upstream_payload(job)},
                headers={"Idempotency-Key": f"vidqueue-{job.request_id}"},
            )
        except NoSuchTask as exc:
            raise JobFailed(f"GMI Cloud does not serve model {job.model!r} ({exc}).", "upstream_error") from None
        if not body.get("request_id"):
            raise Transient("GMI Cloud's answer has no request_id", ambiguous=True)
        return str(body["request_id"])

    async def find(self, job: Job, since: float) -> str | None:
        """Search GMI's newest requests for one this request made: same model and payload, made since ``since``."""
        sent = self.upstream_payload(job)
        sent.pop("image", None)  # GMI may keep an image as something else than what it was sent
        cursor: str | None = None
        for _page in range(_FIND_PAGES):
            params: dict[str, Any] = {"model_id": job.model, "limit": 50}
            if cursor:
                params["cursor"] = cursor
            try:
                body = await self._call("GET", _with_query("/requests", params), ambiguous=False)
            except NoSuchTask:
                raise JobFailed(
                    "vidqueue lost GMI Cloud's answer to this request's submit and cannot list GMI's requests to "
                    "look for it, so it did not submit again (that could pay twice). Submit it again if needed.",
                    "upstream_error",
                ) from None
            items = body.get("requests") or []
            for item in items:
                if not isinstance(item, dict):
                    continue
                created = _number(item.get("created_at"))
                if created is not None and created < since - _CLOCK_SLACK_S:
                    return None  # newest first: everything further down is older still
                echoed = item.get("payload") or {}
                if item.get("model") == job.model and all(echoed.get(k) == v for k, v in sent.items()):
                    return str(item["request_id"])
            cursor = body.get("next_cursor")
            if not cursor:
                return None
        return None

    async def poll(self, job: Job, task_id: str) -> TaskState:
        """GET the request and read its status, progress and result URLs (either outcome shape)."""
        body = await self._call("GET", f"/requests/{task_id}", ambiguous=False)
        status = body.get("status")
        if status not in _PHASES:
            raise Transient(f"GMI Cloud sent a request with an unknown status {status!r}")
        phase = _PHASES[status]
        outcome = body.get("outcome") or {}
        urls: list[str] = []
        message: str | None = None
        if phase == "succeeded":
            media = outcome.get("media_urls") or []
            urls = [str(m["url"]) for m in media if isinstance(m, dict) and m.get("url")]
            if not urls and outcome.get("video_url"):
                urls = [str(outcome["video_url"])]  # the older outcome shape
        elif phase == "failed":
            error = outcome.get("error")
            detail = error.get("message") if isinstance(error, dict) else None
            message = str(detail or body.get("error") or status)
        progress = _number(body.get("progress"))
        return TaskState(
            phase=phase, urls=urls, message=message, progress=None if progress is None else min(1.0, progress / 100)
        )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _with_query(path: str, params: dict[str, Any]) -> str:
    return str(httpx.URL(path, params=params))
