"""The code blocks of the README and docs/*.md, and a runner that runs a page's blocks as a reader would.

A page's shell and Python blocks run in order, top to bottom, in one shell state: a variable set, a variable
exported or a folder entered in one block is there in the next, as in one terminal. Each block is one
``bash -euo pipefail`` process that loads the state the block before it left and saves its own at the end.

What a block may say about itself, in the markdown:

- ``<!-- not run: REASON -->`` on the line before the fence: the block is not run (it needs real Kling keys, a
  GPU, several machines, …); the tests check it parses (bash -n, compile) and that it says why.
- A block whose last command starts a server (``scripts/serve …``, ``vidqueue serve …``) is run until the
  server answers ``/readyz`` (over https when it is given a certificate), then stopped; its ``--port`` is swapped
  for a free one, and its data go to a folder of its own. ``scripts/serve`` is run as the ``vidqueue serve`` it
  ends in: its setup step is what made the environment the tests run in.

Everywhere, ``http://127.0.0.1:8000`` (where ``scripts/serve`` listens) is read as the test server's address.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# docs/benchmarks.md records benchmark runs (minutes each, writing bench/results/); tests/e2e/test_bench_*.py run
# their harnesses on short runs instead.
NOT_RUN_PAGES = {"benchmarks.md"}

SHELL = {"sh", "bash"}
PYTHON = {"python"}
CHECKED = {"toml", "dotenv"}  # loaded as settings by the tests
TEXT = {"text", "json"}  # shown, not run: output, diagrams, bodies
LANGUAGES = SHELL | PYTHON | CHECKED | TEXT

DEFAULT_SERVER = "http://127.0.0.1:8000"
FENCE = re.compile(r"^```(\S*)[ \t]*$")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.*?)\s*-->$")
SERVER_COMMAND = re.compile(r"^(?:\w+=\S*\s+)*(?:scripts/serve|(?:\S*/)?vidqueue serve)(?:\s|$)")
# Shell variables of bash itself, not of the page: never saved from one block for the next.
BASH_OWN = re.compile(
    r"^(BASH\w*|_\w*|FUNCNAME|PIPESTATUS|GROUPS|SHELLOPTS|EUID|UID|PPID|RANDOM|SRANDOM|SECONDS|LINENO|EPOCH\w+|"
    r"HISTCMD|SHLVL|OLDPWD|PWD|DIRSTACK|COLUMNS|LINES|OPTIND|OPTERR|OPTARG|COMP_\w+|IFS|PS\d|HOSTNAME|HOSTTYPE|"
    r"MACHTYPE|OSTYPE|VQ_DOC_\w+)$"
)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # of the opening fence, from 1
    language: str
    code: str
    not_run: str | None = None  # the reason given in the markdown, for a block that is not run

    @property
    def name(self) -> str:
        """``README.md:42``, ``docs/api.md:17``: where the block is."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        """A shell or Python block that the tests run."""
        return self.language in SHELL | PYTHON and self.not_run is None

    @property
    def starts_server(self) -> bool:
        """The block's last command starts a server that runs until stopped."""
        commands = [line.strip() for line in self.code.splitlines() if line.strip() and not line.startswith("#")]
        return self.language in SHELL and bool(commands) and bool(SERVER_COMMAND.match(commands[-1]))


def pages() -> list[Path]:
    """The README, then every page under docs/ whose examples are run."""
    return [README, *sorted(p for p in DOCS.glob("*.md") if p.name not in NOT_RUN_PAGES)]


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a page, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise ValueError(f"{page.name}:{i + 1}: a code block that never ends")
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.match(before)
        code = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(page, i + 1, opening.group(1), code, marker.group(1) if marker else None))
        i = end + 1
    return found


def find_block(page: str, text: str, language: str) -> Block:
    """The one block of ``page`` (a path from the repository root) in ``language`` that contains ``text``."""
    found = [b for b in blocks(ROOT / page) if b.language == language and text in b.code]
    assert len(found) == 1, f"{len(found)} {language} blocks in {page} contain {text!r}"
    return found[0]


def all_blocks() -> list[Block]:
    """Every code block of every page that is run."""
    return [block for page in pages() for block in blocks(page)]


@dataclass(frozen=True)
class Outcome:
    """How a block's run ended."""

    returncode: int
    stdout: str
    stderr: str

    def explain(self, block: Block) -> str:
        """The block and what it printed, for a failed assertion."""
        return (
            f"{block.name} exited {self.returncode}\n--- block\n{block.code}"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


class Page:
    """Runs one page's shell and Python blocks in order, each once, in one shell state."""

    def __init__(
        self,
        path: Path,
        env: dict[str, str],
        cwd: Path,
        server_url: str,
        scratch: Path,
        watch: Callable[[], object] | None = None,
    ) -> None:
        self.path = path
        self.env = env
        self.server_url = server_url
        self.scratch = scratch  # where each started server keeps its data
        self.state = scratch / f"{path.stem}.state.sh"
        self.state.write_text(f"cd -- {shlex.quote(str(cwd))}\n")
        self.outcomes: dict[int, Outcome] = {}
        self.blocks = [b for b in blocks(path) if b.runs]
        # ``watch()`` is taken before the first block runs and again right after the last one (e.g. `git status`).
        self.watch = watch
        self.before = watch() if watch else None
        self.after: object = None

    @property
    def folder(self) -> Path:
        """The folder the page's shell is in, after the blocks run so far."""
        line = next(x for x in reversed(self.state.read_text().splitlines()) if x.startswith("cd -- "))
        return Path(shlex.split(line)[2])

    def run(self, block: Block) -> Outcome:
        """Run ``block``, after every block above it that has not run yet; answer how it ended."""
        for earlier in self.blocks:
            if earlier.line not in self.outcomes:
                self.outcomes[earlier.line] = self._run(earlier)
                if earlier == self.blocks[-1] and self.watch:
                    self.after = self.watch()
            if earlier == block:
                return self.outcomes[block.line]
        raise ValueError(f"{block.name} is not a block this page runs")

    def run_all(self) -> list[tuple[Block, Outcome]]:
        """Run every block of the page that has not run yet; answer each one's outcome."""
        return [(block, self.run(block)) for block in self.blocks]

    def _script(self, body: str) -> str:
        names = "$(compgen -v | grep -Ev " + shlex.quote(BASH_OWN.pattern) + ")"
        save = (
            f"{{ declare -p {names}; printf 'cd -- %q\\n' \"$PWD\"; }} > {shlex.quote(str(self.state))}.next\n"
            f"mv {shlex.quote(str(self.state))}.next {shlex.quote(str(self.state))}\n"
        )
        return f"source {shlex.quote(str(self.state))}\n{body}\n{save}"

    def _run(self, block: Block) -> Outcome:
        code = block.code.replace(DEFAULT_SERVER, self.server_url)
        if block.starts_server:
            return self._serve(block, code)
        env = dict(self.env)
        if block.language in PYTHON:
            env["VQ_DOC_PYTHON"] = code
            script = self._script('python -c "$VQ_DOC_PYTHON"')
        else:
            script = self._script(code)
        try:
            out = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            return Outcome(-1, _text(exc.stdout), _text(exc.stderr) + "\n(timed out after 180 s)")
        return Outcome(out.returncode, out.stdout, out.stderr)

    def _serve(self, block: Block, code: str) -> Outcome:
        """Start the block's server, wait until it answers /readyz, stop it (SIGTERM to its process group)."""
        from tests.support import free_port

        port = free_port()
        code = re.sub(r"--port[ =]\d+", f"--port {port}", code)
        # scripts/serve is scripts/setup, then `vidqueue serve` with its arguments; setup made this environment.
        code = code.replace("scripts/serve", f"{shlex.quote(str(Path(sys.executable).parent / 'vidqueue'))} serve")
        data = Path(tempfile.mkdtemp(prefix="serve-", dir=self.scratch))
        # Set after the page's state is loaded, which holds the shared server's data folder.
        own = f"export VIDQUEUE_PORT={port} VIDQUEUE_DATA_DIR={shlex.quote(str(data))}\n"
        log = data / "output.txt"
        with log.open("w") as sink:
            proc = subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", self._script(own + code)],
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
        scheme = "https" if "SSL_CERTFILE" in code.upper().replace("-", "_") else "http"
        ready = False
        deadline = time.monotonic() + 90
        try:
            while time.monotonic() < deadline and proc.poll() is None and not ready:
                ready = _answers_ready(f"{scheme}://127.0.0.1:{port}/readyz")
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        output = log.read_text()
        if not ready:
            return Outcome(proc.returncode or 1, output, f"the server never answered /readyz on port {port}")
        return Outcome(0, output, "")


def _answers_ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1, verify=False).status_code == 200  # a self-signed certificate, on loopback
    except httpx.TransportError:
        return False


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
