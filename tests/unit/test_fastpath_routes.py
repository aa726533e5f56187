"""The fast path (api/fastpath.py) stands in for two routes: it is there unless OpenTelemetry is on, and it knows
every parameter those routes take (a new one must be taught to it, or it would be ignored on the fast path)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from vidqueue.api import routes
from vidqueue.api.app import create_app
from vidqueue.api.fastpath import FastPath
from vidqueue.config import load_settings
from vidqueue.media.storage import LocalStorage
from vidqueue.store import MemoryStore


@pytest.mark.parametrize(("env", "installed"), [({}, True), ({"VIDQUEUE_OTEL": "1"}, False)])
def test_the_fast_path_is_in_front_of_the_routes_unless_otel_is_on(
    tmp_path: Path, env: dict[str, str], installed: bool
) -> None:
    settings = load_settings(None, env={"VIDQUEUE_DATA_DIR": str(tmp_path), **env})
    app = create_app(settings, MemoryStore(), LocalStorage(tmp_path / "media", "http://127.0.0.1", b"secret"))
    assert any(m.cls is FastPath for m in app.user_middleware) is installed


def test_the_routes_take_only_what_the_fast_path_reads() -> None:
    # The fast path answers the plain case of these two routes: a new parameter (a header, a query) must be read
    # there too, or such calls passed on to FastAPI, before this list changes.
    assert list(inspect.signature(routes.submit).parameters) == ["body", "caller", "request", "idempotency_key"]
    assert list(inspect.signature(routes.get_request).parameters) == ["request_id", "caller"]
