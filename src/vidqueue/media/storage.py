"""Media storage: where finished videos and thumbnails live, and the URLs clients fetch them from.

Keys are relative, slash-separated paths such as ``requests/<request_id>/video.mp4``. ``LocalStorage`` keeps
them under one folder and hands out URLs signed with HMAC-SHA256 that expire; the API serves
``GET /media/{key}`` after ``LocalStorage.verify`` says yes. An S3-compatible store implements the same
protocol with presigned URLs.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import hmac
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Protocol
from urllib.parse import quote

from vidqueue.errors import NotFound, StorageUnavailable


class Storage(Protocol):
    """Where media live; every method takes a relative, slash-separated key."""

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store a copy of the file at ``path`` under ``key``."""
        ...

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key``."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The bytes stored under ``key``; raises NotFound when there are none."""
        ...

    def url(self, key: str, ttl_s: int) -> str:
        """An absolute URL that fetches ``key`` without authentication and expires after ``ttl_s`` seconds."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Delete every key that starts with ``prefix``."""
        ...

    def probe(self) -> None:
        """Write (and remove) a small object; raise StorageUnavailable when storage cannot be written."""
        ...


def request_prefix(request_id: str) -> str:
    """The folder of a request's files: its input image, videos and thumbnail."""
    return f"requests/{request_id}/"


def media_key(request_id: str, name: str) -> str:
    """The storage key of one of a request's files."""
    return request_prefix(request_id) + name


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key (no ``..``, ``/`` first or backslash); else raise ValueError."""
    if not key or "\x00" in key or "\\" in key or key.startswith("/"):
        raise ValueError(f"invalid storage key {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class LocalStorage:
    """Media in a local folder, served by the API under signed, expiring URLs."""

    def __init__(
        self,
        root: Path,
        public_url: str,
        secret: bytes,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("LocalStorage needs a non-empty signing secret")
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.public_url = public_url.rstrip("/")
        self._secret = secret
        self._clock = clock

    def path(self, key: str) -> Path:
        """The file for ``key``; raises ValueError for keys that would escape the root."""
        check_key(key)
        path = (self.root / PurePosixPath(key)).resolve()
        # resolve() follows symlinks too, so a link planted inside the root cannot point outside it.
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"invalid storage key {key!r}")
        return path

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store a copy of ``path`` under ``key`` atomically (the content type follows from the extension)."""
        with path.open("rb") as source:
            self._write(key, lambda out: shutil.copyfileobj(source, out, 1024 * 1024))

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key`` atomically."""
        self._write(key, lambda out: out.write(data))

    def get_bytes(self, key: str) -> bytes:
        """The bytes under ``key``; raises NotFound when missing."""
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(f"No media stored under {key!r}.") from exc

    def url(self, key: str, ttl_s: int) -> str:
        """A signed URL for ``key`` that expires ``ttl_s`` seconds from now."""
        check_key(key)
        expires = int(self._clock()) + int(ttl_s)
        sig = self._sign(key, expires)
        return f"{self.public_url}/media/{quote(key, safe='/')}?expires={expires}&sig={sig}"

    def verify(self, key: str, expires: int, sig: str, now: float | None = None) -> bool:
        """Whether ``sig`` is this store's signature of ``key`` and ``expires`` has not passed."""
        expected = self._sign(key, expires)
        # compare_digest wants ASCII str or bytes; a non-ASCII sig is simply wrong.
        valid = hmac.compare_digest(expected.encode("ascii"), sig.encode("utf-8", "replace"))
        current = self._clock() if now is None else now
        return valid and current < expires

    def delete_prefix(self, prefix: str) -> None:
        """Delete every stored key that starts with ``prefix`` (``requests/<id>/`` deletes that folder)."""
        if not prefix.strip("/"):
            raise ValueError("refusing to delete everything: the prefix is empty")
        head, _, tail = prefix.rpartition("/")
        base = self.path(head) if head else self.root
        if not base.is_dir():
            return
        if not tail:
            shutil.rmtree(base, ignore_errors=True)
            return
        for child in base.iterdir():
            if child.name.startswith(tail):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)

    def probe(self) -> None:
        """Write and remove a small file in the media folder; raise StorageUnavailable when that fails."""
        self._write(f".probe/{os.getpid()}", lambda out: out.write(b"ok"), durable=False)
        with contextlib.suppress(OSError):
            self.path(f".probe/{os.getpid()}").unlink()

    def _sign(self, key: str, expires: int) -> str:
        message = f"{key}\n{int(expires)}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def _write(self, key: str, fill: Callable[[IO[bytes]], object], *, durable: bool = True) -> None:
        target = self.path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Write beside the target and rename over it, so a reader sees the old file or the whole new one.
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        except OSError as exc:
            raise unwritable(exc, key) from exc
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; media are served to anyone holding a URL
            os.replace(tmp, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
                raise unwritable(exc, key) from exc
            raise


# What a write into the media folder meets when the folder, not the data, is at fault: out of space or quota,
# read-only, no permission, an I/O error. Each is the operator's to fix and may be fixed while a request waits.
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_STORAGE_ERRNOS = _FULL_ERRNOS | {errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOENT}


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the disk or a quota is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageUnavailable) and current.full:
            return True
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if "No space left on device" in str(current):  # an encoder or library that kept only the message
            return True
        current = current.__cause__ or current.__context__
    return False


def unwritable(exc: OSError, key: str) -> StorageUnavailable:
    """The StorageUnavailable for an OS error writing ``key`` (its path is for the log, not for clients)."""
    full = exc.errno in _FULL_ERRNOS
    reason = "the disk is full" if full else (exc.strerror or type(exc).__name__).lower()
    return StorageUnavailable(f"Media storage cannot be written: {reason}.", full=full)
