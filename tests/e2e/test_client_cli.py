"""The client commands of `vidqueue` (models, model, submit, status, list, cancel, wait, download) as a user runs
them: a subprocess per command, against real servers with emulator workers on loopback."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from PIL import Image

from tests.cases import LISTED_MODEL_IDS, MASTER, PROMPT, TOO_LONG, TURBO
from tests.support import Server, free_port, run_cli, running_server, submit, wait_for

# Variables the client reads; every test sets them itself, so nothing leaks in from the outer environment.
CLIENT_VARS = ("VIDQUEUE_BASE_URL", "VIDQUEUE_API_KEY", "GMI_API_KEY", "VIDQUEUE_ORGANIZATION_ID")

# -- helpers -----------------------------------------------------------------------------------------------


def cli_env(server: Server | None = None, key: str | None = None, **extra: str) -> dict[str, str]:
    """The outer environment without the client's variables, then the server's URL and key, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARS}
    if server is not None:
        env["VIDQUEUE_BASE_URL"] = server.url
        env["VIDQUEUE_API_KEY"] = key or server.key or ""
    env.update(extra)
    return env


def vq(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `vidqueue …` with exactly ``env`` (no pipes are terminals: plain output)."""
    return run_cli(*args, env=env, timeout=timeout, inherit=False)


def start_vq(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start `vidqueue …` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "vidqueue", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def ok(out: subprocess.CompletedProcess[str]) -> str:
    """Assert exit 0; answers stdout."""
    assert out.returncode == 0, f"exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr}"
    return out.stdout


def fails(out: subprocess.CompletedProcess[str], code: int) -> str:
    """Assert the documented exit code and a clean one-message error; answers stderr."""
    assert out.returncode == code, f"exit {out.returncode}, wanted {code}\nstdout: {out.stdout}\nstderr: {out.stderr}"
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    assert "error:" in out.stderr, out.stderr
    return out.stderr


def as_json(text: str) -> Any:
    """stdout of a --json command: exactly one JSON document."""
    return json.loads(text)


def decode(path: Path) -> tuple[int, int, int]:
    """Frames, width and height of an MP4, decoded."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height


def api(server: Server, key: str | None = None) -> httpx.Client:
    """Plain HTTP to the server's API (to set things up and to check what the CLI did)."""
    return server.client(key)


# -- servers -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(tmp: Path, workers: int, **env: str) -> Iterator[Server]:
    """``running_server``, then SIGKILL of whatever is left of the server's process group.

    `vidqueue serve` can leave a worker behind when it gets SIGTERM (uvicorn re-raises the signal, so the
    supervisor never stops its workers; a worker can then hang in its own SIGTERM handler), and an orphan
    worker must not outlive the test run.
    """
    srv: Server | None = None
    try:
        with running_server(tmp, workers=workers, **env) as srv:
            yield srv
    finally:
        if srv is not None and srv.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(srv.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two emulator workers; a generation takes well under a second."""
    with serving(tmp_path_factory.mktemp("client-cli"), 2, VIDQUEUE_EMULATOR_LATENCY_S="0.3") as srv:
        yield srv


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Every request fails (engine_error)."""
    with serving(tmp_path_factory.mktemp("client-cli-failing"), 1, VIDQUEUE_EMULATOR_FAILURE_RATE="1") as srv:
        yield srv


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker whose generations take a minute: requests stay processing (and queued behind) for long."""
    with serving(tmp_path_factory.mktemp("client-cli-slow"), 1, VIDQUEUE_EMULATOR_LATENCY_S="60") as srv:
        yield srv


# -- models and model --------------------------------------------------------------------------------------


def test_models_lists_both_seed_models_plain_and_as_json(server: Server) -> None:
    env = cli_env(server)
    table = ok(vq("models", env=env))
    assert TURBO in table and MASTER in table
    assert "emulator" in table  # the engine column
    models = as_json(ok(vq("models", "--json", env=env)))
    assert isinstance(models, list)
    assert [m["model"] for m in models] == LISTED_MODEL_IDS
    turbo = next(m for m in models if m["model"] == TURBO)
    assert "image" in {p["name"] for p in turbo["parameters"]}


def test_model_shows_its_parameters_with_rules_plain_and_as_json(server: Server) -> None:
    env = cli_env(server)
    table = ok(vq("model", MASTER, env=env))
    assert MASTER in table
    rows = {line.split()[1]: line for line in table.splitlines() if line.startswith("│") and len(line.split()) > 1}
    for name in ("prompt", "negative_prompt", "duration", "aspect_ratio", "cfg_scale"):
        assert name in rows, table
    assert "0 to 1" in rows["cfg_scale"] and "step 0.1" in rows["cfg_scale"] and "0.5" in rows["cfg_scale"]
    assert "16:9, 9:16, 1:1" in rows["aspect_ratio"]
    assert "5, 10" in rows["duration"]
    assert "up to 2500 characters" in rows["prompt"] and "yes" in rows["prompt"]
    assert "image" not in rows  # a text-only model

    found = as_json(ok(vq("model", TURBO, "--json", env=env)))
    assert found["model"] == TURBO
    params = {p["name"]: p for p in found["parameters"]}
    assert set(params) == {"prompt", "image", "duration", "negative_prompt", "mode", "cfg_scale"}
    assert (params["cfg_scale"]["min"], params["cfg_scale"]["max"], params["cfg_scale"]["default"]) == (0, 1, 0.5)
    assert params["prompt"]["required"] is True


def test_model_of_an_unknown_id_exits_4(server: Server) -> None:
    err = fails(vq("model", "no-such-model", env=cli_env(server)), 4)
    assert "no-such-model" in err


# -- submit, status, wait, download ------------------------------------------------------------------------


def test_submit_prints_the_id_alone_on_stdout_and_status_shows_it(server: Server) -> None:
    env = cli_env(server)
    out = vq("submit", TURBO, "--prompt", PROMPT, "--negative-prompt", "blurry", env=env)
    request_id = ok(out).strip()
    assert len(request_id.splitlines()) == 1
    uuid.UUID(request_id)
    assert out.stderr.startswith(f"{request_id}: queued") or out.stderr.startswith(f"{request_id}: processing")

    table = ok(vq("status", request_id, env=env))
    assert request_id in table and TURBO in table
    assert '"negative_prompt": "blurry"' in table
    shown = as_json(ok(vq("status", request_id, "--json", env=env)))
    assert shown["request_id"] == request_id
    assert shown["model"] == TURBO
    assert shown["status"] in {"queued", "processing", "success"}
    assert shown["payload"]["prompt"] == PROMPT and shown["payload"]["negative_prompt"] == "blurry"

    # wait: plain lines on stderr while it runs, the finished request on stdout.
    waited = vq("wait", request_id, env=env)
    table = ok(waited)
    assert "success" in table and request_id in table
    assert "1280x720, 5 s, 24 fps" in table  # the video row
    assert f"{request_id}: success" in waited.stderr.splitlines()
    assert "\x1b[" not in waited.stderr  # no live display without a terminal
    done = as_json(ok(vq("wait", request_id, "--json", "--quiet", env=env)))
    assert done["status"] == "success" and done["outcome"]["video"]["frames"] == 120
    done = as_json(ok(vq("status", request_id, "--json", env=env)))
    assert done["status"] == "success" and done["progress"] == 100


def test_submit_wait_output_saves_a_portrait_mp4_for_the_master_model(server: Server, tmp_path: Path) -> None:
    video = tmp_path / "out.mp4"
    out = vq("submit", MASTER, "-p", PROMPT, "-P", "aspect_ratio=9:16", "--wait", "-o", str(video), env=cli_env(server))
    assert f"saved {video} ({video.stat().st_size} bytes)" in ok(out)
    assert "success" in out.stderr
    assert not video.with_name("out.mp4.part").exists()
    assert decode(video) == (24 * 5, 720, 1280)


def test_submit_with_params_waits_downloads_and_download_matches_the_outcome_url(
    server: Server, tmp_path: Path
) -> None:
    env = cli_env(server)
    video = tmp_path / "turbo.mp4"
    out = vq(
        "submit", TURBO, "-p", PROMPT, "-P", "duration=10", "-P", "cfg.scale=0.3", "-o", str(video), "--json",
        env=env,
    )  # fmt: skip
    done = as_json(ok(out))
    # -P reads JSON: the number 10 is accepted and echoed as the string "10"; cfg.scale nests into cfg_scale.
    assert done["payload"]["duration"] == "10"
    assert done["payload"]["cfg_scale"] == 0.3
    assert "cfg" not in done["payload"]
    assert done["status"] == "success"
    assert decode(video) == (24 * 10, 1280, 720)

    # download gives exactly the bytes behind the outcome URL (no key needed for that URL).
    again = tmp_path / "again.mp4"
    saved = ok(vq("download", done["request_id"], "-o", str(again), env=env))
    assert f"saved {again}" in saved
    fetched = httpx.get(done["outcome"]["video_url"], timeout=30)
    assert fetched.status_code == 200
    assert again.read_bytes() == fetched.content == video.read_bytes()

    # download --json prints the request, not the "saved" line.
    third = tmp_path / "third.mp4"
    shown = as_json(ok(vq("download", done["request_id"], "-o", str(third), "--json", env=env)))
    assert shown["request_id"] == done["request_id"] and shown["status"] == "success"
    assert third.read_bytes() == fetched.content


def test_submit_wait_without_output_prints_the_finished_request(server: Server) -> None:
    out = vq("submit", MASTER, "-p", PROMPT, "-P", "aspect_ratio=1:1", "--wait", "--quiet", env=cli_env(server))
    table = ok(out)
    assert "success" in table and "720x720, 5 s, 24 fps" in table
    assert out.stderr == ""  # --quiet


def test_download_wait_waits_for_a_fresh_request_then_saves_it(server: Server, tmp_path: Path) -> None:
    env = cli_env(server)
    request_id = ok(vq("submit", TURBO, "-p", "a lighthouse in a storm", "-q", env=env)).strip()
    video = tmp_path / "w.mp4"
    ok(vq("download", request_id, "-o", str(video), "--wait", env=env))
    assert decode(video) == (120, 1280, 720)


def test_submit_with_a_local_png_sends_it_as_base64(server: Server, tmp_path: Path) -> None:
    image = tmp_path / "first-frame.png"
    Image.new("RGB", (360, 640), (200, 40, 40)).save(image)
    env = cli_env(server)
    created = as_json(ok(vq("submit", TURBO, "-p", PROMPT, "--image", str(image), "--json", env=env)))
    # Sent as base64; the server stores it and answers with a signed URL of the same bytes.
    assert httpx.get(created["payload"]["image"], timeout=30).content == image.read_bytes()
    video = tmp_path / "from-image.mp4"
    done = as_json(ok(vq("wait", created["request_id"], "-o", str(video), "--json", "-q", env=env)))
    assert done["status"] == "success"
    # The video takes the image's shape (portrait), not the 16:9 default.
    assert (done["outcome"]["video"]["width"], done["outcome"]["video"]["height"]) == (720, 1280)
    assert decode(video) == (120, 720, 1280)
    # The table shows no base64 (the server never echoes it).
    table = ok(vq("status", created["request_id"], env=env))
    assert base64.b64encode(image.read_bytes()).decode("ascii")[:64] not in table


def test_submit_with_an_image_that_is_no_file_exits_2(server: Server, tmp_path: Path) -> None:
    err = fails(vq("submit", TURBO, "-p", PROMPT, "--image", str(tmp_path / "missing.png"), env=cli_env(server)), 2)
    assert "--image" in err and "missing.png" in err


# -- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field", "rule"),
    [
        (["-P", "cfg_scale=3"], "payload.cfg_scale", "between 0 and 1"),
        (["-P", "cfg.scale=1.5"], "payload.cfg.scale", "between 0 and 1"),
        (["-P", "seed=42"], "payload.seed", "not a parameter"),
        (["-P", "duration=7"], "payload.duration", "5"),
        (["-P", "aspect_ratio=4:3"], "payload.aspect_ratio", "9:16"),
        (["--prompt", TOO_LONG], "payload.prompt", "2500"),
        (["--priority", "500"], "priority", "100"),
    ],
)
def test_an_invalid_payload_exits_2_naming_the_field_and_the_rule(
    server: Server, args: list[str], field: str, rule: str
) -> None:
    full = args if "--prompt" in args else ["--prompt", PROMPT, *args]
    err = fails(vq("submit", MASTER, *full, env=cli_env(server)), 2)
    lines = [line for line in err.splitlines() if field in line]
    assert lines, err
    assert rule in lines[0], err


def test_submit_without_a_prompt_exits_2_naming_the_prompt(server: Server) -> None:
    err = fails(vq("submit", TURBO, "-P", "duration=5", env=cli_env(server)), 2)
    assert "payload.prompt" in err


def test_a_malformed_param_exits_2_naming_param_before_any_request(server: Server) -> None:
    env = cli_env(server)
    err = fails(vq("submit", TURBO, "-p", PROMPT, "-P", "nonsense", env=env), 2)
    assert "--param" in err and "nonsense" in err and "KEY=VALUE" in err
    err = fails(vq("submit", TURBO, "-p", PROMPT, "-P", "=5", env=env), 2)
    assert "--param" in err
    # A dotted key under a field already set to a value is refused too.
    err = fails(vq("submit", TURBO, "-p", PROMPT, "-P", "cfg=1", "-P", "cfg.scale=0.5", env=env), 2)
    assert "--param" in err and "cfg" in err


def test_an_output_that_cannot_be_written_exits_2_before_submitting(server: Server, tmp_path: Path) -> None:
    env = cli_env(server)
    with api(server) as client:
        request_id = submit(client, TURBO, {"prompt": PROMPT})["request_id"]
        wait_for(client, request_id, timeout=60)
        before = client.get("/requests").json()["total"]
    missing = tmp_path / "no-such-dir" / "x.mp4"
    err = fails(vq("submit", TURBO, "-p", PROMPT, "--wait", "-o", str(missing), env=env), 2)
    assert "--output" in err and "no-such-dir" in err
    for command in (["download", request_id, "-o", str(missing)], ["wait", request_id, "-o", str(missing)]):
        err = fails(vq(*command, env=env), 2)
        assert "--output" in err and "no-such-dir" in err
    err = fails(vq("download", request_id, "-o", str(tmp_path), env=env), 2)
    assert "--output" in err and "is a directory" in err
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name.startswith(tmp_path.name)) == [tmp_path.name]
    with api(server) as client:
        assert client.get("/requests").json()["total"] == before  # the refused submit sent nothing


def test_an_id_that_cannot_be_one_and_a_bad_status_filter_exit_2(server: Server) -> None:
    env = cli_env(server)
    for command in (["status", "a/b"], ["cancel", ".."], ["wait", ""], ["model", "x/y"]):
        err = fails(vq(*command, env=env), 2)
        assert "not a valid id" in err, command
    err = fails(vq("list", "--status", "bogus", env=env), 2)
    assert "status" in err and "queued" in err


# -- list --------------------------------------------------------------------------------------------------


def test_list_filters_by_model_and_status_and_limits(server: Server) -> None:
    key = server.create_key(f"lister-{uuid.uuid4().hex[:8]}")  # an organisation of its own: only these requests
    with api(server, key) as client:
        masters = [submit(client, MASTER, {"prompt": f"{PROMPT} {i}"})["request_id"] for i in range(3)]
        turbo = submit(client, TURBO, {"prompt": PROMPT})["request_id"]
        for request_id in [*masters, turbo]:
            assert wait_for(client, request_id, timeout=60)["status"] == "success"
    env = cli_env(server, key=key)

    table = ok(vq("list", "--model", MASTER, "--status", "success", "--limit", "2", env=env))
    rows = [line for line in table.splitlines() if MASTER in line]
    assert len(rows) == 2, table
    assert all("success" in row for row in rows)
    assert turbo not in table
    assert masters[2] in table and masters[1] in table and masters[0] not in table  # newest first

    listed = as_json(ok(vq("list", "--model", MASTER, "--status", "success", "--limit", "2", "--json", env=env)))
    assert isinstance(listed, list)
    assert [r["request_id"] for r in listed] == [masters[2], masters[1]]
    assert all(r["model"] == MASTER and r["status"] == "success" for r in listed)

    everything = as_json(ok(vq("list", "--json", env=env)))
    assert {r["request_id"] for r in everything} == {*masters, turbo}
    none = as_json(ok(vq("list", "--status", "queued", "--json", env=env)))
    assert none == []
    turbos = as_json(ok(vq("list", "--model", TURBO, "--json", env=env)))
    assert [r["request_id"] for r in turbos] == [turbo]


def test_piped_tables_are_as_wide_as_their_content_with_no_trailing_spaces(server: Server) -> None:
    key = server.create_key(f"piped-{uuid.uuid4().hex[:8]}")
    with api(server, key) as client:
        ids = [submit(client, TURBO, {"prompt": f"{PROMPT} {i}"})["request_id"] for i in range(2)]
    env = cli_env(server, key=key)
    lines = ok(vq("list", env=env)).splitlines()
    assert all(request_id in "\n".join(lines) for request_id in ids)  # whole ids, never wrapped
    assert all(line == line.rstrip() for line in lines), lines
    assert len({len(line) for line in lines}) == 1, lines  # one box, every line as wide as the box
    # Each column is as wide as its widest cell and a space either side: nothing beyond what the content needs.
    rows = [re.split("[│┃]", line)[1:-1] for line in lines if line[0] in "│┃"]
    for column in zip(*rows, strict=True):
        assert max(len(cell.strip()) for cell in column) + 2 == len(column[0]), column
    shown = ok(vq("status", ids[0], env=env)).splitlines()
    assert any(ids[0] in line for line in shown)
    assert all(line == line.rstrip() for line in shown), shown


def test_list_with_a_bad_limit_is_a_usage_error(server: Server) -> None:
    out = vq("list", "--limit", "0", env=cli_env(server))
    assert out.returncode == 2, out.stderr
    assert "--limit" in out.stderr


# -- failures, cancels, unfinished -------------------------------------------------------------------------


def test_a_failed_request_exits_1_naming_the_failure_code(failing: Server, tmp_path: Path) -> None:
    env = cli_env(failing)
    out = vq("submit", MASTER, "-p", PROMPT, "--wait", env=env)
    err = fails(out, 1)
    found = re.search(r"error: request (\S+) failed \(engine_error\): Emulated engine failure", err)
    assert found, err
    request_id = found.group(1)
    assert f"{request_id}: failed (engine_error)" in err  # the plain progress line

    # --json still prints the request, with its failure.
    out = vq("submit", MASTER, "-p", PROMPT, "--wait", "--json", "-o", str(tmp_path / "never.mp4"), env=env)
    fails(out, 1)
    shown = as_json(out.stdout)
    assert shown["status"] == "failed"
    assert shown["outcome"]["error"]["code"] == "engine_error"
    assert not (tmp_path / "never.mp4").exists()

    err = fails(vq("wait", request_id, env=env), 1)
    assert "engine_error" in err and request_id in err
    out = vq("wait", request_id, "--json", env=env)
    fails(out, 1)
    assert as_json(out.stdout)["status"] == "failed"

    # status of a failed request is no error; download of one is.
    table = ok(vq("status", request_id, env=env))
    assert "failed" in table and "Emulated engine failure" in table
    err = fails(vq("download", request_id, "-o", str(tmp_path / "x.mp4"), env=env), 1)
    assert "engine_error" in err


def test_cancel_ends_a_processing_request_and_a_background_wait_exits_1(slow: Server, tmp_path: Path) -> None:
    env = cli_env(slow)
    first = ok(vq("submit", TURBO, "-p", PROMPT, "-q", env=env)).strip()
    with api(slow) as client:
        wait_for(client, first, {"processing"}, timeout=60)
    second = ok(vq("submit", TURBO, "-p", "behind the first", "-q", env=env)).strip()  # one worker: it queues
    waiter = start_vq("wait", first, env=env)
    try:
        # Neither has a video yet: download says to wait.
        for request_id, state in ((first, "processing"), (second, "queued")):
            err = fails(vq("download", request_id, "-o", str(tmp_path / "early.mp4"), env=env), 1)
            assert state in err and "wait" in err and f"vidqueue wait {request_id}" in err
        assert not (tmp_path / "early.mp4").exists()

        # wait --timeout gives up with exit 5; the request goes on.
        out = vq("wait", first, "--timeout", "1", "--json", "-q", env=env)
        err = fails(out, 5)
        assert "still processing" in err
        assert as_json(out.stdout)["status"] == "processing"

        # A queued request is cancelled at once.
        shown = as_json(ok(vq("cancel", second, "--json", env=env)))
        assert shown["request_id"] == second and shown["status"] == "cancelled"

        # A processing one once its worker sees the cancel (the server waits a little for that).
        line = ok(vq("cancel", first, env=env)).strip()
        assert line == f"{first}: cancelled" or line.startswith(f"{first}: processing"), line
        with api(slow) as client:
            assert wait_for(client, first, timeout=30)["status"] == "cancelled"

        _, stderr = waiter.communicate(timeout=60)
        assert waiter.returncode == 1, stderr
        assert f"request {first} was cancelled" in stderr
        assert "Traceback" not in stderr
        assert f"{first}: processing" in stderr  # the plain progress lines came first
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()

    out = vq("wait", second, "--json", env=env)
    assert "was cancelled" in fails(out, 1)
    assert as_json(out.stdout)["status"] == "cancelled"
    assert "cancelled" in fails(vq("download", second, "-o", str(tmp_path / "c.mp4"), env=env), 1)
    # Cancelling again changes nothing and is no error.
    assert ok(vq("cancel", first, env=env)).strip() == f"{first}: cancelled"


def test_cancel_of_a_finished_request_leaves_it_as_it_was(server: Server) -> None:
    env = cli_env(server)
    with api(server) as client:
        request_id = submit(client, TURBO, {"prompt": PROMPT})["request_id"]
        wait_for(client, request_id, timeout=60)
    assert ok(vq("cancel", request_id, env=env)).strip() == f"{request_id}: success"


# -- authentication, not found, network --------------------------------------------------------------------


def test_a_bad_api_key_exits_3_without_the_no_key_hint(server: Server) -> None:
    err = fails(vq("models", "--api-key", "vq_not-a-real-key", env=cli_env(server)), 3)
    assert "not valid" in err
    assert "no key given" not in err


def test_no_api_key_at_all_exits_3_with_a_hint(server: Server) -> None:
    env = cli_env()
    for command in (["models"], ["status", str(uuid.uuid4())], ["submit", TURBO, "-p", PROMPT]):
        err = fails(vq(*command, "--base-url", server.url, env=env), 3)
        assert "--api-key" in err and "VIDQUEUE_API_KEY" in err


def test_no_api_key_is_one_line_of_the_clis_own(server: Server) -> None:
    out = vq("models", "--base-url", server.url, env=cli_env())
    assert out.returncode == 3
    assert out.stderr == "error: no API key: pass --api-key or set VIDQUEUE_API_KEY\n"
    assert out.stdout == ""


def test_gmi_api_key_alone_is_used_and_flags_beat_the_environment(server: Server) -> None:
    assert server.key is not None
    env = cli_env(GMI_API_KEY=server.key, VIDQUEUE_BASE_URL=server.url)
    assert [m["model"] for m in as_json(ok(vq("models", "--json", env=env)))] == LISTED_MODEL_IDS
    # VIDQUEUE_API_KEY comes before GMI_API_KEY, --api-key before both.
    bad_vq = cli_env(server, key="vq_bad", GMI_API_KEY=server.key)
    fails(vq("models", env=bad_vq), 3)
    ok(vq("models", "--api-key", server.key, env=bad_vq))
    # --base-url beats VIDQUEUE_BASE_URL.
    elsewhere = cli_env(server, VIDQUEUE_BASE_URL=f"http://127.0.0.1:{free_port()}")
    ok(vq("models", "--base-url", server.url, env=elsewhere))


def test_unknown_request_id_exits_4_for_every_command(server: Server, tmp_path: Path) -> None:
    env = cli_env(server)
    unknown = str(uuid.uuid4())
    for command in (
        ["status", unknown],
        ["status", unknown, "--json"],
        ["cancel", unknown],
        ["wait", unknown],
        ["download", unknown, "-o", str(tmp_path / "x.mp4")],
    ):
        out = vq(*command, env=env)
        err = fails(out, 4)
        assert unknown in err, command
        assert out.stdout == "", command
    assert not (tmp_path / "x.mp4").exists()


def test_a_server_that_is_not_there_exits_5() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = cli_env(VIDQUEUE_API_KEY="vq_whatever")
    # GETs are retried with backoff (several seconds in all): run those side by side, in the background.
    getters = [
        start_vq("models", "--base-url", closed, env=env),
        start_vq("status", str(uuid.uuid4()), env={**env, "VIDQUEUE_BASE_URL": closed}),
    ]
    try:
        err = fails(vq("submit", TURBO, "-p", PROMPT, "--base-url", closed, env=env), 5)  # a submit is not retried
        assert closed in err and "failed" in err
        answers = [proc.communicate(timeout=60) for proc in getters]
    finally:
        for proc in getters:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (stdout, stderr) in zip(getters, answers, strict=True):
        assert proc.returncode == 5, stderr
        assert "Traceback" not in stderr and "error:" in stderr and closed in stderr
        assert stdout == ""


# -- the live display --------------------------------------------------------------------------------------


def test_wait_on_a_terminal_shows_a_live_display(server: Server) -> None:
    with api(server) as client:
        request_id = submit(client, TURBO, {"prompt": "a kite over the dunes"})["request_id"]
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidqueue", "wait", request_id],
        stdout=subprocess.PIPE,
        stderr=secondary,
        stdin=subprocess.DEVNULL,
        env=cli_env(server, TERM="xterm-256color", COLUMNS="160"),
    )
    os.close(secondary)
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the other side closed
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    reader.join(timeout=10)
    os.close(primary)
    assert proc.returncode == 0
    text = shown.decode("utf-8", "replace")
    assert "\x1b[" in text  # redrawn in place
    assert request_id in text and "success 100%" in text
    assert f"{request_id}: success\r\n" not in text  # not the plain lines
    assert b"success" in stdout  # the finished request still goes to stdout


def test_help_lists_the_client_commands() -> None:
    out = ok(vq("--help", env=cli_env(COLUMNS="200")))
    for command in ("models", "model", "submit", "status", "list", "cancel", "wait", "download"):
        assert f" {command} " in out, command
    submit_help = ok(vq("submit", "--help", env=cli_env(COLUMNS="200")))
    for flag in ("--prompt", "--negative-prompt", "--image", "--param", "--wait", "--output", "--json", "--api-key"):
        assert flag in submit_help, flag
