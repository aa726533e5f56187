"""How the commands show things: help with one placeholder style; tables, plain lines and a live display."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from vidqueue.client import Model, Request

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

# Wide enough that no table is ever squeezed or wrapped: piped, a table is as wide as its content.
_UNBOUNDED = 100_000


def print_table(table: Table) -> None:
    """A table on stdout: fitted to a terminal; piped, whole (ids and URLs unbroken) and without padding."""
    if out.is_terminal:
        out.print(table)
        return
    text = io.StringIO()
    Console(file=text, width=_UNBOUNDED, highlight=False, color_system=None).print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in text.getvalue().splitlines()))
    sys.stdout.flush()


def print_line(text: str) -> None:
    """One line of plain text on stdout, never wrapped or read as markup."""
    out.print(text, markup=False, soft_wrap=True)


# -- help --------------------------------------------------------------------------------------------------


def _placeholders(params: list[Any]) -> list[Any]:
    """Give every parameter one kind of placeholder: none for a flag, else an upper-case word (``MODEL``)."""
    for param in params:
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""  # typer would show ``<bool>``, as if a flag took a value
        elif param.metavar is None:
            param.metavar = (param.name or "value").upper()
        if param.param_type_name == "argument":
            param.display_type_rich = _no_type  # the name is the placeholder; typer would add ``<str>``
    return params


def _no_type(ctx: Any) -> None:
    return None


class Command(TyperCommand):
    """A command whose help names every value the same way: ``submit [OPTIONS] MODEL``, ``--limit LIMIT``."""

    def get_params(self, ctx: Any) -> Any:
        """The parameters, the help option included, with their placeholders set."""
        return _placeholders(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """The usage line: ``MODEL`` when required, ``[MODEL]`` when not (typer would write ``{MODEL}``)."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = param.metavar if param.required else f"[{param.metavar}]"
            pieces.append(name if param.nargs == 1 else f"{name}...")
        return pieces


class CommandGroup(TyperGroup):
    """A group of commands whose own options (``--help``, ``--version``) show no placeholder either."""

    def get_params(self, ctx: Any) -> Any:
        """The group's parameters, the help option included, with their placeholders set."""
        return _placeholders(super().get_params(ctx))


# -- values ------------------------------------------------------------------------------------------------


def print_json(value: Any) -> None:
    """One JSON document on stdout, for scripts."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def dump(request: Request) -> dict[str, Any]:
    """A request as the server sent it (unknown fields kept)."""
    return request.model_dump(mode="json")


def when(seconds: int | None) -> str:
    """A Unix time as UTC text, or a dash."""
    if not seconds:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def age(seconds: int | None) -> str:
    """How long ago, briefly (``42s``, ``5m``, ``3h``, ``2d``)."""
    if not seconds:
        return "-"
    delta = max(0, int(time.time()) - seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta // size}{unit}"
    return f"{delta}s"


def state_line(request: Request) -> str:
    """One line about where a request stands."""
    text = f"{request.request_id}: {request.status}"
    if request.status == "queued" and request.queue_position:
        text += f" (position {request.queue_position})"
    elif request.status == "processing" and request.progress is not None:
        text += f" ({request.progress:.0f}%)"
    elif request.status == "failed":
        error = request.outcome.error if request.outcome else None
        code = error.code if error and error.code else "failed"
        text += f" ({code}): {request.error or (error.message if error else '') or ''}"
    return text


def models_table(models: Iterable[Model]) -> Table:
    """Models, a row each."""
    table = Table("model", "type", "host", "engine", "description")
    for m in models:
        table.add_row(m.model, m.model_type or "", m.host_type or "", m.engine or "", m.brief_description or "")
    return table


def parameters_table(model: Model) -> Table:
    """A model's parameters, a row each, with their rules."""
    table = Table("parameter", "type", "required", "default", "allowed", "description", title=model.model)
    for p in model.parameters:
        allowed = ""
        if p.options:
            allowed = ", ".join(str(o) for o in p.options)
        elif p.min is not None or p.max is not None:
            allowed = f"{_num(p.min)} to {_num(p.max)}" + (f", step {_num(p.step)}" if p.step else "")
        elif p.max_length is not None:
            allowed = f"up to {p.max_length} characters"
        default = "" if p.default is None else json.dumps(p.default, ensure_ascii=False)
        table.add_row(p.name, p.type or "", "yes" if p.required else "no", default, allowed, p.description or "")
    return table


def _num(value: float | None) -> str:
    return "…" if value is None else f"{value:g}"


def requests_table(requests: Iterable[Request]) -> Table:
    """Requests, a row each, newest first as the server lists them."""
    table = Table("request id", "model", "status", "progress", "position", "age")
    for r in requests:
        progress = f"{r.progress:.0f}%" if r.progress is not None else ""
        table.add_row(r.request_id, r.model or "", r.status, progress, str(r.queue_position or ""), age(r.created_at))
    return table


def request_table(request: Request) -> Table:
    """One request's fields, a row each."""
    table = Table("field", "value", show_header=False, box=None)
    rows: list[tuple[str, Any]] = [
        ("request id", request.request_id),
        ("model", request.model),
        ("status", request.status),
        ("progress", f"{request.progress:.0f}%" if request.progress is not None else None),
        ("queue position", request.queue_position),
        ("created", when(request.created_at)),
        ("started", when(request.processing_at) if request.processing_at else None),
        ("finished", when(request.finished_at) if request.finished_at else None),
        ("worker", request.qworker_id),
        ("attempts", request.attempts),
        ("error", request.error),
        ("payload", json.dumps(_short(request.payload), ensure_ascii=False)),
    ]
    outcome = request.outcome
    if outcome is not None:
        if outcome.video is not None:
            v = outcome.video
            rows.append(("video", f"{v.width}x{v.height}, {v.duration:g} s, {v.fps:g} fps, {v.bytes} bytes"))
        for i, url in enumerate(outcome.urls):
            rows.append((f"url {i}" if len(outcome.urls) > 1 else "url", url))
        if outcome.thumbnail_image_url:
            rows.append(("thumbnail", outcome.thumbnail_image_url))
    for name, value in rows:
        if value not in (None, ""):
            table.add_row(name, str(value))
    return table


def _short(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload with long strings (base64 images) cut, for people to read."""
    cut = {k: f"{v[:60]}… ({len(v)} chars)" for k, v in payload.items() if isinstance(v, str) and len(v) > 200}
    return {**payload, **cut}


class Watch:
    """Shows a request's progress and a download: a live display on a terminal, plain lines otherwise."""

    def __init__(self, *, live: bool, quiet: bool = False) -> None:
        self.quiet = quiet
        self._last = ""
        self._live: Live | None = None
        self._work = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"), TimeElapsedColumn()
        )
        self._transfer = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()
        )
        self._task: TaskID | None = None
        self._download: TaskID | None = None
        if live and not quiet:
            self._live = Live(Group(self._work, self._transfer), console=err, refresh_per_second=8)

    def __enter__(self) -> Watch:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()

    def request(self, request: Request) -> None:
        """Show a request's new state."""
        if self.quiet:
            return
        if self._live is None:
            line = state_line(request)
            if line != self._last:
                err.print(line, markup=False, soft_wrap=True)
                self._last = line
            return
        detail = request.status
        if request.status == "queued" and request.queue_position:
            detail = f"queued, position {request.queue_position}"
        elif request.progress is not None:
            detail = f"{request.status} {request.progress:.0f}%"
        if self._task is None:
            self._task = self._work.add_task(request.request_id, total=100, detail=detail)
        self._work.update(self._task, completed=request.progress or 0.0, detail=detail)

    def bytes(self, done: int, total: int | None) -> None:
        """Show a download's progress (plain output says only where the file went, once it is there)."""
        if self._live is None:
            return
        if self._download is None:
            self._download = self._transfer.add_task("download", total=total)
        self._transfer.update(self._download, completed=done, total=total)
