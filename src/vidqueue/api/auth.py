"""Bearer-key authentication and the X-Organization-ID rule."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from vidqueue.api.state import AppState, get_state
from vidqueue.errors import Forbidden, Unauthenticated
from vidqueue.store import ApiKey
from vidqueue.store.keys import hash_key


async def authenticate(
    state: Annotated[AppState, Depends(get_state)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_organization_id: Annotated[
        str | None, Header(description="Optional; must match the API key's organisation.")
    ] = None,
) -> ApiKey:
    """The caller's key; 401 without a valid one, 403 when X-Organization-ID names another organisation.

    Async, and the store is asked only on a cache miss: every call passes here, so it must not cost a thread hop.
    """
    if not authorization:
        raise Unauthenticated("Missing API key: send 'Authorization: Bearer <key>'.")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("The Authorization header must be 'Bearer <key>'.")
    digest = hash_key(token)
    hit, key = state.keys.get(digest)
    if not hit:
        key = await state.call(state.store.find_key, digest)
        state.keys.put(digest, key)
    if key is None:
        raise Unauthenticated("The API key is not valid (unknown or revoked).")
    if x_organization_id is not None and x_organization_id != key.org_id:
        raise Forbidden("The X-Organization-ID header does not match the API key's organisation.")
    return key


Caller = Annotated[ApiKey, Depends(authenticate)]
