"""Fixtures: one real server on a loopback port per module, with a little emulated latency."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with 2 workers and 1.5 s of emulated latency, so processing can be watched and cancelled."""
    tmp: Path = tmp_path_factory.mktemp("server")
    with running_server(tmp, workers=2, VIDQUEUE_EMULATOR_LATENCY_S="1.5") as srv:
        yield srv


@pytest.fixture()
def api(server: Server) -> Iterator[httpx.Client]:
    """A client of the first key's organisation ('default')."""
    with server.client() as client:
        yield client
