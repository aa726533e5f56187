"""Taking a call in: the caller is authenticated before its body is read, and a large body is handled off the loop.

FastAPI reads and parses a route's body before it solves the route's dependencies, so without this a caller with no
key could have the server parse 16 MiB of JSON on the event loop before being told 401. Every route of the API
router is an ``AuthenticatedRoute``: it authenticates first (the ``Auth`` dependency then finds the caller in the
scope) and hands FastAPI a request whose ``json()`` parses a body over ``INLINE_MAX_BYTES`` in a worker thread. The
routes run their own work on such a body (payload checks, the idempotency fingerprint) through ``off_loop``.

A thread keeps Python-level work from holding the loop; one long call into C (parsing a body of a million keys)
still holds the GIL while it runs, which is why the JSON reader is orjson wherever it gives the standard answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, ParamSpec, TypeVar

import orjson
from anyio import to_thread
from fastapi import Request, Response
from fastapi.routing import APIRoute

from vidqueue.api.auth import authenticate
from vidqueue.api.state import AppState, get_state

P = ParamSpec("P")
T = TypeVar("T")

# Bodies up to this size are parsed and checked on the event loop (a few ms at most): a thread hop costs more than
# the work. Larger ones (an input image, or something hostile) go to a worker thread.
INLINE_MAX_BYTES = 256 * 1024

# orjson reads an integer past 64 bits as a float; the standard reader keeps it exact (and a rule then refuses it).
# Such an integer has 19 digits or more in a row; they are found by mapping every digit to "0" and every other byte
# to " " and searching for 19 zeros (a tenth of the time a regular expression takes on 12 MB).
_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_NUMBER = b"0" * 19


def loads(raw: bytes) -> Any:
    """The JSON value of ``raw`` exactly as ``json.loads`` gives it (or its exception), read by orjson where it can.

    orjson is about twice as fast on bodies of many small values, and gives the same value for any JSON it accepts
    but long integers; what it refuses (NaN, a lone surrogate, a BOM, UTF-16, a syntax error) goes to the standard
    reader, which accepts it or raises its usual error.
    """
    if _LONG_NUMBER not in raw.translate(_DIGITS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


async def off_loop(state: AppState, size: int, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` for a body of ``size`` bytes: inline up to INLINE_MAX_BYTES, else in a worker thread
    (one large body at a time)."""
    if size <= INLINE_MAX_BYTES:
        return fn(*args, **kwargs)
    return await to_thread.run_sync(partial(fn, *args, **kwargs), limiter=state.large_bodies)


class ApiRequest(Request):
    """A request whose JSON body is parsed by ``loads``, in a worker thread when it is large."""

    async def json(self) -> Any:
        """The parsed body (parsed once)."""
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await off_loop(await get_state(self), len(body), loads, body)
        return self._json


class AuthenticatedRoute(APIRoute):
    """A route of the API: 401 or 403 before a byte of the body is read, then FastAPI's handling with an ApiRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, behind authentication."""
        handler = super().get_route_handler()

        async def authenticated(request: Request) -> Response:
            await authenticate(request)
            return await handler(ApiRequest(request.scope, request.receive))

        return authenticated
