"""The `vidqueue` program: server and admin commands (``server``), client commands (``client``), their output."""

from __future__ import annotations

from typing import Annotated

import typer

from vidqueue import __version__
from vidqueue.cli import client, output, server

app = typer.Typer(
    name="vidqueue",
    cls=output.CommandGroup,
    help="A GMI Cloud-compatible video-generation request queue.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"vidqueue {__version__}")
        raise typer.Exit()


@app.callback()
def _program(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    # The program's own options; its help is the Typer's, above.
    pass


client.register(app)
server.register(app)


def main() -> None:
    """Entry point of the `vidqueue` program."""
    app()


__all__ = ["app", "main"]
