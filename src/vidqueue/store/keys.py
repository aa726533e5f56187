"""API keys: made here, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
import time

from vidqueue.store.records import ApiKey

KEY_PREFIX = "vq_"


def hash_key(plaintext: str) -> str:
    """The stored form of a key (keys are 256-bit random, so a plain SHA-256 is not guessable)."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def new_api_key(org_id: str, name: str, now: float | None = None) -> tuple[str, ApiKey]:
    """A fresh key: the plaintext (to show once) and the record to store."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        key_id="key_" + secrets.token_hex(6),
        org_id=org_id,
        name=name,
        key_hash=hash_key(plaintext),
        prefix=plaintext[:10],
        created_at=time.time() if now is None else now,
    )
    return plaintext, record
