"""S3-compatible media storage: objects in one bucket under a key prefix, fetched through presigned URLs.

``S3Storage`` implements the ``Storage`` protocol of ``vidqueue.media.storage`` against AWS S3 or any
S3-compatible server (MinIO, Ceph, Cloudflare R2). Credentials come only from boto3's standard chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, profiles, instance roles), never from
vidqueue's settings. Botocore errors are translated where they enter:

    NotFound           get_bytes of a key that holds nothing
    ConfigError        the bucket is missing, the credentials are missing or refused, the region is wrong
    StorageUnavailable S3 cannot be reached, times out, throttles or answers 5xx
    ServiceError       any other S3 error
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped, unused-ignore]
from boto3.exceptions import S3UploadFailedError  # type: ignore[import-untyped, unused-ignore]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped, unused-ignore]
from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]
from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError  # type: ignore[import-untyped, unused-ignore]

from vidqueue.errors import ConfigError, NotFound, ServiceError, StorageUnavailable
from vidqueue.media.storage import check_key

MiB = 1024 * 1024
MAX_URL_TTL_S = 7 * 24 * 3600  # SigV4 presigned URLs cannot live longer than a week
DEFAULT_REGION = "us-east-1"

_BUCKET_RULE = (
    "an S3 bucket name is 3-63 characters of lowercase letters, digits, dots and hyphens, "
    "starting and ending with a letter or digit"
)
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

# Codes that mean the settings or the credentials are wrong, not that S3 is having a bad moment.
_CONFIG_HINTS = {
    "NoSuchBucket": "the bucket does not exist",
    "AccessDenied": "the credentials lack access to the bucket",
    "AllAccessDisabled": "all access to the bucket is disabled",
    "InvalidAccessKeyId": "the access key is not known to the server",
    "SignatureDoesNotMatch": "the secret key was refused",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token was refused",
    "AuthorizationHeaderMalformed": "the request was signed for another region",
    "PermanentRedirect": "the bucket lives in another region or at another endpoint",
    "InvalidBucketName": "the bucket name is invalid",
}
# head_bucket answers without a body, so only the HTTP status is known.
_BUCKET_STATUS_HINTS = {
    "301": "the bucket lives in another region or at another endpoint",
    "400": "the request was refused (a wrong region or endpoint?)",
    "403": "the credentials were refused or lack access to the bucket",
    "404": "the bucket does not exist",
}
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable", "InternalError"}
)


def parse_storage_url(value: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix/`` into (bucket, prefix); the prefix is "" or ends in "/"; else ValueError."""
    parts = urlsplit(value.strip())
    if "@" in parts.netloc:
        # Never echo what could be a password; S3 credentials come from boto3's chain, not from this URL.
        raise ValueError("a storage URL must not carry credentials (s3://bucket/prefix/; credentials come from AWS_*)")
    if parts.scheme != "s3":
        raise ValueError(f"storage URL {value!r} must start with s3:// (s3://bucket/prefix/)")
    if parts.query or parts.fragment:
        raise ValueError(f"storage URL {value!r} must not carry a query or a fragment (s3://bucket/prefix/)")
    return check_bucket(parts.netloc), normalize_prefix(parts.path)


def check_bucket(name: str) -> str:
    """Return ``name`` if it is a valid S3 bucket name; else raise ValueError naming the rule."""
    if not _BUCKET_RE.fullmatch(name) or ".." in name:
        raise ValueError(f"invalid S3 bucket {name!r}: {_BUCKET_RULE}")
    return name


def normalize_prefix(prefix: str) -> str:
    """``prefix`` without a leading slash and ending in "/" ("" stays ""); ValueError for unsafe prefixes."""
    stripped = prefix.strip("/")
    if not stripped:
        return ""
    try:
        check_key(stripped)
    except ValueError:
        raise ValueError(
            f"invalid S3 key prefix {prefix!r}: use slash-separated names without '.', '..', '//' or backslashes"
        ) from None
    return stripped + "/"


def build_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    config: Config | None = None,
) -> Any:
    """A boto3 S3 client: credentials from boto3's chain, short timeouts, path style and SigV4 for endpoints."""
    session = boto3.session.Session()
    resolved_region = region or os.environ.get("AWS_REGION") or session.region_name or DEFAULT_REGION
    options: dict[str, Any] = {
        "signature_version": "s3v4",
        "connect_timeout": 5,
        "read_timeout": 60,
        "retries": {"max_attempts": 3, "mode": "standard"},
    }
    if endpoint_url:
        # S3-compatible servers seldom have wildcard DNS for virtual-host buckets, and several (older MinIO,
        # Ceph, R2) reject the CRC checksums boto3 sends by default since 1.36 on every upload.
        options["s3"] = {"addressing_style": "path"}
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    merged = Config(**options)
    if config is not None:
        merged = merged.merge(config)
    return session.client("s3", endpoint_url=endpoint_url or None, region_name=resolved_region, config=merged)


class S3Storage:
    """Media in one S3 bucket under a key prefix, fetched by clients through presigned GET URLs."""

    delete_batch_size = 1000  # the most keys one DeleteObjects call takes

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 16 * MiB,
        public_endpoint_url: str | None = None,
        config: Config | None = None,
    ) -> None:
        self.bucket = check_bucket(bucket)
        self.prefix = normalize_prefix(prefix)
        self._client = client if client is not None else build_client(endpoint_url, region, config)
        self.region: str = self._client.meta.region_name
        self.endpoint: str = self._client.meta.endpoint_url
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize
        )
        # Clients may reach S3 at another address than the workers do; a SigV4 signature covers the host, so
        # URLs for them are signed by a client built for their address.
        self._presigner = (
            build_client(public_endpoint_url, self.region, config) if public_endpoint_url else self._client
        )

    @property
    def client(self) -> Any:
        """The boto3 S3 client this storage talks through."""
        return self._client

    @classmethod
    def from_url(cls, value: str, **kwargs: Any) -> S3Storage:
        """A storage for ``s3://bucket/prefix/``; keyword arguments go to the constructor."""
        bucket, prefix = parse_storage_url(value)
        return cls(bucket, prefix, **kwargs)

    def object_key(self, key: str) -> str:
        """The S3 object key for the storage key ``key``; raises ValueError for unsafe keys."""
        return self.prefix + check_key(key)

    def check(self) -> None:
        """Make one cheap call (HeadBucket); raise a clear error if the bucket is missing, unreachable or refused."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "check", None) from exc

    def probe(self) -> None:
        """Write one small object (this process's own, overwritten each time); raise when S3 cannot take it."""
        self.put_bytes(f".probe/{socket.gethostname()}-{os.getpid()}", b"ok", "text/plain")

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Upload ``path`` under ``key`` (as a multipart upload when it is over the threshold)."""
        name = self.object_key(key)
        try:
            self._client.upload_file(
                os.fspath(path),
                self.bucket,
                name,
                ExtraArgs={"ContentType": content_type},
                Config=self._transfer,
            )
        except S3UploadFailedError as exc:
            # boto3 replaces the ClientError with a message-only error; the original is its context.
            cause = exc.__context__ if isinstance(exc.__context__, ClientError) else exc
            raise self._translate(cause, "upload", key) from exc
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "upload", key) from exc

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key``."""
        name = self.object_key(key)
        try:
            self._client.put_object(Bucket=self.bucket, Key=name, Body=data, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "upload", key) from exc

    def get_bytes(self, key: str) -> bytes:
        """The bytes under ``key``; raises NotFound when missing."""
        name = self.object_key(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=name)
            with response["Body"] as body:
                return cast(bytes, body.read())
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "download", key) from exc

    def url(self, key: str, ttl_s: int) -> str:
        """A presigned GET URL for ``key`` that expires after ``ttl_s`` seconds (at most 7 days)."""
        name = self.object_key(key)
        expires_in = max(1, min(int(ttl_s), MAX_URL_TTL_S))
        try:
            url = self._presigner.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=expires_in
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "presign", key) from exc
        return cast(str, url)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every stored key that starts with ``prefix`` (``requests/<id>/`` deletes that folder)."""
        if not prefix.strip("/"):
            raise ValueError("refusing to delete everything: the prefix is empty")
        check_key(prefix.removesuffix("/"))
        full = self.prefix + prefix
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full, PaginationConfig={"PageSize": self.delete_batch_size}
            )
            names = (item["Key"] for page in pages for item in page.get("Contents", ()))
            for batch in _batches(names, self.delete_batch_size):
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": name} for name in batch], "Quiet": True}
                )
                errors = response.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise self._failure(
                        str(first.get("Code") or "Unknown"),
                        None,
                        "delete",
                        f"s3://{self.bucket}/{first.get('Key')} ({len(errors)} of {len(batch)} keys failed)",
                    )
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "delete", prefix) from exc

    def _translate(self, exc: BaseException, action: str, key: str | None) -> ServiceError:
        """A vidqueue error for a botocore error, naming the bucket, key, endpoint and S3 code (never secrets)."""
        where = f"s3://{self.bucket}/{self.prefix}{key}" if key is not None else f"bucket {self.bucket!r}"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error") or {}
            code = str(error.get("Code") or "Unknown")
            status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if key is not None and action == "download" and code in _MISSING_KEY_CODES:
                return NotFound(f"No media stored under {key!r}.")
            return self._failure(code, status, action, where)
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return ConfigError(
                f"S3 {action} of {where} at {self.endpoint} failed: no usable S3 credentials "
                "(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use an instance role)"
            )
        if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError)):
            return StorageUnavailable(
                f"S3 {action} of {where} failed: cannot reach {self.endpoint} ({type(exc).__name__})"
            )
        return ServiceError(f"S3 {action} of {where} at {self.endpoint} failed: {type(exc).__name__}")

    def _failure(self, code: str, status: int | None, action: str, where: str) -> ServiceError:
        hint = _CONFIG_HINTS.get(code) or _BUCKET_STATUS_HINTS.get(code)
        message = f"S3 {action} of {where} at {self.endpoint} failed: {code}"
        if status is not None and str(status) != code:
            message += f" (HTTP {status})"
        if hint:
            return ConfigError(f"{message}: {hint}")
        if code in _TRANSIENT_CODES or (status is not None and status >= 500):
            return StorageUnavailable(message)
        return ServiceError(message)


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
