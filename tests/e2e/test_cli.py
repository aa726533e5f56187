"""The `vidqueue` command line as a user runs it: a subprocess per command, real servers and workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.cases import MASTER, PROMPT, TURBO
from tests.support import BASE, Server, fast_env, free_port, run_cli, submit, wait_for

# -- helpers -----------------------------------------------------------------------------------------------


@dataclass
class Serving:
    """A `vidqueue serve …` started with arbitrary arguments (the tests.support Server always passes --port)."""

    proc: subprocess.Popen[str]
    port: int
    output: list[str] = field(default_factory=list)

    @property
    def key(self) -> str | None:
        keys = [line.strip() for line in self.output if line.startswith("vq_")]
        return keys[-1] if keys else None

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}{BASE}", headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )


@contextmanager
def serving(args: list[str], port: int, env: dict[str, str], timeout: float = 60) -> Iterator[Serving]:
    """Start `vidqueue serve <args>` and wait until 127.0.0.1:<port> answers /readyz; stop it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidqueue", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
        start_new_session=True,
    )
    srv = Serving(proc, port)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            srv.output.append(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, "server exited:\n" + "".join(srv.output)
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready:\n" + "".join(srv.output)
            time.sleep(0.1)
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def create_key(data_dir: Path, org: str = "acme", name: str = "ci") -> tuple[str, str]:
    """`keys create`; answers (the key, everything it printed)."""
    out = run_cli("keys", "create", "--org", org, "--name", name, "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1], out.stdout


def key_id_in(text: str) -> str:
    ids = [word.strip(".,'") for word in text.split() if word.startswith("key_")]
    assert ids, text
    return ids[0]


def qworkers(api: httpx.Client, model: str) -> int:
    resp = api.get(f"/models/{model}")
    assert resp.status_code == 200, resp.text
    return int(resp.json()["qworkers"])


# -- help and imports --------------------------------------------------------------------------------------


def test_help_lists_the_serve_worker_and_keys_commands() -> None:
    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    for command in ("serve", "worker", "keys"):
        assert command in out.stdout
    # Defaults written in brackets would be eaten as rich markup; they must reach the reader.
    serve = run_cli("serve", "--help", env={"COLUMNS": "200"})
    assert "(default: 8000)" in serve.stdout and "(default: 2)" in serve.stdout, serve.stdout
    submit = run_cli("submit", "--help", env={"COLUMNS": "200"})
    assert "(default: http://127.0.0.1:8000" in submit.stdout, submit.stdout
    keys = run_cli("keys", "--help")
    assert keys.returncode == 0, keys.stderr
    for command in ("create", "list", "revoke"):
        assert command in keys.stdout


def test_importing_the_cli_and_the_emulator_worker_never_imports_torch_or_diffusers() -> None:
    # A finder that records every attempted import of the heavy packages, installed or not.
    code = """
import sys
tried = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'diffusers', 'transformers'):
            tried.append(name)
        return None
sys.meta_path.insert(0, Spy())
import vidqueue.cli
from vidqueue.catalog import Catalog
from vidqueue.config import load_settings
from vidqueue.worker.engines import build_engines
import vidqueue.worker.main
build_engines(load_settings(env={}), Catalog())
heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers')]
assert not tried and not heavy, (tried, heavy)
print('light')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "light"


# -- keys --------------------------------------------------------------------------------------------------


def test_keys_create_prints_the_key_alone_on_the_last_line(tmp_path: Path) -> None:
    key, printed = create_key(tmp_path / "d")
    assert key.startswith("vq_")
    assert " " not in key
    assert len(key) >= 32
    assert "acme" in printed
    assert key_id_in(printed) in printed.splitlines()[0]
    # Each call makes a new key.
    other, _ = create_key(tmp_path / "d")
    assert other != key


def test_keys_list_shows_id_and_org_but_never_the_key(tmp_path: Path) -> None:
    data = tmp_path / "d"
    key, printed = create_key(data, org="acme")
    key_id = key_id_in(printed)
    out = run_cli("keys", "list", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert key_id in out.stdout
    assert "acme" in out.stdout
    assert key not in out.stdout
    assert key[10:20] not in out.stdout  # not even a part past the shown prefix


def test_keys_list_can_filter_by_organisation(tmp_path: Path) -> None:
    data = tmp_path / "d"
    _, acme = create_key(data, org="acme")
    _, other = create_key(data, org="globex")
    out = run_cli("keys", "list", "--org", "globex", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert key_id_in(other) in out.stdout
    assert key_id_in(acme) not in out.stdout


def test_plaintext_key_is_stored_nowhere_in_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "d"
    keys = [create_key(data, org=f"org{i}")[0] for i in range(2)]
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files), files
    for path in files:
        content = path.read_bytes()
        for key in keys:
            assert key.encode() not in content, path
            assert key[3:].encode() not in content, path  # nor the random part alone


def test_keys_revoke_marks_the_key_revoked_in_the_list(tmp_path: Path) -> None:
    data = tmp_path / "d"
    _, printed = create_key(data)
    key_id = key_id_in(printed)
    out = run_cli("keys", "revoke", key_id, "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert key_id in out.stdout
    again = run_cli("keys", "revoke", key_id, "--data-dir", str(data))
    assert again.returncode != 0
    assert key_id in again.stderr


def test_keys_revoke_of_an_unknown_id_fails_with_a_clear_message(tmp_path: Path) -> None:
    data = tmp_path / "d"
    create_key(data)
    out = run_cli("keys", "revoke", "key_doesnotexist", "--data-dir", str(data))
    assert out.returncode != 0
    assert "key_doesnotexist" in out.stderr
    assert "no active key" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_keys_create_honours_vidqueue_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "from-env"
    out = run_cli("keys", "create", "--org", "acme", env={"VIDQUEUE_DATA_DIR": str(data)})
    assert out.returncode == 0, out.stderr
    key_id = key_id_in(out.stdout)
    assert (data / "vidqueue.db").is_file()
    listed = run_cli("keys", "list", "--data-dir", str(data))
    assert key_id in listed.stdout


def test_keys_create_refuses_an_empty_organisation(tmp_path: Path) -> None:
    out = run_cli("keys", "create", "--org", " ", "--data-dir", str(tmp_path / "d"))
    assert out.returncode != 0
    assert "--org" in out.stderr


# -- serve -------------------------------------------------------------------------------------------------


def test_first_serve_on_an_empty_data_dir_prints_a_default_key_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Server(data_dir=data, port=free_port(), env=fast_env(), workers=0).start()
    try:
        assert first.key is not None and first.key.startswith("vq_")
        assert "'default'" in first.log()
        assert sum(1 for line in first.output if line.startswith("vq_")) == 1
        with first.client() as api:
            assert api.get("/models").status_code == 200
    finally:
        first.stop()
    second = Server(data_dir=data, port=free_port(), env=fast_env(), workers=0).start()
    try:
        assert second.key is None
        assert "vq_" not in second.log()
        with second.client(first.key) as api:  # the first key still works
            assert api.get("/models").status_code == 200
        listed = run_cli("keys", "list", "--data-dir", str(data))
        assert listed.stdout.count("default") == 1
    finally:
        second.stop()


def test_api_only_server_and_a_standalone_worker_process_a_request(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    with (
        serving(["--workers", "0", "--data-dir", str(data), "--port", str(port)], port, fast_env()) as srv,
        srv.client() as api,
    ):
        created = submit(api, TURBO, {"prompt": PROMPT})
        time.sleep(1.0)
        assert api.get(f"/requests/{created['request_id']}").json()["status"] == "queued"  # no worker yet
        assert qworkers(api, TURBO) == 0
        worker_log = tmp_path / "worker.log"
        with worker_log.open("w") as sink:
            worker = subprocess.Popen(
                [sys.executable, "-m", "vidqueue", "worker", "--data-dir", str(data)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, **fast_env()},
            )
        try:
            done = wait_for(api, created["request_id"], timeout=60)
            assert done["status"] == "success", done
            assert done["qworker_id"].startswith("worker-")
            assert done["qworker_id"].endswith(f"-{worker.pid}")
            assert qworkers(api, TURBO) == 1
            video = httpx.get(done["outcome"]["video_url"], timeout=30)
            assert video.status_code == 200 and video.content[4:8] == b"ftyp"
            started = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=10) == 0
            assert time.monotonic() - started < 5
            # A worker that stops cleanly says so: the model has no worker any more.
            assert qworkers(api, TURBO) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        log = worker_log.read_text()
        assert "Traceback" not in log, log


def test_config_file_with_failure_rate_one_fails_every_request_with_engine_error(tmp_path: Path) -> None:
    config = tmp_path / "vidqueue.toml"
    config.write_text("[engines.emulator]\nfailure_rate = 1.0\n", encoding="utf-8")
    port = free_port()
    args = ["--config", str(config), "--data-dir", str(tmp_path / "data"), "--port", str(port), "--workers", "1"]
    with serving(args, port, fast_env()) as srv, srv.client() as api:
        created = submit(api, MASTER, {"prompt": PROMPT})
        done = wait_for(api, created["request_id"], timeout=60)
    assert done["status"] == "failed", done
    assert done["outcome"]["error"]["code"] == "engine_error"
    assert done["outcome"]["error"]["message"]
    assert done["error"] == done["outcome"]["error"]["message"]


def test_failure_rate_from_the_environment_fails_every_request_with_engine_error(tmp_path: Path) -> None:
    env = fast_env(VIDQUEUE_EMULATOR_FAILURE_RATE="1")
    server = Server(data_dir=tmp_path / "data", port=free_port(), env=env, workers=1).start()
    try:
        with server.client() as api:
            created = submit(api, TURBO, {"prompt": PROMPT})
            done = wait_for(api, created["request_id"], timeout=60)
    finally:
        server.stop()
    assert done["status"] == "failed", done
    assert done["outcome"]["error"]["code"] == "engine_error"
    assert done["error"] == done["outcome"]["error"]["message"]


def test_serve_with_a_missing_config_file_exits_with_a_one_line_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vidqueue", "serve", "--config", "missing.toml", "--data-dir", "data"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ.copy(),
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "missing.toml" in lines[0]
    assert lines[0].startswith("error:")
    assert not (tmp_path / "data").exists()  # nothing was created for a server that never started


def test_missing_config_error_stays_on_one_line_for_a_long_path(tmp_path: Path) -> None:
    missing = tmp_path / ("a-rather-long-directory-name-" * 3) / "missing.toml"
    out = run_cli("serve", "--config", str(missing), "--data-dir", str(tmp_path / "data"))
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert str(missing) in lines[0]


def test_serve_with_an_invalid_setting_exits_naming_it(tmp_path: Path) -> None:
    out = run_cli("serve", "--data-dir", str(tmp_path / "data"), env={"VIDQUEUE_EMULATOR_FAILURE_RATE": "2"})
    assert out.returncode != 0
    assert "failure_rate" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_vidqueue_port_sets_the_port_serve_listens_on(tmp_path: Path) -> None:
    port = free_port()
    env = fast_env(VIDQUEUE_PORT=str(port))
    with serving(["--data-dir", str(tmp_path / "data"), "--workers", "0"], port, env) as srv, srv.client() as api:
        assert api.get("/models").status_code == 200
        assert f"127.0.0.1:{port}" in "".join(srv.output)  # the log names where it serves


def test_error_message_shows_brackets_in_user_input_verbatim(tmp_path: Path) -> None:
    out = run_cli("keys", "revoke", "[bold]key_x", "--data-dir", str(tmp_path / "d"))
    assert out.returncode != 0
    assert "[bold]key_x" in out.stderr


def test_data_dir_that_is_a_file_gives_a_clean_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    out = run_cli("keys", "create", "--data-dir", str(not_a_dir))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout


def test_standalone_worker_refuses_a_model_routed_to_an_engine_it_lacks(tmp_path: Path) -> None:
    config = tmp_path / "vidqueue.toml"
    config.write_text(f'[models."{TURBO}"]\nengine = "kling"\n', encoding="utf-8")
    out = run_cli("worker", "--config", str(config), "--data-dir", str(tmp_path / "data"), timeout=30)
    assert out.returncode != 0
    assert "kling" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_serve_refuses_a_model_routed_to_an_engine_it_lacks(tmp_path: Path) -> None:
    config = tmp_path / "vidqueue.toml"
    config.write_text(f'[models."{TURBO}"]\nengine = "kling"\n', encoding="utf-8")
    out = run_cli("serve", "--config", str(config), "--data-dir", str(tmp_path / "data"), timeout=30)
    assert out.returncode == 2
    assert "kling" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def _alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_to_serve_stops_every_worker_and_exits_cleanly(tmp_path: Path) -> None:
    # Three rounds: stopping raced with the workers' idle waits, and once in a while a worker outlived serve.
    for round_ in range(3):
        server = Server(data_dir=tmp_path / "data", port=free_port(), env=fast_env(), workers=2)
        server.start()
        pids = server.worker_pids()
        assert len(pids) == 2, server.log()
        time.sleep(0.2 * round_)  # land the signal at different points of the workers' poll loops
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p for p in pids if _alive(p)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"round {round_}: workers {left} outlived serve\n{server.log()}"
        assert code == 0, server.log()
