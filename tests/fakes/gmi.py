"""A fake of GMI Cloud's request queue for its Kling models, shaped by CONTRACT.md's compat fields and UPSTREAMS.md."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, ClassVar

from tests.fakes.base import Action, FakeUpstream, Fault, Rejected, Reply, Request, Route, int_param

MODELS = ("kling-v2-5-turbo", "Kling-Text2Video-V2-Master")
# The public API-key base path, and the one GMI's own SDK calls; both are served alike.
BASE = "/api/v1/ie/requestqueue/apikey"
SDK_BASE = "/api/v1/ie/requestqueue"
_PATH = re.compile(r"^/api/v1/ie/requestqueue(?:/apikey)?/(requests|models)(?:/([^/]+))?$")


def _bad_query(message: str) -> Rejected:
    return _error(400, message)


def _error(status: int, message: str) -> Rejected:
    return Rejected(Reply.json(status, {"error": message}))


class GmiFake(FakeUpstream):
    """GMI's request queue: bearer API key, requests that go queued → processing → success | failed.

    Use as ``with GmiFake() as fake:``; the API lives under ``fake.url + BASE`` (or ``SDK_BASE``).
    """

    success_status: ClassVar[str] = "success"
    malformed_body: ClassVar[bytes] = b'{"request_id": "'

    def __init__(self, api_key: str = "gmi-test") -> None:
        super().__init__()
        self.api_key = api_key
        self.org_id = "org-fake"
        self.old_shape = False
        self.list_supported = True
        self.auth_failures = 0
        self._idempotency_keys: list[str | None] = []

    @property
    def idempotency_keys(self) -> list[str | None]:
        """The ``Idempotency-Key`` header of every create call, in order (None where absent); never honoured."""
        with self._lock:
            return list(self._idempotency_keys)

    @property
    def api_url(self) -> str:
        """The API base URL (the public ``/apikey`` flavour)."""
        return self.url + BASE

    # -- routing

    def _route(self, method: str, path: str) -> tuple[Route | None, Action]:
        match = _PATH.match(path)
        if match is None:
            return None, self._not_found
        collection, item = match.group(1), match.group(2)
        if collection == "models" and method == "GET":
            return None, lambda request: self._model(request, item)
        if collection == "requests" and method == "POST" and item is None:
            return "create", self._create
        if collection == "requests" and method == "GET" and item is not None:
            return "query", lambda request: self._query(request, item)
        if collection == "requests" and method == "GET":
            return "list", self._list
        return None, self._not_found

    def _fault_reply(self, fault: Fault) -> Reply:
        if fault.code is None:
            return Reply.text(fault.http_status, fault.message)
        return Reply.json(fault.http_status, {"error": fault.message})

    def _on_call(self, route: Route | None, request: Request) -> None:
        # Logged for every create call, faulted ones included, so a test can see what each retry sent.
        if route == "create":
            with self._lock:
                self._idempotency_keys.append(request.headers.get("idempotency-key"))

    def _not_found(self, request: Request) -> Reply:
        return Reply.json(404, {"error": "Not Found"})

    def _auth(self, request: Request) -> None:
        scheme, _, key = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or key.strip() != self.api_key:
            with self._lock:
                self.auth_failures += 1
            raise _error(401, "Invalid API key")

    # -- actions

    def _create(self, request: Request) -> Reply:
        self._auth(request)
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise _error(400, "Request body must be JSON") from None
        if not isinstance(body, dict):
            raise _error(400, "Request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _error(400, "model is required")
        if model not in MODELS:
            raise _error(404, f"Model {model} not found")
        payload = body.get("payload")
        if not isinstance(payload, dict):
            raise _error(400, "payload must be a JSON object")
        prompt = payload.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise _error(400, "payload.prompt is required")
        if "forbidden" in prompt.lower():
            raise _error(400, "Content policy violation: the prompt was rejected by the provider.")
        now = int(time.time())
        request_id = str(uuid.uuid4())
        task = {
            "request_id": request_id,
            "kind": model,
            "model": model,
            "status": "queued",
            "status_msg": None,
            "body": body,
            "payload": payload,
            "created_at": now,
            "updated_at": now,
            "queued_at": now,
        }
        with self._lock:
            self._add_task(request_id, task)
            obj = self._request_object(task)
        return Reply.json(200, obj)

    def _query(self, request: Request, request_id: str) -> Reply:
        self._auth(request)
        with self._lock:
            task = self._tasks.get(request_id)
            if task is None:
                raise _error(404, f"Request {request_id} not found")
            if self._advance(task):
                task["updated_at"] = int(time.time())
            obj = self._request_object(task)
        return Reply.json(200, obj)

    def _list(self, request: Request) -> Reply:
        if not self.list_supported:
            return self._not_found(request)
        self._auth(request)
        model = request.query.get("model_id") or None
        status = request.query.get("status") or None
        limit = int_param(request, "limit", 20, 1, 100, _bad_query)
        offset = int_param(request, "cursor", 0, 0, 10**9, _bad_query)  # the cursor is an offset, opaque to clients
        with self._lock:
            matches = [
                t
                for t in sorted(self._tasks.values(), key=lambda t: -t["seq"])
                if (model is None or t["model"] == model) and (status is None or t["status"] == status)
            ]
            page = [self._request_object(t) for t in matches[offset : offset + limit]]
        next_cursor = str(offset + limit) if offset + limit < len(matches) else None
        return Reply.json(200, {"requests": page, "total": len(matches), "next_cursor": next_cursor})

    def _model(self, request: Request, model: str | None) -> Reply:
        self._auth(request)
        if model is None:
            return Reply.json(200, {"model_ids": list(MODELS), "models": [self._model_object(m) for m in MODELS]})
        if model not in MODELS:
            raise _error(404, f"Model {model} not found")
        return Reply.json(200, self._model_object(model))

    def _model_object(self, model: str) -> dict[str, Any]:
        return {
            "model": model,
            "org_id": self.org_id,
            "brief_description": f"{model} (fake)",
            "model_type": "video",
            "host_type": "external",
            "external_provider": "kling",
            "parameters": [],
        }

    def _request_object(self, task: dict[str, Any]) -> dict[str, Any]:
        outcome: dict[str, Any] | None = None
        error: str | None = None
        if task["status"] == "success":
            urls = [self._result_url(task["request_id"], n) for n in range(task["videos"])]
            if self.old_shape:
                outcome = {"video_url": urls[0] if urls else None, "thumbnail_image_url": None}
            else:
                outcome = {
                    "media_urls": [{"id": str(n), "url": url} for n, url in enumerate(urls)],
                    "thumbnail_image_url": None,
                }
        elif task["status"] == "failed":
            error = task["status_msg"]
            outcome = {"error": {"code": "upstream_rejected", "message": error}}
        return {
            "request_id": task["request_id"],
            "org_id": self.org_id,
            "model": task["model"],
            "status": task["status"],
            "is_public": False,
            "payload": task["payload"],
            "outcome": outcome,
            "created_at": task["created_at"],
            "updated_at": task["updated_at"],
            "queued_at": task["queued_at"],
            "qworker_id": None,
            "error": error,
        }
