"""Every example in the README and docs/ runs as written, against a real server (issue 19, part 2).

How blocks run, and how a block says it is not run, is in ``tests/docblocks.py`` (and docs/development.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from tests.docblocks import (
    LANGUAGES,
    PYTHON,
    README,
    ROOT,
    SHELL,
    Block,
    Page,
    all_blocks,
    blocks,
    find_block,
    pages,
)
from tests.support import UPSTREAM_KEYS, Server, fast_env, running_server

pytestmark = pytest.mark.slow

BLOCKS = all_blocks()
RUN = [b for b in BLOCKS if b.runs]
NOT_RUN = [b for b in BLOCKS if b.not_run is not None]
MAX_NOT_RUN = 6
VENV_BIN = ROOT / ".venv" / "bin"


def untracked() -> set[str]:
    """Files git does not track and does not ignore, under the repository root.

    New untracked files are what a walk-through leaves behind; tracked files' changes are left out, as people edit
    them in a shared checkout while the tests run.
    """
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return {line[3:] for line in out.stdout.splitlines() if line.startswith("??")}


def in_git_checkout() -> bool:
    try:
        subprocess.run(["git", "rev-parse", "--git-dir"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def frames_and_size(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), stream.codec_context.width, stream.codec_context.height


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("docs-server")) as srv:
        assert srv.key is not None
        yield srv


@pytest.fixture(scope="module")
def runners(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Page]:
    """A runner per page, each with the env a reader of that page has; blocks run when a test asks for them."""
    assert (VENV_BIN / "vidqueue").exists(), "the README runs from a checkout that scripts/setup has set up"
    assert server.key is not None
    scratch = tmp_path_factory.mktemp("docs-pages")
    inherited = {k: v for k, v in os.environ.items() if k not in UPSTREAM_KEYS and not k.startswith("VIDQUEUE_")}
    # The server's address and data stand in for scripts/serve's 127.0.0.1:8000 and ./vidqueue-data; fast_env
    # makes the servers that blocks start quick to stop.
    common = {**inherited, **fast_env(), "VIDQUEUE_BASE_URL": server.url, "VIDQUEUE_DATA_DIR": str(server.data_dir)}
    # The other pages' readers have done the README: the checkout's .venv/bin on PATH, a key in VIDQUEUE_API_KEY.
    reader = {**common, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "VIDQUEUE_API_KEY": server.key}
    found: dict[Path, Page] = {}
    for page in pages():
        if page == README:
            watch = untracked if in_git_checkout() else None
            found[page] = Page(page, common, ROOT, server.url, scratch, watch=watch)
        else:
            folder = scratch / f"{page.stem}.cwd"
            folder.mkdir()
            found[page] = Page(page, reader, folder, server.url, scratch)
    return found


# -- every example ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.name)
def test_example_runs(block: Block, runners: dict[Path, Page]) -> None:
    outcome = runners[block.page].run(block)
    assert outcome.returncode == 0, outcome.explain(block)


@pytest.mark.parametrize("block", NOT_RUN, ids=lambda b: b.name)
def test_an_example_that_cannot_run_here_says_why_and_parses(block: Block) -> None:
    """Not run (it needs keys, a GPU, several machines, or is the suite itself), but it must still be valid code."""
    assert block.not_run, f"{block.name}: a block that is not run says why"
    if block.language in PYTHON:
        compile(block.code, block.name, "exec")
    else:
        parsed = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True, check=False)
        assert parsed.returncode == 0, f"{block.name} is not valid shell: {parsed.stderr}"


def test_few_examples_are_not_run_and_each_says_why() -> None:
    assert len(NOT_RUN) <= MAX_NOT_RUN, [f"{b.name}: {b.not_run}" for b in NOT_RUN]
    assert all(b.not_run and len(b.not_run) > 10 for b in NOT_RUN)
    assert all(b.language in SHELL | PYTHON for b in NOT_RUN), "only shell and Python blocks are run or not run"


def test_every_code_block_names_a_language_the_tests_know() -> None:
    unknown = [f"{b.name}: ```{b.language}" for b in BLOCKS if b.language not in LANGUAGES]
    assert not unknown, f"name each block's language, one of {sorted(LANGUAGES)}: {unknown}"
    indented = [
        f"{page.relative_to(ROOT)}:{n}"
        for page in pages()
        for n, line in enumerate(page.read_text().splitlines(), 1)
        if line.startswith((" ```", "  ```", "   ```"))
    ]
    assert not indented, f"code blocks start at the line's start, so the tests find them: {indented}"


# -- the README ---------------------------------------------------------------------------------------------


def test_the_readme_is_at_most_150_lines_with_the_two_commands_first() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    headings = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith("## ")]
    assert text.splitlines()[headings[0] - 1] == "## The two commands"
    first = [b.code.strip() for b in blocks(README) if headings[0] < b.line < headings[1] and b.language in SHELL]
    assert first == ["scripts/serve", "scripts/test"]


def test_the_readme_shows_a_console_screenshot() -> None:
    pictures = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", README.read_text())
    assert len(pictures) == 1 and pictures[0].startswith("docs/console/")
    assert (ROOT / pictures[0]).is_file()


def test_the_walk_through_makes_three_videos(runners: dict[Path, Page]) -> None:
    page = runners[README]
    outcomes = page.run_all()
    folder = page.folder
    assert not folder.is_relative_to(ROOT)
    assert frames_and_size(folder / "fox.mp4") == (120, 720, 1280)  # 9:16, 5 s at 24 fps
    assert frames_and_size(folder / "fox2.mp4") == (120, 1280, 720)
    listed = next(o.stdout for b, o in outcomes if "vidqueue list" in b.code)
    assert "Kling-Text2Video-V2-Master" in listed and "success" in listed
    python = next(o.stdout for b, o in outcomes if b.language in PYTHON)
    request_id, status, url = python.split()
    assert len(request_id) == 36 and status == "success" and url.startswith(runners[README].server_url + "/media/")
    code = next(b.code for b, _ in outcomes if b.language in PYTHON)
    assert len(code.strip().splitlines()) <= 5


def test_the_walk_through_leaves_git_status_clean(runners: dict[Path, Page]) -> None:
    page = runners[README]
    if page.watch is None:
        pytest.skip("not a git checkout")
    page.run_all()
    assert isinstance(page.before, set) and isinstance(page.after, set)
    assert page.after - page.before == set(), "the README's examples left files in the checkout"


# -- links --------------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def prose(page: Path) -> str:
    """A page's text without its code blocks."""
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)


def test_every_link_between_the_pages_leads_somewhere() -> None:
    broken = []
    for page in pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and anchor not in {slug(h) for h in re.findall(r"^#+ (.+)$", prose(file), re.M)}:
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken


# -- settings blocks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language == "toml"], ids=lambda b: b.name)
def test_config_example_loads(block: Block, tmp_path: Path) -> None:
    from vidqueue.config import load_settings

    path = tmp_path / "vidqueue.toml"
    path.write_text(block.code)
    load_settings(path, env={})


def test_the_configuration_reference_is_a_valid_config(tmp_path: Path) -> None:
    from vidqueue.config import load_settings

    path = tmp_path / "vidqueue.toml"
    path.write_text(find_block("docs/operations.md", "[retention]", "toml").code)
    settings = load_settings(path, env={})
    assert settings.engine_for("kling-v2-5-turbo") == "kling"
    assert settings.engine_for("Kling-Text2Video-V2-Master") == "emulator"  # no keys in this environment
    assert settings.engines.kling.base_url == "https://api-singapore.klingai.com"
    assert settings.engines.kling.max_video_bytes == 1024**3


def test_the_diffusers_examples_declare_models_with_their_steps() -> None:
    from vidqueue.bootstrap import catalog_for
    from vidqueue.config import Settings

    for model_id, steps in (("my-wan", (30, 50)), ("my-wan-4step", (4, 8)), ("wan-fast", (4, 8))):
        tree = tomllib.loads(find_block("docs/engines.md", f'[models."{model_id}"]', "toml").code)
        settings = Settings.model_validate(tree)  # what load_settings does with a config file's tables
        assert settings.engine_for(model_id) == "diffusers"
        params = {p.name: p for p in catalog_for(settings).get(model_id).params}
        assert (params["num_inference_steps"].default, params["num_inference_steps"].max) == steps
        if steps[0] == 4:
            assert settings.models[model_id].guidance == 1.0 and settings.models[model_id].lora


def dotenv(code: str) -> dict[str, str]:
    """An environment file's variables, read as systemd's EnvironmentFile= reads them (no comment after a value)."""
    variables: dict[str, str] = {}
    for line in code.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f"not NAME=VALUE: {line!r}"
        assert not re.search(r"\s", value), f"a value with spaces (a comment after it?): {line!r}"
        variables[name] = value
    return variables


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language == "dotenv"], ids=lambda b: b.name)
def test_environment_file_example_sets_what_vidqueue_reads(block: Block) -> None:
    from vidqueue.config import load_settings

    variables = dotenv(block.code)
    default = load_settings(env={})
    for name, value in variables.items():
        if name.startswith("VIDQUEUE_"):
            assert load_settings(env={name: value}) != default, f"{name} changes no setting"
    settings = load_settings(env=variables)
    if "KLING_ACCESS_KEY" in variables:
        assert settings.default_engine == "kling"
