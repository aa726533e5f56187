"""Local media storage: atomic writes, safe keys, signed expiring URLs."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from vidqueue.errors import NotFound
from vidqueue.media import storage as storage_module
from vidqueue.media.storage import LocalStorage

KEY = "requests/6fb2b474-fb3a-480f-a142-f200537c6de4/video.mp4"
NOW = 1_753_468_514.0


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "media", "http://media.test:8000/", b"s3cret", clock=lambda: NOW)


def signed_parts(url: str) -> tuple[str, int, str]:
    """(key, expires, sig) from a signed URL."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path.startswith("/media/")
    return unquote(parts.path[len("/media/") :]), int(query["expires"][0]), query["sig"][0]


def test_bytes_put_are_the_bytes_got(store: LocalStorage) -> None:
    store.put_bytes(KEY, b"\x00video\xff", "video/mp4")
    assert store.get_bytes(KEY) == b"\x00video\xff"
    assert store.path(KEY).read_bytes() == b"\x00video\xff"


def test_put_file_copies_and_leaves_the_source(store: LocalStorage, tmp_path: Path) -> None:
    source = tmp_path / "video.mp4"
    source.write_bytes(b"x" * 3_000_000)
    store.put_file(KEY, source, "video/mp4")
    assert source.exists()
    assert store.get_bytes(KEY) == source.read_bytes()


def test_a_missing_key_is_not_found(store: LocalStorage) -> None:
    with pytest.raises(NotFound):
        store.get_bytes("requests/nope/video.mp4")


def test_a_second_put_replaces_the_first(store: LocalStorage) -> None:
    store.put_bytes(KEY, b"old", "video/mp4")
    store.put_bytes(KEY, b"new", "video/mp4")
    assert store.get_bytes(KEY) == b"new"


def test_writes_leave_no_temporary_files(store: LocalStorage) -> None:
    store.put_bytes(KEY, b"data", "video/mp4")
    assert [p.name for p in store.path(KEY).parent.iterdir()] == ["video.mp4"]


def test_a_failed_write_keeps_the_old_content_and_no_temporary_file(
    store: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_bytes(KEY, b"old", "video/mp4")

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(storage_module.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        store.put_bytes(KEY, b"new", "video/mp4")
    assert store.get_bytes(KEY) == b"old"
    assert [p.name for p in store.path(KEY).parent.iterdir()] == ["video.mp4"]


def test_stored_files_are_readable_by_the_server(store: LocalStorage) -> None:
    store.put_bytes(KEY, b"data", "video/mp4")
    assert store.path(KEY).stat().st_mode & 0o044 == 0o044


def test_url_is_absolute_and_signed(store: LocalStorage) -> None:
    url = store.url(KEY, ttl_s=3600)
    assert url.startswith(f"http://media.test:8000/media/{KEY}?expires=")
    key, expires, sig = signed_parts(url)
    assert key == KEY
    assert expires == int(NOW) + 3600
    assert store.verify(key, expires, sig)


def test_verify_refuses_a_tampered_signature(store: LocalStorage) -> None:
    key, expires, sig = signed_parts(store.url(KEY, ttl_s=3600))
    tampered = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert not store.verify(key, expires, tampered)
    assert not store.verify(key, expires, "")
    assert not store.verify(key, expires, "ünïcode")


def test_verify_refuses_a_signature_for_another_key_or_expiry(store: LocalStorage) -> None:
    key, expires, sig = signed_parts(store.url(KEY, ttl_s=3600))
    assert not store.verify(key.replace("video.mp4", "thumbnail.jpg"), expires, sig)
    assert not store.verify(key, expires + 3600, sig)


def test_verify_refuses_an_expired_url(store: LocalStorage) -> None:
    key, expires, sig = signed_parts(store.url(KEY, ttl_s=60))
    assert store.verify(key, expires, sig, now=NOW + 59)
    assert not store.verify(key, expires, sig, now=NOW + 60)


def test_another_secret_does_not_verify(store: LocalStorage, tmp_path: Path) -> None:
    other = LocalStorage(tmp_path / "media", "http://media.test:8000", b"other", clock=lambda: NOW)
    key, expires, sig = signed_parts(store.url(KEY, ttl_s=60))
    assert not other.verify(key, expires, sig)


def test_keys_with_odd_characters_are_quoted_in_urls(store: LocalStorage) -> None:
    key = "requests/abc/my video#1.mp4"
    url = store.url(key, ttl_s=60)
    assert " " not in url and "#" not in url
    parsed_key, expires, sig = signed_parts(url)
    assert parsed_key == key
    assert store.verify(parsed_key, expires, sig)


@pytest.mark.parametrize(
    "key",
    ["../escape.mp4", "requests/../../escape.mp4", "/etc/passwd", "a//b", "a/./b", "", "a\\..\\b", "a/b/", "nul\x00"],
)
def test_keys_that_could_escape_the_root_are_refused(store: LocalStorage, key: str) -> None:
    with pytest.raises(ValueError):
        store.path(key)
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x", "video/mp4")


def test_a_symlink_out_of_the_root_is_refused(store: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside, store.root / "link")
    with pytest.raises(ValueError):
        store.path("link/secret.txt")


def test_delete_prefix_removes_one_request_and_keeps_the_others(store: LocalStorage) -> None:
    store.put_bytes("requests/a/video.mp4", b"1", "video/mp4")
    store.put_bytes("requests/a/thumbnail.jpg", b"2", "image/jpeg")
    store.put_bytes("requests/ab/video.mp4", b"3", "video/mp4")
    store.delete_prefix("requests/a/")
    with pytest.raises(NotFound):
        store.get_bytes("requests/a/video.mp4")
    assert store.get_bytes("requests/ab/video.mp4") == b"3"


def test_delete_prefix_without_a_slash_matches_names_that_start_with_it(store: LocalStorage) -> None:
    store.put_bytes("requests/a/video.mp4", b"1", "video/mp4")
    store.put_bytes("requests/ab/video.mp4", b"2", "video/mp4")
    store.put_bytes("requests/b/video.mp4", b"3", "video/mp4")
    store.delete_prefix("requests/a")
    assert store.get_bytes("requests/b/video.mp4") == b"3"
    for key in ("requests/a/video.mp4", "requests/ab/video.mp4"):
        with pytest.raises(NotFound):
            store.get_bytes(key)


def test_delete_prefix_of_nothing_is_refused_and_of_a_missing_folder_is_a_no_op(store: LocalStorage) -> None:
    with pytest.raises(ValueError):
        store.delete_prefix("")
    store.delete_prefix("requests/never/")
