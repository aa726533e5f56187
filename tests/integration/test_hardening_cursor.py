"""A list cursor that is not one this server made is a 400 naming `cursor`, on SQLite and on PostgreSQL.

Cursors are opaque base64 of ``s<seq>``. A hand-made one can hold anything: an integer past 64 bits (which the
database driver cannot bind), a negative one, a sign, spaces, underscores or non-ASCII digits that Python's
``int()`` would read, or megabytes of text. Each must be refused before the store is asked, with the standard error
body, never a 500; real cursors (and the largest 64-bit one) keep working.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests import pg
from tests.cases import MASTER, PROMPT
from tests.support import Server, fast_env, free_port, run_cli, submit

pytestmark = pytest.mark.slow


def cursor_of(text: str) -> str:
    """A cursor as the server writes them: unpadded URL-safe base64 of ``text``."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD: list[tuple[str, str]] = [
    ("2**64", cursor_of(f"s{2**64}")),
    ("2**63", cursor_of(f"s{2**63}")),
    ("10**30", cursor_of(f"s{10**30}")),
    ("4000-digits", cursor_of("s" + "9" * 4000)),
    ("5000-digits", cursor_of("s" + "9" * 5000)),
    ("negative", cursor_of("s-1")),
    ("negative-2**64", cursor_of(f"s-{2**64}")),
    ("plus-sign", cursor_of("s+5")),
    ("spaces", cursor_of("s 5 ")),
    ("underscore", cursor_of("s1_000")),
    ("arabic-digits", cursor_of("s\u0665\u0666")),
    ("no-number", cursor_of("s")),
    ("leading-zero", cursor_of("s007")),
    ("not-s", cursor_of("x5")),
    ("not-utf8", base64.urlsafe_b64encode(b"s\xff\xfe").decode()),
    ("not-base64", "%25%25not-a-cursor!!"),
    ("padding-only", "===="),
    ("long", "czE" * 3000),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An API server (no workers: nothing needs to run) on a fresh SQLite file or a fresh PostgreSQL database."""
    tmp: Path = tmp_path_factory.mktemp(f"cursor-{request.param}")
    with ExitStack() as stack:
        env = fast_env()
        if request.param == "postgresql":
            env["VIDQUEUE_DATABASE_URL"] = stack.enter_context(pg.database("vq_cursor"))
        server = Server(data_dir=tmp / "data", port=free_port(), env=env, workers=0)
        stack.callback(server.stop)
        server.start()
        if server.key is None:
            out = run_cli("keys", "create", "--org", "default", "--data-dir", str(server.data_dir), env=env)
            assert out.returncode == 0, out.stderr
            server.key = out.stdout.strip().splitlines()[-1]
        with server.client() as api:
            for i in range(3):
                submit(api, MASTER, {"prompt": f"{PROMPT} #{i}", "duration": "5"})
        yield server


@pytest.mark.parametrize(("name", "cursor"), BAD, ids=[row[0] for row in BAD])
def test_a_malformed_cursor_is_a_400_naming_cursor(store_server: Server, name: str, cursor: str) -> None:
    with store_server.client() as api:
        resp = api.get("/requests", params={"cursor": cursor})
    assert resp.status_code == 400, resp.text[:2000]
    assert "Traceback" not in resp.text
    body = resp.json()
    assert set(body) == {"error", "code", "details"}, body
    assert body["code"] == "invalid_request", body
    assert [d["field"] for d in body["details"]] == ["cursor"], body
    assert "not a cursor returned by this server" in body["details"][0]["message"], body


def test_real_cursors_and_the_largest_64_bit_one_still_page(store_server: Server) -> None:
    with store_server.client() as api:
        first = api.get("/requests", params={"limit": 2})
        assert first.status_code == 200, first.text
        page = first.json()
        assert page["total"] == 3 and len(page["requests"]) == 2 and page["next_cursor"]
        rest = api.get("/requests", params={"limit": 2, "cursor": page["next_cursor"]})
        assert rest.status_code == 200, rest.text
        assert len(rest.json()["requests"]) == 1 and rest.json()["next_cursor"] is None
        seen = {r["request_id"] for r in page["requests"] + rest.json()["requests"]}
        assert len(seen) == 3
        # Past every row (the largest signed 64-bit value, and one past 32 bits): every request; 0: none.
        for seq, count in ((2**63 - 1, 3), (2**40, 3), (0, 0)):
            resp = api.get("/requests", params={"cursor": cursor_of(f"s{seq}")})
            assert resp.status_code == 200, (seq, resp.text)
            assert len(resp.json()["requests"]) == count, (seq, resp.json())
    assert httpx.get(store_server.url + "/readyz", timeout=10).status_code == 200
