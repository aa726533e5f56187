"""Opening what a process needs from the settings: data dir, store, storage, the media-signing secret."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from vidqueue.catalog import DEFAULT_MODELS, FAMILIES, Catalog, ModelSpec, local_model, local_spec
from vidqueue.config import Settings
from vidqueue.errors import ConfigError
from vidqueue.media.storage import LocalStorage, Storage
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


def open_storage(settings: Settings) -> Storage:
    """Media storage: an S3 bucket for ``s3://`` (checked now), else a folder the API serves with signed URLs."""
    where = settings.storage
    if where is not None and _is_s3(where):
        from vidqueue.media.s3 import S3Storage

        try:
            s3 = S3Storage.from_url(
                where, endpoint_url=settings.s3_endpoint_url, public_endpoint_url=settings.s3_public_endpoint_url
            )
        except ValueError as exc:
            raise ConfigError(f"storage {where!r}: {exc}") from exc
        s3.check()
        return s3
    prepare_data_dir(settings)
    return LocalStorage(_media_folder(settings), settings.base_url, media_secret(settings))


def _is_s3(where: str) -> bool:
    return where.startswith("s3:")


def _media_folder(settings: Settings) -> Path:
    return Path(settings.storage).expanduser().resolve() if settings.storage else settings.data_dir.resolve() / "media"


def describe_storage(settings: Settings) -> str:
    """Where media live, for logs."""
    if settings.storage and _is_s3(settings.storage):
        return f"{settings.storage} at {settings.s3_endpoint_url or 'AWS'}"
    return str(_media_folder(settings))


def describe_store(settings: Settings) -> str:
    """The store's URL without its password, for logs."""
    import sqlalchemy as sa

    return sa.make_url(settings.db_url).render_as_string(hide_password=True)


def store_for(settings: Settings) -> Store:
    """The store the settings name, migrated to the newest schema."""
    if settings.database_url is None:
        prepare_data_dir(settings)
    return open_store(settings.db_url)


def catalog_for(settings: Settings) -> Catalog:
    """The built-in models, with local (diffusers) models declared or re-routed in ``[models."ID"]`` tables."""
    models: dict[str, ModelSpec] = {m.id: m for m in DEFAULT_MODELS}
    for model_id, route in settings.models.items():
        where = f'[models."{model_id}"]'
        known = models.get(model_id)
        local = known.local if known is not None else None
        declares = route.family is not None or route.weights is not None
        if not declares and route.engine != "diffusers":
            if known is None:
                raise ConfigError(
                    f"{where} names a model vidqueue does not know; give it a family and weights to run it locally."
                )
            continue  # a plain re-route: build_engines checks the engine can serve the model
        family = route.family or (local.family if local else None)
        if family is None:
            raise ConfigError(f"{where} needs a family ({', '.join(FAMILIES)}).")
        weights = route.weights or (local.weights if local and local.family == family else None)
        if weights is None:
            raise ConfigError(f"{where} needs weights: a hub id or a local folder.")
        base = local if local is not None and local.family == family else None
        try:
            spec_local = local_model(
                model_id,
                family,
                weights,
                steps=route.steps or (base.steps if base else None),
                fps=route.fps or (base.fps if base else None),
                sizes={**(base.sizes if base else {}), **{str(k): v for k, v in (route.sizes or {}).items()}},
                max_steps=route.max_steps,
                guidance=route.guidance,
            )
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        models[model_id] = local_spec(model_id, spec_local)
    return Catalog(models.values())
