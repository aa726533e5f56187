"""Opening what a process needs from the settings: data dir, store, storage, the media-signing secret."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from vidqueue.config import Settings
from vidqueue.errors import ConfigError
from vidqueue.media.storage import LocalStorage
from vidqueue.store import Store, open_store


def prepare_data_dir(settings: Settings) -> Path:
    """Create the data dir and its folders; answer its absolute path."""
    root = settings.data_dir.resolve()
    try:
        for sub in ("", "media", "work"):
            (root / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"The data dir {root} cannot be used: {exc.strerror or exc}.") from exc
    return root


def media_secret(settings: Settings) -> bytes:
    """The key that signs media URLs: from the data dir, created on first use (mode 0600)."""
    path = settings.data_dir.resolve() / "secret.key"
    if not path.exists():
        # Written whole to a private temp file, then linked into place: a process starting at the same moment
        # sees either no secret or the whole one, and the first link wins.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret.")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return path.read_bytes().strip()


def open_storage(settings: Settings) -> LocalStorage:
    """Media storage: a folder in the data dir, served by the API with signed URLs."""
    root = prepare_data_dir(settings)
    return LocalStorage(root / "media", settings.base_url, media_secret(settings))


def store_for(settings: Settings) -> Store:
    """The store the settings name, migrated to the newest schema."""
    if settings.database_url is None:
        prepare_data_dir(settings)
    return open_store(settings.db_url)
