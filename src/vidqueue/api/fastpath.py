"""The API's two hottest calls, a submit and a read of one request, answered without FastAPI's routing machinery.

On one core (bench/api.py) uvicorn itself costs about 30 µs a call, and FastAPI's routing, parameter solving and the
middleware it adds about 90 µs more, as much as the submit's SQLite insert. So a call in the plain case is answered
here, in front of FastAPI:

- ``POST {base}/requests`` with a valid key, ``Content-Type: application/json``, a declared length of at most
  ``INLINE_MAX_BYTES``, no Idempotency-Key, and a body that parses and validates as a ``SubmitBody``;
- ``GET {base}/requests/{request_id}`` with a valid key.

Such a call runs the same functions as its route (``routes.submit_answer``, ``routes.request_answer``), and an error
they raise is answered by the app's own exception handlers, so the answer is the route's, byte for byte. Any other
call, and one that is not in the plain case (no key or a bad one, a body that does not parse or validate, a chunked
body), goes on to FastAPI untouched, its body replayed if it was read: FastAPI's answer, and its wording of the
error, is the one the client gets. The OpenAPI document still describes the routes, which stay declared.
"""

from __future__ import annotations

import inspect

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute, APIRouter
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidqueue.api import routes
from vidqueue.api.auth import CALLER, Caller, caller_for
from vidqueue.api.intake import INLINE_MAX_BYTES, loads
from vidqueue.api.routes import request_answer, submit_answer
from vidqueue.api.schemas import SubmitBody
from vidqueue.api.state import AppState
from vidqueue.errors import ServiceError


class FastPath:
    """ASGI middleware: serves the plain submit and read of the request-queue API, passes everything else on."""

    def __init__(self, app: ASGIApp, api: FastAPI, state: AppState) -> None:
        self.app = app
        self.api = api
        self.state = state
        # The routes are kept so a call is labelled with its route (HttpMetrics reads scope["route"]) as if FastAPI
        # had routed it: FastAPI puts the included router's own route there, whose path has no prefix.
        submit = _route(routes.router, "/requests", "POST")
        read = _route(routes.router, "/requests/{request_id}", "GET")
        self._submits = {f"{base}/requests": submit for base in routes.BASE_PATHS}
        self._reads = {f"{base}/requests": read for base in routes.BASE_PATHS}  # the path up to the request id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a plain submit or read here; pass any other call on."""
        if scope["type"] == "http" and not scope.get("root_path"):
            method, path = scope["method"], scope["path"]
            if method == "POST" and path in self._submits:
                await self._submit(self._submits[path], scope, receive, send)
                return
            if method == "GET":
                head, _, request_id = path.rpartition("/")
                route = self._reads.get(head)
                if route is not None and request_id:
                    await self._read(route, request_id, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _caller(self, headers: dict[bytes, bytes]) -> Caller | None:
        """The call's Caller, or None when its key does not pass (FastAPI then gives the answer)."""
        authorization = headers.get(b"authorization")
        organization = headers.get(b"x-organization-id")
        try:
            return await caller_for(
                self.state,
                None if authorization is None else authorization.decode("latin-1"),
                None if organization is None else organization.decode("latin-1"),
            )
        except ServiceError:
            return None

    async def _submit(self, route: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        length = _length(headers.get(b"content-length"))
        content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        plain = (
            length is not None
            and length <= INLINE_MAX_BYTES
            and content_type == b"application/json"
            and b"transfer-encoding" not in headers
            and b"idempotency-key" not in headers
        )
        caller = await self._caller(headers) if plain else None
        if caller is None:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before its body came: nobody to answer
        try:
            parsed = SubmitBody.model_validate(loads(body))
        except Exception:  # anything the reader or the model refuses: FastAPI reads it again and words the error
            await self.app(scope, _replay(body, receive), send)
            return
        scope[CALLER], scope["route"] = caller, route
        try:
            response: Response = await submit_answer(caller, parsed, None, len(body))
        except Exception as exc:
            response = await self._error(scope, receive, exc)
        await response(scope, receive, send)

    async def _read(self, route: APIRoute, request_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        caller = await self._caller(_headers(scope))
        if caller is None:
            await self.app(scope, receive, send)
            return
        scope[CALLER], scope["route"], scope["path_params"] = caller, route, {"request_id": request_id}
        try:
            response: Response = await request_answer(caller, request_id)
        except Exception as exc:
            response = await self._error(scope, receive, exc)
        await response(scope, receive, send)

    async def _error(self, scope: Scope, receive: Receive, exc: Exception) -> Response:
        """The app's answer to ``exc``, from the exception handler FastAPI would have used."""
        handlers = self.api.exception_handlers
        for cls in type(exc).__mro__:
            handler = handlers.get(cls)
            if handler is not None:
                response = handler(Request(scope, receive), exc)
                if inspect.isawaitable(response):
                    response = await response
                assert isinstance(response, Response)
                return response
        raise exc


def _route(router: APIRouter, path: str, method: str) -> APIRoute:
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no {method} {path} route")  # the fast path and the routes went out of step


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by lower-case name; the first of repeated ones, as Starlette's ``Headers.get``."""
    out: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        out.setdefault(name, value)
    return out


def _length(value: bytes | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(value)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None when the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then whatever the connection says next (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


__all__ = ["FastPath"]
