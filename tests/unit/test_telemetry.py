"""FastAPI's native OpenTelemetry is off unless VIDQUEUE_OTEL asks for it: no request pays to look for a provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidqueue.api.app import create_app
from vidqueue.config import load_settings
from vidqueue.media.storage import LocalStorage
from vidqueue.store import MemoryStore


@pytest.mark.parametrize(("env", "on"), [({}, False), ({"VIDQUEUE_OTEL": "1"}, True)])
def test_fastapi_telemetry_follows_the_otel_setting(tmp_path: Path, env: dict[str, str], on: bool) -> None:
    settings = load_settings(None, env={"VIDQUEUE_DATA_DIR": str(tmp_path), **env})
    assert settings.otel is on
    app = create_app(settings, MemoryStore(), LocalStorage(tmp_path / "media", "http://127.0.0.1", b"secret"))
    config = app._telemetry  # FastAPI's resolved TelemetryConfig
    assert (config["tracing"], config["metrics"], config["logs"]) == (on, on, on)
