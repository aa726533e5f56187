"""The app factory: everything the API needs is passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from vidqueue import __version__
from vidqueue.api import media_routes, ops, routes, streams, videos
from vidqueue.api.auth import document_auth
from vidqueue.api.docs import install_docs
from vidqueue.api.errors import document_errors, install_error_handlers
from vidqueue.api.fastpath import FastPath
from vidqueue.api.limits import BodyLimit
from vidqueue.api.state import AppState
from vidqueue.catalog import Catalog
from vidqueue.config import Settings
from vidqueue.media.storage import Storage
from vidqueue.store import Store

DESCRIPTION = """\
A GMI Cloud-compatible video-generation request queue. Submit a prompt, get a request id, watch it go
`queued → processing → success`, download the MP4. Send `Authorization: Bearer <key>` on every call.
"""


CONSOLE = Path(__file__).parent / "console"


def create_app(settings: Settings, store: Store, storage: Storage, catalog: Catalog | None = None) -> FastAPI:
    """Build the ASGI app over a store, media storage and model catalog."""
    # /docs and /redoc come from install_docs, with assets served here rather than from a CDN.
    app = FastAPI(
        title="vidqueue",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        telemetry=None if settings.otel else {"tracing": False, "metrics": False, "logs": False},
    )
    registry, histogram = ops.new_registry(store)
    app.state.vq = AppState(
        settings=settings, store=store, storage=storage, catalog=catalog or Catalog(), registry=registry
    )
    # Each dialect answers errors in its own shape under its own paths.
    error_shapes = {videos.PREFIX: videos.openai_error}
    install_error_handlers(app, error_shapes)
    for i, prefix in enumerate(routes.BASE_PATHS):
        # Both base paths serve the same routes; the second is GMI's SDK path and is documented once.
        app.include_router(routes.router, prefix=prefix, tags=["request queue"], include_in_schema=i == 0)
        app.include_router(streams.router, prefix=prefix, tags=["request queue"], include_in_schema=i == 0)
    app.include_router(videos.router, prefix=videos.PREFIX, tags=["videos (/v1)"])
    app.include_router(media_routes.router)
    app.include_router(ops.router)
    # The web console: static files shipped in the package, talking to the API above like any client.
    app.mount("/ui", StaticFiles(directory=CONSOLE, html=True), name="console")
    # The server's root is where a person lands first: send them to the console.
    app.add_api_route("/", lambda: RedirectResponse("/ui/", status_code=307), methods=["GET"], include_in_schema=False)
    install_docs(app)
    if not settings.otel:
        # The plain submit and read, answered in front of FastAPI's routing (api/fastpath.py). With OpenTelemetry on,
        # every call goes through FastAPI, whose instrumentation makes the spans.
        app.add_middleware(FastPath, api=app, state=app.state.vq)
    # Our own cap rather than FastAPI's max_body_size: its 413 is plain text, this one the usual error body.
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes, shapes=error_shapes)
    app.add_middleware(ops.HttpMetrics, histogram=histogram)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            documented = document_auth(FastAPI.openapi(app), (*routes.BASE_PATHS, videos.PREFIX))
            app.openapi_schema = document_errors(documented)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
