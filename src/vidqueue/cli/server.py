"""The server and admin commands of the `vidqueue` program: serve, worker, prune, keys, webhooks."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer
from rich.table import Table

from vidqueue.cli import output as show
from vidqueue.config import Settings, load_settings
from vidqueue.errors import ConfigError, StoreDamaged, StoreUnavailable, Unavailable
from vidqueue.store import Store

log = logging.getLogger("vidqueue")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", metavar="FILE", envvar="VIDQUEUE_CONFIG", help="A vidqueue.toml file.", show_default=False
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        envvar="VIDQUEUE_DATA_DIR",
        help="Where the database and media live (default: ./vidqueue-data).",
        show_default=False,
    ),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        metavar="URL",
        envvar="VIDQUEUE_DATABASE_URL",
        help="A database URL (default: SQLite in the data dir).",
        show_default=False,
    ),
]

StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        metavar="WHERE",
        envvar="VIDQUEUE_STORAGE",
        help="Where media live: s3://bucket/prefix (AWS credentials from the standard variables; "
        "VIDQUEUE_S3_ENDPOINT_URL for MinIO, Ceph, R2) or a folder (default: the data dir).",
        show_default=False,
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one plain line to stderr (no markup, no wrapping) and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, overrides=overrides)
    except ConfigError as exc:
        fail(exc.message, 2)


def _store(settings: Settings) -> Store:
    from vidqueue.bootstrap import store_for

    try:
        return store_for(settings)
    except ConfigError as exc:
        fail(exc.message, 2)
    except StoreUnavailable as exc:
        fail(exc.message)


def serve(
    host: Annotated[
        str | None, typer.Option(envvar="VIDQUEUE_HOST", help="Address to listen on (default: 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(envvar="VIDQUEUE_PORT", help="Port to listen on (default: 8000).")] = None,
    data_dir: DataDirOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(
            envvar="VIDQUEUE_WORKERS", help="Worker processes to run beside the API; 0 = API only (default: 2)."
        ),
    ] = None,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    storage: StorageOpt = None,
    ssl_certfile: Annotated[
        Path | None,
        typer.Option(
            "--ssl-certfile",
            metavar="FILE",
            help="Serve HTTPS with this PEM certificate (chain); media URLs are then https. "
            "Needs --ssl-keyfile. (env: VIDQUEUE_SSL_CERTFILE)",
            show_default=False,
        ),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None,
        typer.Option(
            "--ssl-keyfile",
            metavar="FILE",
            help="The certificate's PEM private key (unencrypted). (env: VIDQUEUE_SSL_KEYFILE)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the API and its worker processes (SQLite and local files by default)."""
    import uvicorn

    from vidqueue.api import create_app
    from vidqueue.api.ops import RetentionMetrics, WebhookMetrics
    from vidqueue.api.serving import DrainingServer, guarded_http
    from vidqueue.api.state import AppState
    from vidqueue.api.webhooks import Dispatcher
    from vidqueue.bootstrap import catalog_for, describe_storage, describe_store, open_storage
    from vidqueue.logs import setup_logging
    from vidqueue.store.keys import new_api_key
    from vidqueue.worker.engines import build_engines, describe_routes
    from vidqueue.worker.retention import RetentionJob
    from vidqueue.worker.supervisor import Supervisor

    settings = _settings(
        config,
        host=host,
        port=port,
        data_dir=data_dir,
        workers=workers,
        database_url=database_url,
        storage=storage,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    setup_logging(settings.log_level)
    _check_tls(settings)
    # The port first: a busy one is named now, before the store is touched or any worker starts.
    sockets = _listen(settings)
    try:
        catalog = catalog_for(settings)
        # Refuse a routing the workers could not serve now, rather than let them die and restart forever.
        build_engines(settings, catalog, check_only=True)
    except ConfigError as exc:
        fail(exc.message, 2)
    store = _store(settings)
    try:
        if not store.list_keys():
            plaintext, record = new_api_key("default", "first key")
            store.add_key(record)
            typer.echo("Created an API key for organisation 'default' (shown only this once; keep it):")
            typer.echo(plaintext, color=False)
        store.ping()  # a file damaged past its schema and keys table is refused now, not at the first request
    except StoreUnavailable as exc:
        store.close()
        fail(exc.operator_message if isinstance(exc, StoreDamaged) else exc.message)
    if all(settings.engine_for(m.id, m.engines) == "emulator" for m in catalog):
        log.info(
            "every model is served by the emulator engine (set KLING_ACCESS_KEY and KLING_SECRET_KEY, or "
            "GMI_API_KEY, or route models in the config, for real videos)"
        )
    for line in describe_routes(settings, catalog):
        log.info("model %s", line)
    try:
        media = open_storage(settings)
    except (ConfigError, Unavailable) as exc:
        fail(exc.message, 2)
    api = create_app(settings, store, media, catalog)
    state: AppState = api.state.vq
    # Webhook deliveries go out from API processes (every one drains the same outbox), never from workers.
    dispatcher = Dispatcher(settings, store, media, metrics=WebhookMetrics(state.registry))
    dispatcher.start()
    supervisor = Supervisor(settings, store, settings.workers)
    supervisor.start()
    # Retention runs here, beside the API's registry, so /metrics counts what it pruned; with several API
    # machines each runs it, and the store hands every row to one of them only.
    retention = RetentionJob(store, media, settings.retention, report=RetentionMetrics(state.registry))
    retention.start()
    log.info(
        "serving on %s (store %s, media %s, %s)",
        settings.base_url,
        describe_store(settings),
        describe_storage(settings),
        _workers(settings.workers),
    )
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default action that kills this
    # process before the workers are stopped. This handler takes that re-raised signal, so the cleanup runs.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _after_uvicorn)
    # On SIGTERM submits and /readyz answer 503 for the drain while the workers finish within their grace (reads go
    # on meanwhile); then uvicorn closes. A second signal closes at once and has the workers hand back.
    server = DrainingServer(
        uvicorn.Config(
            api,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            # Limits on request heads (size, time), which uvicorn's default protocol lacks.
            http=guarded_http(settings.max_header_bytes, settings.header_timeout_s),
            ssl_certfile=settings.ssl_certfile,
            ssl_keyfile=settings.ssl_keyfile,
        ),
        api.state.vq,
        drain_s=settings.drain_s,
        on_stop=supervisor.request_stop,
        wait=lambda: supervisor.wait(supervisor.stop_timeout_s),
        on_ready=lambda: _say_ready(settings),
    )
    try:
        server.run(sockets)
        if not server.started:
            sys.exit(3)  # as uvicorn.run does when the app did not start
    finally:
        dispatcher.stop()
        retention.stop()
        supervisor.stop()
        store.close()


def _workers(count: int) -> str:
    return "no workers (API only)" if count == 0 else f"{count} worker{'' if count == 1 else 's'}"


def _say_ready(settings: Settings) -> None:
    """Tell the person who started `serve` where to go, on stdout, once the API listens."""
    from vidqueue.logs import write_pending

    write_pending()  # the start-up log lines (models, engines) come before these, not a batch later
    base = settings.base_url
    typer.echo(f"vidqueue is ready, with {_workers(settings.workers)}. Press Ctrl+C to stop.")
    typer.echo(f"  API      {base}")
    typer.echo(f"  Console  {base}/ui/")
    typer.echo(f"  Docs     {base}/docs")


def _listen(settings: Settings) -> list[socket.socket]:
    """The API's listening sockets, or one line on what keeps the port from being used (with the flag to change)."""
    from vidqueue.api.serving import listen

    host, port = settings.host, settings.port
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        return listen(host, port)
    except socket.gaierror:
        fail(f"cannot listen on {where}: the host name {host} does not resolve; choose another with --host", 2)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            fail(f"port {port} is already in use on {host} (another vidqueue serve?); {_port_hint(host, port)}", 2)
        if exc.errno == errno.EACCES:
            fail(
                f"cannot listen on {where}: permission denied (ports below 1024 need privileges); choose another "
                "with --port",
                2,
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            fail(f"cannot listen on {where}: {host} is not an address of this machine; choose another with --host", 2)
        fail(f"cannot listen on {where}: {exc.strerror or exc}", 2)


def _port_hint(host: str, port: int) -> str:
    """``choose another with --port``, naming the first free port above ``port`` when there is one near."""
    from vidqueue.api.serving import listen

    for candidate in range(port + 1, min(port + 20, 65535) + 1):
        try:
            for sock in listen(host, candidate):
                sock.close()
        except OSError:
            continue
        return f"choose another with --port, e.g. --port {candidate}"
    return "choose another with --port"


def _check_tls(settings: Settings) -> None:
    """Refuse, in one line, a certificate or key that cannot be loaded (uvicorn would fail with a traceback)."""
    if settings.ssl_certfile is None or settings.ssl_keyfile is None:
        return
    import ssl

    for path in (settings.ssl_certfile, settings.ssl_keyfile):
        if not path.is_file():
            fail(f"cannot read the TLS certificate or key {path}: no such file", 2)
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    except ssl.SSLError as exc:  # before OSError, of which it is a kind
        pair = f"the TLS certificate {settings.ssl_certfile} and key {settings.ssl_keyfile}"
        fail(f"{pair} do not load: {exc.reason or exc} (both PEM, the key unencrypted and matching the certificate)", 2)
    except OSError as exc:
        fail(f"cannot read the TLS certificate or key: {exc.strerror or exc}", 2)


def _after_uvicorn(signum: int, frame: FrameType | None) -> None:
    """Swallow the stop signal uvicorn raises again after its shutdown (and any during the workers' stop)."""
    log.info("stopping (signal %d)", signum)


def worker(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    storage: StorageOpt = None,
    engine: Annotated[
        list[str] | None,
        typer.Option(
            "--engine",
            metavar="NAME",
            help="Serve only models routed to this engine (emulator, kling, gmi, diffusers); repeat for more. "
            "(default: every engine)",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            metavar="DEVICE",
            envvar="VIDQUEUE_DEVICE",
            help="The diffusers engine's device, e.g. cuda:1: run one worker per GPU. (default: cuda if there is a "
            "GPU, else cpu)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run one worker alone against the same store and media storage (one per GPU for diffusers)."""
    from vidqueue.logs import setup_logging
    from vidqueue.worker.main import run_worker

    settings = _settings(
        config,
        data_dir=data_dir,
        database_url=database_url,
        storage=storage,
        **{"worker.engines": engine or None, "engines.diffusers.device": device},
    )
    setup_logging(settings.log_level)
    try:
        run_worker(settings)
    except (ConfigError, Unavailable) as exc:
        fail(exc.message)


def keys_create(
    org: Annotated[
        str, typer.Option(metavar="ORG", envvar="VIDQUEUE_ORG", help="The organisation the key belongs to.")
    ] = "default",
    name: Annotated[str, typer.Option(metavar="LABEL", help="A label for the key.")] = "",
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Create a key; the key itself is printed alone on the last line, and shown only this once."""
    from vidqueue.store.keys import new_api_key

    if not org.strip() or len(org) > 128:
        fail("--org must be 1 to 128 characters", 2)
    store = _store(_settings(config, data_dir=data_dir, database_url=database_url))
    plaintext, record = new_api_key(org, name or f"key for {org}")
    store.add_key(record)
    store.close()
    typer.echo(f"Created key {record.key_id} for organisation '{org}'. It is shown only this once:")
    typer.echo(plaintext)


def keys_list(
    org: Annotated[str | None, typer.Option(metavar="ORG", help="Only this organisation's keys.")] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """List keys (their ids and prefixes; keys themselves are never stored)."""
    import datetime as dt

    store = _store(_settings(config, data_dir=data_dir, database_url=database_url))
    table = Table("key id", "organisation", "name", "prefix", "created", "revoked")
    for key in store.list_keys(org):
        created = dt.datetime.fromtimestamp(key.created_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        revoked = (
            dt.datetime.fromtimestamp(key.revoked_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if key.revoked_at else ""
        )
        table.add_row(key.key_id, key.org_id, key.name, key.prefix + "…", created, revoked)
    store.close()
    show.print_table(table)


def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id from `keys list`.")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Revoke a key; calls with it are refused within seconds."""
    store = _store(_settings(config, data_dir=data_dir, database_url=database_url))
    revoked = store.revoke_key(key_id)
    store.close()
    if not revoked:
        fail(f"no active key with id {key_id}")
    typer.echo(f"Revoked {key_id}.")


def webhooks_secret(
    org: Annotated[str, typer.Option(metavar="ORG", help="The organisation whose deliveries the secret signs.")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Print the organisation's webhook signing secret (whsec_…), creating it on first use."""
    from vidqueue.api.webhooks import new_secret

    store = _store(_settings(config, data_dir=data_dir, database_url=database_url))
    secret = store.webhook_secret(org, new_secret)
    store.close()
    typer.echo(secret)


def prune(
    days: Annotated[
        float | None,
        typer.Option(
            metavar="DAYS",
            help="Delete requests that finished more than this many days ago; fractions allowed "
            "(default: 30, or retention.days as configured).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Delete old finished requests and their media now (`serve` also does it, every retention.interval_s)."""
    from vidqueue.bootstrap import open_storage
    from vidqueue.logs import setup_logging
    from vidqueue.worker.retention import prune_once

    settings = _settings(
        config, data_dir=data_dir, database_url=database_url, storage=storage, **{"retention.days": days}
    )
    setup_logging("warning")  # a media object that cannot be deleted is named on stderr
    store = _store(settings)
    try:
        media = open_storage(settings)
        counts = prune_once(store, media, settings.retention.max_age_s, settings.retention.batch)
    except (ConfigError, Unavailable, StoreUnavailable) as exc:
        fail(exc.message)
    finally:
        store.close()
    typer.echo(
        f"Pruned {counts.requests} requests and {counts.media} media objects "
        f"(finished more than {settings.retention.days:g} days ago)."
    )
    if counts.media_errors:
        fail(f"the media of {counts.media_errors} pruned requests could not be deleted (see above)")


def register(app: typer.Typer) -> None:
    """Add the server and admin commands to the `vidqueue` program."""
    for command in (serve, worker, prune):
        app.command(cls=show.Command, rich_help_panel="Server")(command)
    keys = typer.Typer(cls=show.CommandGroup, help="Create, list and revoke API keys.", no_args_is_help=True)
    keys.command("create", cls=show.Command)(keys_create)
    keys.command("list", cls=show.Command)(keys_list)
    keys.command("revoke", cls=show.Command)(keys_revoke)
    app.add_typer(keys, name="keys", rich_help_panel="Server")
    webhooks = typer.Typer(cls=show.CommandGroup, help="Webhook signing secrets.", no_args_is_help=True)
    webhooks.command("secret", cls=show.Command)(webhooks_secret)
    app.add_typer(webhooks, name="webhooks", rich_help_panel="Server")
