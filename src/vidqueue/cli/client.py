"""The client commands of the `vidqueue` program: models, submit, status, list, cancel, wait, download.

They use only the SDK (``vidqueue.client``), so they work against any vidqueue server and against GMI Cloud.
Exit codes: 0 success, 1 the request failed or was cancelled, 2 usage or validation error, 3 authentication,
4 not found, 5 server or network error.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from vidqueue.cli import output as show
from vidqueue.client import (
    AuthenticationError,
    Client,
    ConflictError,
    MissingAPIKey,
    NotFoundError,
    Request,
    RequestCancelled,
    RequestFailed,
    RequestNotFinished,
    TimeoutError,
    ValidationError,
    VidqueueError,
)

EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_SERVER = 1, 2, 3, 4, 5

BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        metavar="URL",
        envvar="VIDQUEUE_BASE_URL",
        help="The server (default: http://127.0.0.1:8000; https://console.gmicloud.ai for GMI Cloud).",
        show_default=False,
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        metavar="KEY",
        envvar="VIDQUEUE_API_KEY",
        help="The API key (default: $VIDQUEUE_API_KEY, else $GMI_API_KEY).",
        show_default=False,
        show_envvar=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout, for scripts.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display on stderr.")]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        help="Stop waiting after this many seconds, then exit 5 (default: 3600).",
        min=0.001,
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", metavar="FILE", help="Save the video here (implies --wait).", show_default=False),
]
IdArg = Annotated[str, typer.Argument(help="The request id.", show_default=False)]


def _exit(message: str, code: int) -> NoReturn:
    show.err.print(f"error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _session(base_url: str | None, api_key: str | None, json_out: bool = False) -> Iterator[Client]:
    """A client for one command, with the SDK's exceptions turned into one clear message and the exit code."""
    with Client(base_url, api_key) as client:
        try:
            yield client
        except ValidationError as exc:
            lines = [str(d) for d in exc.details] or [exc.message]
            if exc.details and exc.message and len(exc.details) > 1:
                lines.insert(0, exc.message)
            _exit("\n  ".join(lines), EXIT_USAGE)
        except MissingAPIKey:  # the SDK's own words name its arguments; these name the flag
            _exit("no API key: pass --api-key or set VIDQUEUE_API_KEY", EXIT_AUTH)
        except AuthenticationError as exc:
            _exit(exc.message, EXIT_AUTH)
        except NotFoundError as exc:
            _exit(exc.message, EXIT_NOT_FOUND)
        except ConflictError as exc:
            _exit(exc.message, EXIT_USAGE)
        except (RequestFailed, RequestCancelled) as exc:
            if json_out:
                show.print_json(show.dump(exc.request))
            _exit(str(exc), EXIT_FAILED)
        except RequestNotFinished as exc:
            _exit(f"{exc}; wait for it first (`vidqueue wait {exc.request.request_id}`)", EXIT_FAILED)
        except TimeoutError as exc:
            if json_out and exc.request is not None:
                show.print_json(show.dump(exc.request))
            _exit(exc.message, EXIT_SERVER)
        except VidqueueError as exc:  # server errors, rate limits, the network, answers that cannot be read
            _exit(str(exc), EXIT_SERVER)
        except ValueError as exc:  # the SDK refusing an argument, e.g. an id with a slash in it
            _exit(str(exc), EXIT_USAGE)
        except OSError as exc:  # saving the video: a full disk, no permission
            _exit(f"could not save the video: {exc}", EXIT_USAGE)
        except KeyboardInterrupt:
            _exit("interrupted; a request already submitted keeps going on the server", 130)


def _check_output(output: Path | None) -> None:
    """Refuse an --output that cannot be written, before anything is submitted or waited for."""
    if output is None:
        return
    if output.is_dir():
        _exit(f"--output: {output} is a directory; name the file, e.g. {output / 'video.mp4'}", EXIT_USAGE)
    parent = output.parent
    if not parent.is_dir():
        _exit(f"--output: the directory {parent} does not exist", EXIT_USAGE)


def _live() -> bool:
    return show.err.is_terminal


def _follow(
    client: Client,
    request: Request | str,
    *,
    wait: bool,
    output: Path | None,
    timeout: float | None,
    json_out: bool,
    quiet: bool,
) -> None:
    """Wait for a request (when asked) and save its video (when asked), then print how it ended."""
    path: Path | None = None
    with show.Watch(live=_live(), quiet=quiet) as watch:
        if isinstance(request, Request):
            watch.request(request)
        done = client.wait(request, timeout=timeout, on_progress=watch.request) if wait else client.get(request)
        if output is not None:
            path = client.download(done, output, on_progress=watch.bytes)
    # Printed once the live display is gone, so the two never share a line of the terminal.
    if json_out:
        show.print_json(show.dump(done))
    elif path is not None:
        show.print_line(f"saved {path} ({path.stat().st_size} bytes)")
    else:
        show.print_table(show.request_table(done))


# -- commands ----------------------------------------------------------------------------------------------


def models(base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None, json_out: JsonOpt = False) -> None:
    """List the models the server offers."""
    with _session(base_url, api_key) as client:
        found = client.models()
        if json_out:
            show.print_json([m.model_dump(mode="json", exclude_none=True) for m in found])
        else:
            show.print_table(show.models_table(found))


def model(
    model_id: Annotated[
        str, typer.Argument(metavar="MODEL", help="The model id, e.g. kling-v2-5-turbo.", show_default=False)
    ],
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show one model: its parameters, their defaults and rules."""
    with _session(base_url, api_key) as client:
        found = client.model(model_id)
        if json_out:
            show.print_json(found.model_dump(mode="json", exclude_none=True))
            return
        if found.brief_description:
            show.print_line(found.brief_description)
        show.print_table(show.parameters_table(found))


def submit(
    model_id: Annotated[str, typer.Argument(metavar="MODEL", help="The model id.", show_default=False)],
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", metavar="TEXT", help="What the video shows.")] = None,
    negative_prompt: Annotated[
        str | None, typer.Option("--negative-prompt", metavar="TEXT", help="What to keep out.")
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            "--image", metavar="IMAGE", help="A first frame: a local file (sent as base64) or an http(s) URL."
        ),
    ] = None,
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-P",
            help="Another payload field, KEY=VALUE (repeatable); VALUE is read as JSON when it is JSON.",
            metavar="KEY=VALUE",
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait until the request ends.")] = False,
    output: OutputOpt = None,
    priority: Annotated[int | None, typer.Option(help="Higher runs sooner, within your organisation.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(metavar="KEY", help="Submitting again with the same key gives the same request.")
    ] = None,
    timeout: TimeoutOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Submit a request; prints its id (or, with --wait, how it ended)."""
    payload = _payload(prompt, negative_prompt, image, params or [])
    _check_output(output)
    with _session(base_url, api_key, json_out) as client:
        created = client.submit(model_id, payload, idempotency_key=idempotency_key, priority=priority)
        if not (wait or output):
            if json_out:
                show.print_json(show.dump(created))
            else:
                show.print_line(created.request_id)
                if not quiet:
                    show.err.print(show.state_line(created), markup=False, soft_wrap=True)
            return
        _follow(client, created, wait=True, output=output, timeout=timeout, json_out=json_out, quiet=quiet)


def status(
    request_id: IdArg, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None, json_out: JsonOpt = False
) -> None:
    """Show a request: status, progress, timestamps, result URLs."""
    with _session(base_url, api_key) as client:
        request = client.get(request_id)
        if json_out:
            show.print_json(show.dump(request))
        else:
            show.print_table(show.request_table(request))


def list_requests(
    model_id: Annotated[
        str | None, typer.Option("--model", metavar="MODEL", help="Only this model's requests.")
    ] = None,
    status_filter: Annotated[
        str | None,
        typer.Option(
            "--status", metavar="STATUS", help="Only requests in this status (queued, processing, success, …)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many.", min=1)] = 20,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List your organisation's requests, newest first."""
    with _session(base_url, api_key) as client:
        found: list[Request] = []
        for request in client.list(model_id=model_id, status=status_filter, page_size=min(limit, 100)):
            found.append(request)
            if len(found) >= limit:
                break
        if json_out:
            show.print_json([show.dump(r) for r in found])
        else:
            show.print_table(show.requests_table(found))


def cancel(
    request_id: IdArg, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None, json_out: JsonOpt = False
) -> None:
    """Cancel a request (a finished one stays as it was)."""
    with _session(base_url, api_key) as client:
        request = client.cancel(request_id)
        if json_out:
            show.print_json(show.dump(request))
        else:
            show.print_line(show.state_line(request))


def wait_command(
    request_id: IdArg,
    output: OutputOpt = None,
    timeout: TimeoutOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Wait until a request ends; exit 0 on success, 1 if it failed or was cancelled."""
    _check_output(output)
    with _session(base_url, api_key, json_out) as client:
        _follow(client, request_id, wait=True, output=output, timeout=timeout, json_out=json_out, quiet=quiet)


def download(
    request_id: IdArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE", help="Where to save the video.", show_default=False)
    ],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for the request to finish first.")] = False,
    timeout: TimeoutOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Save a finished request's video (resumes after a broken connection)."""
    _check_output(output)
    with _session(base_url, api_key, json_out) as client:
        _follow(client, request_id, wait=wait, output=output, timeout=timeout, json_out=json_out, quiet=quiet)


def _payload(prompt: str | None, negative_prompt: str | None, image: str | None, params: list[str]) -> dict[str, Any]:
    """The payload from the flags; ``--param`` may set any field, dotted keys nest (``cfg.scale=0.5``)."""
    payload: dict[str, Any] = {}
    if prompt is not None:
        payload["prompt"] = prompt
    if negative_prompt is not None:
        payload["negative_prompt"] = negative_prompt
    if image is not None:
        payload["image"] = _image(image)
    for item in params:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            _exit(f"--param {item!r}: must be KEY=VALUE", EXIT_USAGE)
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text  # a bare word is a string: mode=pro
        *parents, leaf = key.strip().split(".")
        node = payload
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                _exit(f"--param {item!r}: {part} is already set to a value", EXIT_USAGE)
            node = child
        node[leaf] = value
    return payload


def _image(value: str) -> str:
    """An image argument as the payload wants it: URLs as given, a local file as raw base64."""
    if value.startswith(("http://", "https://", "data:")):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        _exit(f"--image: {value} is neither an http(s) URL nor a readable file", EXIT_USAGE)
    # Raw base64 (no data: prefix) is what Kling documents; vidqueue accepts it too.
    return base64.b64encode(path.read_bytes()).decode("ascii")


def register(app: typer.Typer) -> None:
    """Add the client commands to the `vidqueue` program."""
    for name, command in (
        ("models", models),
        ("model", model),
        ("submit", submit),
        ("status", status),
        ("list", list_requests),
        ("cancel", cancel),
        ("wait", wait_command),
        ("download", download),
    ):
        app.command(name, cls=show.Command, rich_help_panel="Client")(command)
