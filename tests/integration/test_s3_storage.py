"""S3 media storage against a real S3-compatible server (moto's) on a loopback port."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.s3server import S3Server, s3_server_fixture  # noqa: F401
from tests.support import free_port
from vidqueue.errors import ConfigError, NotFound, Unavailable
from vidqueue.media.s3 import MAX_URL_TTL_S, MiB, S3Storage, parse_storage_url

KEY = "requests/6fb2b474-fb3a-480f-a142-f200537c6de4/video.mp4"


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket."""
    return s3_server.make_bucket(f"media-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def storage(s3_server: S3Server, bucket: str) -> S3Storage:
    return S3Storage(bucket, "media/", endpoint_url=s3_server.endpoint_url)


def object_keys(s3_server: S3Server, bucket: str) -> list[str]:
    """Every object key in ``bucket``, as S3 lists them."""
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


def head(s3_server: S3Server, bucket: str, name: str) -> dict[str, Any]:
    return dict(s3_server.client().head_object(Bucket=bucket, Key=name))


def closed_port_endpoint() -> str:
    """The URL of a loopback port nobody listens on (connections are refused at once)."""
    return f"http://127.0.0.1:{free_port()}"


# -- storing and reading -----------------------------------------------------------------------------------


def test_bytes_put_are_the_bytes_got(storage: S3Storage) -> None:
    storage.put_bytes(KEY, b"\x00video\xff", "video/mp4")
    assert storage.get_bytes(KEY) == b"\x00video\xff"


def test_objects_live_under_the_prefix(storage: S3Storage, s3_server: S3Server, bucket: str) -> None:
    storage.put_bytes(KEY, b"data", "video/mp4")
    assert object_keys(s3_server, bucket) == [f"media/{KEY}"]


def test_put_bytes_stores_the_content_type(storage: S3Storage, s3_server: S3Server, bucket: str) -> None:
    storage.put_bytes("requests/a/thumbnail.jpg", b"\xff\xd8jpeg", "image/jpeg")
    assert head(s3_server, bucket, "media/requests/a/thumbnail.jpg")["ContentType"] == "image/jpeg"


def test_put_file_of_a_small_file_is_one_upload_with_its_content_type(
    storage: S3Storage, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "video.mp4"
    source.write_bytes(os.urandom(300_000))
    storage.put_file(KEY, source, "video/mp4")
    assert source.exists()
    assert storage.get_bytes(KEY) == source.read_bytes()
    meta = head(s3_server, bucket, f"media/{KEY}")
    assert meta["ContentType"] == "video/mp4"
    assert "-" not in meta["ETag"]


def test_put_file_over_the_threshold_goes_up_in_parts(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    storage = S3Storage(
        bucket, endpoint_url=s3_server.endpoint_url, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB
    )
    source = tmp_path / "big.mp4"
    source.write_bytes(os.urandom(12 * MiB))
    storage.put_file(KEY, source, "video/mp4")
    meta = head(s3_server, bucket, KEY)
    # A multipart object's ETag is "<md5 of the part md5s>-<number of parts>": 5 + 5 + 2 MiB.
    assert meta["ETag"].strip('"').endswith("-3")
    assert meta["ContentType"] == "video/mp4"
    assert meta["ContentLength"] == 12 * MiB
    assert storage.get_bytes(KEY) == source.read_bytes()


def test_a_second_put_replaces_the_first(storage: S3Storage) -> None:
    storage.put_bytes(KEY, b"old", "video/mp4")
    storage.put_bytes(KEY, b"new", "video/mp4")
    assert storage.get_bytes(KEY) == b"new"


def test_a_missing_key_is_not_found(storage: S3Storage) -> None:
    with pytest.raises(NotFound, match=re.escape("requests/nope/video.mp4")):
        storage.get_bytes("requests/nope/video.mp4")


def test_storages_with_different_prefixes_do_not_see_each_other(s3_server: S3Server, bucket: str) -> None:
    first = S3Storage(bucket, "one/", endpoint_url=s3_server.endpoint_url)
    second = S3Storage(bucket, "two", endpoint_url=s3_server.endpoint_url)
    first.put_bytes(KEY, b"first", "video/mp4")
    second.put_bytes(KEY, b"second", "video/mp4")
    assert first.get_bytes(KEY) == b"first"
    assert second.get_bytes(KEY) == b"second"
    first.delete_prefix("requests/")
    with pytest.raises(NotFound):
        first.get_bytes(KEY)
    assert second.get_bytes(KEY) == b"second"
    assert object_keys(s3_server, bucket) == [f"two/{KEY}"]


def test_a_given_client_is_used(s3_server: S3Server, bucket: str) -> None:
    storage = S3Storage(bucket, client=s3_server.client())
    storage.put_bytes(KEY, b"data", "video/mp4")
    assert storage.endpoint == s3_server.endpoint_url
    assert object_keys(s3_server, bucket) == [KEY]


def test_from_url_reads_bucket_and_prefix(s3_server: S3Server, bucket: str) -> None:
    storage = S3Storage.from_url(f"s3://{bucket}/vq/media", endpoint_url=s3_server.endpoint_url)
    storage.put_bytes(KEY, b"data", "video/mp4")
    assert object_keys(s3_server, bucket) == [f"vq/media/{KEY}"]


# -- presigned URLs ----------------------------------------------------------------------------------------


def test_url_fetches_the_bytes_without_credentials(storage: S3Storage) -> None:
    storage.put_bytes(KEY, b"\x00video\xff", "video/mp4")
    url = storage.url(KEY, ttl_s=600)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["600"]
    assert "X-Amz-Signature" in query
    resp = httpx.get(url, trust_env=False)
    assert resp.status_code == 200
    assert resp.content == b"\x00video\xff"
    assert resp.headers["content-type"] == "video/mp4"
    assert "authorization" not in resp.request.headers


def test_url_of_a_missing_key_is_refused(storage: S3Storage) -> None:
    resp = httpx.get(storage.url("requests/nope/video.mp4", ttl_s=600), trust_env=False)
    assert resp.status_code in (403, 404)


def test_url_lifetime_is_clamped_to_seven_days(storage: S3Storage) -> None:
    query = parse_qs(urlsplit(storage.url(KEY, ttl_s=30 * 24 * 3600)).query)
    assert query["X-Amz-Expires"] == [str(MAX_URL_TTL_S)]


def test_keys_with_odd_characters_are_quoted_in_urls(storage: S3Storage) -> None:
    key = "requests/abc/my video#1.mp4"
    storage.put_bytes(key, b"odd", "video/mp4")
    url = storage.url(key, ttl_s=60)
    assert " " not in url and "#" not in url
    resp = httpx.get(url, trust_env=False)
    assert resp.status_code == 200
    assert resp.content == b"odd"


def test_urls_use_the_public_endpoint_when_one_is_given(s3_server: S3Server, bucket: str) -> None:
    public = s3_server.endpoint_url.replace("127.0.0.1", "localhost")
    storage = S3Storage(bucket, "media/", endpoint_url=s3_server.endpoint_url, public_endpoint_url=public)
    storage.put_bytes(KEY, b"data", "video/mp4")
    url = storage.url(KEY, ttl_s=60)
    assert url.startswith(f"{public}/{bucket}/media/{KEY}?")
    resp = httpx.get(url, trust_env=False)
    assert resp.status_code == 200
    assert resp.content == b"data"


def test_region_comes_from_aws_region(s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    storage = S3Storage(bucket, endpoint_url=s3_server.endpoint_url)
    assert storage.region == "eu-west-3"
    credential = parse_qs(urlsplit(storage.url(KEY, ttl_s=60)).query)["X-Amz-Credential"][0]
    assert "/eu-west-3/s3/aws4_request" in credential


# -- deleting ----------------------------------------------------------------------------------------------


def test_delete_prefix_removes_one_request_and_keeps_the_others(
    storage: S3Storage, s3_server: S3Server, bucket: str
) -> None:
    storage.put_bytes("requests/a/video.mp4", b"1", "video/mp4")
    storage.put_bytes("requests/a/thumbnail.jpg", b"2", "image/jpeg")
    storage.put_bytes("requests/ab/video.mp4", b"3", "video/mp4")
    storage.delete_prefix("requests/a/")
    with pytest.raises(NotFound):
        storage.get_bytes("requests/a/video.mp4")
    assert object_keys(s3_server, bucket) == ["media/requests/ab/video.mp4"]


def test_delete_prefix_without_a_slash_matches_names_that_start_with_it(storage: S3Storage) -> None:
    storage.put_bytes("requests/a/video.mp4", b"1", "video/mp4")
    storage.put_bytes("requests/ab/video.mp4", b"2", "video/mp4")
    storage.put_bytes("requests/b/video.mp4", b"3", "video/mp4")
    storage.delete_prefix("requests/a")
    assert storage.get_bytes("requests/b/video.mp4") == b"3"
    for key in ("requests/a/video.mp4", "requests/ab/video.mp4"):
        with pytest.raises(NotFound):
            storage.get_bytes(key)


def test_delete_prefix_deletes_in_batches(storage: S3Storage, s3_server: S3Server, bucket: str) -> None:
    # S3 caps one DeleteObjects at 1000 keys; a batch size of 2 walks the same path with 7 keys, quickly.
    storage.delete_batch_size = 2
    for index in range(7):
        storage.put_bytes(f"requests/a/part-{index}.bin", b"x", "application/octet-stream")
    storage.put_bytes("requests/b/video.mp4", b"kept", "video/mp4")
    calls: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        calls.append(len(params["Delete"]["Objects"]))

    storage.client.meta.events.register("provide-client-params.s3.DeleteObjects", count)
    storage.delete_prefix("requests/a/")
    assert calls == [2, 2, 2, 1]
    assert object_keys(s3_server, bucket) == ["media/requests/b/video.mp4"]


def test_delete_prefix_of_nothing_is_refused_and_of_a_missing_folder_is_a_no_op(
    storage: S3Storage, s3_server: S3Server, bucket: str
) -> None:
    storage.put_bytes(KEY, b"data", "video/mp4")
    for prefix in ("", "/", "//"):
        with pytest.raises(ValueError, match="empty"):
            storage.delete_prefix(prefix)
    storage.delete_prefix("requests/never/")
    assert object_keys(s3_server, bucket) == [f"media/{KEY}"]


@pytest.mark.parametrize("prefix", ["../", "/requests/", "requests//", "a/../b/"])
def test_delete_prefix_refuses_unsafe_prefixes(storage: S3Storage, prefix: str) -> None:
    with pytest.raises(ValueError):
        storage.delete_prefix(prefix)


# -- keys and settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["../escape.mp4", "requests/../../escape.mp4", "/abs/video.mp4", "a//b", "a/./b", "", "a\\..\\b", "a/b/", "\x00"],
)
def test_unsafe_keys_are_refused(storage: S3Storage, key: str, tmp_path: Path) -> None:
    source = tmp_path / "video.mp4"
    source.write_bytes(b"x")
    with pytest.raises(ValueError):
        storage.put_bytes(key, b"x", "video/mp4")
    with pytest.raises(ValueError):
        storage.put_file(key, source, "video/mp4")
    with pytest.raises(ValueError):
        storage.get_bytes(key)
    with pytest.raises(ValueError):
        storage.url(key, ttl_s=60)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s3://media", ("media", "")),
        ("s3://media/", ("media", "")),
        ("s3://my.media-bucket/videos", ("my.media-bucket", "videos/")),
        ("s3://m3d/vq/videos/", ("m3d", "vq/videos/")),
        ("s3://media//vq/", ("media", "vq/")),
    ],
)
def test_parse_storage_url_accepts_buckets_and_prefixes(value: str, expected: tuple[str, str]) -> None:
    assert parse_storage_url(value) == expected


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("media/videos", "s3://"),
        ("https://media/videos", "s3://"),
        ("file:///tmp/media", "s3://"),
        ("s3://", "3-63 characters"),
        ("s3://ab", "3-63 characters"),
        ("s3://" + "a" * 64, "3-63 characters"),
        ("s3://Media", "lowercase"),
        ("s3://me_dia", "lowercase"),
        ("s3://-media", "starting and ending"),
        ("s3://me..dia", "bucket"),
        ("s3://user:pw@media/x", "credentials"),
        ("https://key:hunter2@media/x", "credentials"),
        ("s3://media:9000/x", "bucket"),
        ("s3://media/a/../b", "prefix"),
        ("s3://media/x?versionId=1", "query"),
    ],
)
def test_parse_storage_url_refuses_anything_else_naming_the_rule(value: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule) as caught:
        parse_storage_url(value)
    assert "pw@" not in str(caught.value) and "hunter2" not in str(caught.value)


def test_the_constructor_checks_the_bucket_name() -> None:
    with pytest.raises(ValueError, match="3-63 characters"):
        S3Storage("Not_A_Bucket", endpoint_url="http://127.0.0.1:9")


# -- failures ----------------------------------------------------------------------------------------------


def test_check_passes_for_a_reachable_bucket(storage: S3Storage) -> None:
    storage.check()


def test_check_of_a_missing_bucket_names_it_and_the_endpoint(s3_server: S3Server) -> None:
    storage = S3Storage("no-such-bucket-here", endpoint_url=s3_server.endpoint_url)
    with pytest.raises(ConfigError) as caught:
        storage.check()
    message = str(caught.value)
    assert "no-such-bucket-here" in message
    assert s3_server.endpoint_url in message
    assert "does not exist" in message


def test_writing_to_a_missing_bucket_is_a_config_error(s3_server: S3Server) -> None:
    storage = S3Storage("no-such-bucket-here", endpoint_url=s3_server.endpoint_url)
    with pytest.raises(ConfigError, match=r"no-such-bucket-here.*NoSuchBucket"):
        storage.put_bytes(KEY, b"x", "video/mp4")
    with pytest.raises(ConfigError, match="NoSuchBucket"):
        storage.get_bytes(KEY)


def test_an_unreachable_endpoint_is_unavailable_quickly(tmp_path: Path, s3_server: S3Server) -> None:
    # s3_server is asked for its credentials in the environment: without them the error would be ConfigError.
    endpoint = closed_port_endpoint()
    storage = S3Storage("media", endpoint_url=endpoint)
    source = tmp_path / "video.mp4"
    source.write_bytes(b"x")
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        storage.check()
    assert time.monotonic() - started < 5
    assert "'media'" in str(caught.value)
    assert endpoint in str(caught.value)
    with pytest.raises(Unavailable, match="cannot reach"):
        storage.put_bytes(KEY, b"x", "video/mp4")
    with pytest.raises(Unavailable, match="cannot reach"):
        storage.put_file(KEY, source, "video/mp4")
    with pytest.raises(Unavailable, match="cannot reach"):
        storage.get_bytes(KEY)
    with pytest.raises(Unavailable, match="cannot reach"):
        storage.delete_prefix("requests/")


def test_missing_credentials_are_a_config_error(
    s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    storage = S3Storage(bucket, endpoint_url=s3_server.endpoint_url)
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID") as caught:
        storage.check()
    assert bucket in str(caught.value)


def test_error_messages_never_carry_the_credentials(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSHOULDNOTLEAK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-should-not-leak")
    for endpoint in (s3_server.endpoint_url, closed_port_endpoint()):
        storage = S3Storage("no-such-bucket-here", endpoint_url=endpoint)
        with pytest.raises((ConfigError, Unavailable)) as checked:
            storage.check()
        with pytest.raises((ConfigError, Unavailable)) as written:
            storage.put_bytes(KEY, b"x", "video/mp4")
        for message in (str(checked.value), str(written.value)):
            assert "no-such-bucket-here" in message
            assert "SHOULDNOTLEAK" not in message
            assert "should-not-leak" not in message
