"""The kling engine: Kling's official API (the v1 video endpoints), with the operator's access and secret keys.

Auth is a short-lived JWT (HS256, ``iss`` = access key) renewed before it expires. Every answer is an envelope
``{code, message, request_id, data}`` where code 0 is success whatever the HTTP status says; other codes follow
Kling's table (see ``classify``).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

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

# vidqueue's model id → Kling's model_name.
MODEL_NAMES = {"kling-v2-5-turbo": "kling-v2-5-turbo", "Kling-Text2Video-V2-Master": "kling-v2-master"}
# Payload fields carried over as they are (image is sent separately, as raw base64).
_CARRIED = ("negative_prompt", "cfg_scale", "mode", "duration", "aspect_ratio")
_TOKEN_LIFETIME_S = 1800
_TOKEN_RENEW_S = 300  # a token with less than this left is replaced before use
_PHASES: dict[str, Any] = {"submitted": "waiting", "processing": "running", "succeed": "succeeded", "failed": "failed"}


class KlingAuth:
    """Makes the Bearer JWT Kling wants, and a new one before the current one runs out."""

    def __init__(self, access_key: str, secret_key: str, *, clock: Callable[[], float] = time.time) -> None:
        self._access_key = access_key
        self._secret_key = secret_key
        self._clock = clock
        self._token = ""
        self._expires = 0.0

    def header(self) -> str:
        """The Authorization header value."""
        now = self._clock()
        if now >= self._expires - _TOKEN_RENEW_S:
            issued = int(now)
            claims = {"iss": self._access_key, "exp": issued + _TOKEN_LIFETIME_S, "nbf": issued - 5}
            self._token = jwt.encode(claims, self._secret_key, algorithm="HS256", headers={"typ": "JWT"})
            self._expires = issued + _TOKEN_LIFETIME_S
        return f"Bearer {self._token}"


def classify(http_status: int, code: int | None, message: str, *, ambiguous: bool) -> Exception:
    """The exception for a Kling error answer, by Kling's code table (and the HTTP status without a code)."""
    said = f"Kling said: {message}" if message else "Kling gave no reason"
    if code in (1300, 1301):
        return JobFailed(f"Kling refused the request under its content policy ({said}).", "upstream_rejected")
    if code in (1302, 1303) or (http_status == 429 and code not in (1100, 1101, 1102, 1304)):
        return Transient(f"Kling is rate limiting ({said})", retry_after=None)
    if code in (5000, 5001, 5002) or (code is None and http_status >= 500):
        return Transient(f"Kling had a server error (HTTP {http_status}, code {code})", ambiguous=ambiguous)
    if code is not None and 1000 <= code <= 1004:
        return JobFailed(
            f"Kling did not accept vidqueue's credentials ({said}); check KLING_ACCESS_KEY and KLING_SECRET_KEY.",
            "upstream_error",
        )
    if code is None:
        return JobFailed(f"Kling answered HTTP {http_status} without an error code.", "upstream_error")
    return JobFailed(f"Kling answered code {code} ({said}).", "upstream_error")


class KlingEngine(UpstreamEngine):
    """Sends each request to Kling and copies the finished video into vidqueue's storage."""

    kind = "kling"
    provider = "Kling"
    served = frozenset(MODEL_NAMES)

    def __init__(
        self,
        models: set[str],
        settings: UpstreamOptions,
        access_key: str,
        secret_key: str,
        *,
        allow_private_urls: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(models, settings, allow_private_urls=allow_private_urls, transport=transport, clock=clock)
        self._auth = KlingAuth(access_key, secret_key)

    # -- the wire -----------------------------------------------------------------------------------------
    @staticmethod
    def endpoint(job: Job) -> str:
        """The task family: image2video when the request has an image, else text2video."""
        return "/v1/videos/image2video" if job.input_image is not None else "/v1/videos/text2video"

    @staticmethod
    def body(job: Job) -> dict[str, Any]:
        """The create body: Kling's model name, the payload's fields, our request id as external_task_id."""
        payload = job.payload
        body: dict[str, Any] = {"model_name": MODEL_NAMES[job.model], "external_task_id": job.request_id}
        if payload.get("prompt"):
            body["prompt"] = payload["prompt"]
        for key in _CARRIED:
            value = payload.get(key)
            if value is not None and value != "":
                body[key] = str(value) if key == "duration" else value
        if job.input_image is not None:
            # Kling wants raw base64, without a data: prefix; the frame's shape follows the image, not a ratio.
            body["image"] = base64.b64encode(job.input_image).decode("ascii")
            body.pop("aspect_ratio", None)
        return body

    async def _call(self, method: str, path: str, *, ambiguous: bool, json: Any = None) -> Any:
        """One call; answer the envelope's ``data`` or raise by the code table."""
        response = await self.send(method, path, json=json, headers={"Authorization": self._auth.header()})
        try:
            envelope = response.json()
            code = envelope.get("code")
            message = str(envelope.get("message") or "")
        except (ValueError, AttributeError):
            if response.status_code == 200 or response.status_code >= 500 or response.status_code == 429:
                raise Transient(
                    f"Kling sent an unreadable answer (HTTP {response.status_code})", ambiguous=ambiguous
                ) from None
            message = f"Kling answered HTTP {response.status_code} with no readable body."
            raise JobFailed(message, "upstream_error") from None
        if code == 0:
            return envelope.get("data")
        if response.status_code == 404 or code in (1202, 1203):
            raise NoSuchTask(message)
        error = classify(response.status_code, code if isinstance(code, int) else None, message, ambiguous=ambiguous)
        if isinstance(error, Transient):
            error.retry_after = retry_after(response)
        raise error

    # -- the provider interface ---------------------------------------------------------------------------
    async def create(self, job: Job) -> str:
        """POST the task; answer Kling's task id."""
        try:
            data = await self._call("POST", self.endpoint(job), ambiguous=True, json=self.body(job))
        except NoSuchTask as exc:
            raise JobFailed(f"Kling does not offer this model or endpoint ({exc}).", "upstream_error") from None
        return _task_id(data)

    async def find(self, job: Job, since: float) -> str | None:
        """Look the task up by its external_task_id (our request id)."""
        try:
            data = await self._call("GET", f"{self.endpoint(job)}/{job.request_id}", ambiguous=False)
        except NoSuchTask:
            return None
        return _task_id(data)

    async def poll(self, job: Job, task_id: str) -> TaskState:
        """GET the task and read its status and result videos."""
        data = await self._call("GET", f"{self.endpoint(job)}/{task_id}", ambiguous=False)
        if not isinstance(data, dict) or data.get("task_status") not in _PHASES:
            raise Transient("Kling sent a task without a known task_status")
        phase = _PHASES[data["task_status"]]
        urls: list[str] = []
        if phase == "succeeded":
            videos = (data.get("task_result") or {}).get("videos") or []
            urls = [str(v["url"]) for v in videos if isinstance(v, dict) and v.get("url")]
        return TaskState(phase=phase, urls=urls, message=data.get("task_status_msg") or None)


def _task_id(data: Any) -> str:
    if not isinstance(data, dict) or not data.get("task_id"):
        raise Transient("Kling's answer has no task_id", ambiguous=True)
    return str(data["task_id"])
