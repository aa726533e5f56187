"""Bearer-key authentication and the X-Organization-ID rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from vidqueue.api.state import AppState, get_state
from vidqueue.errors import Forbidden, Unauthenticated
from vidqueue.store import ApiKey
from vidqueue.store.keys import hash_key

CALLER = "vidqueue.caller"  # the scope key an authenticated call's Caller is kept under


@dataclass(frozen=True)
class Caller:
    """An authenticated call: the key, and the app's collaborators (one dependency serves both)."""

    key: ApiKey
    state: AppState

    @property
    def org_id(self) -> str:
        """The caller's organisation."""
        return self.key.org_id


async def authenticate(request: Request) -> Caller:
    """The caller's key; 401 without a valid one, 403 when X-Organization-ID names another organisation.

    Every call passes here, so it is one plain dependency that reads the headers itself (no thread hop, no
    sub-dependencies), and the store is asked only on a cache miss. The API's routes call it before FastAPI reads
    the body (``intake.AuthenticatedRoute``); the dependency then finds the caller in the scope. The OpenAPI
    document gets the bearer scheme and the header from ``document_auth``.
    """
    known = request.scope.get(CALLER)
    if isinstance(known, Caller):
        return known
    headers = request.headers
    caller = await caller_for(await get_state(request), headers.get("authorization"), headers.get("x-organization-id"))
    request.scope[CALLER] = caller
    return caller


async def caller_for(state: AppState, authorization: str | None, x_organization_id: str | None) -> Caller:
    """The Caller of these two headers' values; Unauthenticated or Forbidden as ``authenticate`` answers."""
    if not authorization:
        raise Unauthenticated("Missing API key: send 'Authorization: Bearer <key>'.")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("The Authorization header must be 'Bearer <key>'.")
    key = await current_key(state, hash_key(token))
    if key is None:
        raise Unauthenticated("The API key is not valid (unknown or revoked).")
    if x_organization_id is not None and x_organization_id != key.org_id:
        raise Forbidden("The X-Organization-ID header does not match the API key's organisation.")
    return Caller(key, state)


async def current_key(state: AppState, digest: str) -> ApiKey | None:
    """The key with this hash, unless unknown or revoked (read through the cache: revocations apply in seconds)."""
    hit, key = state.keys.get(digest)
    if not hit:
        key = await state.call(state.store.find_key, digest)
        state.keys.put(digest, key)
    return key


Auth = Annotated[Caller, Depends(authenticate)]


def document_auth(spec: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    """Add the bearer scheme and the X-Organization-ID header to every operation under the API's base paths."""
    spec.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `vidqueue keys create`.",
    }
    header = {
        "name": "X-Organization-ID",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Optional; must match the API key's organisation (else 403).",
    }
    for path, operations in spec.get("paths", {}).items():
        if not path.startswith(prefixes):
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}]
            operation.setdefault("parameters", []).append(header)
            operation.setdefault("responses", {}).setdefault(
                "401", {"description": "No or bad API key", "content": {"application/json": {}}}
            )
    return spec
