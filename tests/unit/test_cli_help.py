"""The `vidqueue` program's help and version, read as a new user reads them: every command's `--help`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

import vidqueue
from tests.support import run_cli
from vidqueue.cli import app

# Wide enough that no help line wraps, so each help text can be found whole.
WIDE = {"COLUMNS": "400", "TERMINAL_WIDTH": "400"}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*(=[A-Z][A-Z_]*)?$")  # MODEL, REQUEST_ID, KEY=VALUE


def commands(command: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group of the program, the program itself first, with the words that reach it."""
    command = command or typer.main.get_command(app)
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def help_of(path: tuple[str, ...]) -> str:
    out = CliRunner().invoke(app, [*path, "--help"], env=WIDE, prog_name="vidqueue")
    assert out.exit_code == 0, out.output
    return "\n".join(line.rstrip() for line in out.output.splitlines())


ALL = sorted(path for path, _ in commands())


def test_every_command_is_checked() -> None:
    assert {("submit",), ("list",), ("prune",), ("keys", "create"), ("webhooks", "secret"), ()} <= set(ALL)


def test_version_prints_the_package_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"vidqueue {vidqueue.__version__}\n"


@pytest.mark.parametrize("path", ALL, ids=lambda path: " ".join(path) or "vidqueue")
def test_no_help_shows_a_placeholder_for_a_flag_or_a_typed_one(path: tuple[str, ...]) -> None:
    text = help_of(path)
    assert "<bool>" not in text
    assert not re.search(r"<[a-z][a-z ]*>", text), text  # typer's <str>, <int>, <path>, <float range>
    assert not re.search(r"\{[A-Za-z_]+\}", text), text  # typer's {model_id} in the usage line


@pytest.mark.parametrize("path", ALL, ids=lambda path: " ".join(path) or "vidqueue")
def test_every_value_is_named_by_one_upper_case_word_in_help_and_usage(path: tuple[str, ...]) -> None:
    command = dict(commands())[path]
    text = help_of(path)
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    for param in command.get_params(typer.Context(command)):
        if getattr(param, "is_flag", False):
            assert not param.metavar, param.name
            continue
        assert PLACEHOLDER.match(param.metavar or ""), (param.name, param.metavar)
        if param.param_type_name == "argument":
            assert f" {param.metavar}" in usage, usage
        else:
            assert re.search(rf"{re.escape(param.opts[0])}\s.*\b{re.escape(param.metavar)}\b", text), param.name


@pytest.mark.parametrize("path", ALL, ids=lambda path: " ".join(path) or "vidqueue")
def test_every_help_text_is_shown_whole(path: tuple[str, ...]) -> None:
    # Rich markup would swallow words in square brackets ("[retention] days" showed as "days").
    command = dict(commands())[path]
    text = help_of(path)
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    texts += [sub.get_short_help_str(limit=400) for sub in getattr(command, "commands", {}).values()]
    for wanted in filter(None, texts):
        assert " ".join(wanted.split()) in text, wanted


def test_prune_help_gives_its_default_in_plain_words() -> None:
    text = help_of(("prune",))
    assert "(default: 30, or retention.days as configured)" in text
    assert "days, 30" not in text


def test_top_level_help_has_no_double_space_inside_a_sentence() -> None:
    for line in help_of(()).splitlines():
        words = line.strip("│╭╮╰╯─ ")
        # Columns are set apart by several spaces and start with a capital or a dash; a sentence never is.
        assert not re.search(r"\S {2,}[a-z(]", words), line
