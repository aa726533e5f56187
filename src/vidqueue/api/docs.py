"""The interactive docs (Swagger UI at /docs, ReDoc at /redoc) served from an installed package, not a CDN.

FastAPI's own pages load their scripts, styles and favicon from jsDelivr and fastapi.tiangolo.com, so on a
machine without internet /docs stays blank. The same pages here point at the files the ``fastapi-offline``
package ships (Swagger UI 5 and ReDoc 2), mounted under /docs-assets. ReDoc's bundle also shows Redocly's logo from
their CDN, whatever its options; that one URL is swapped for an empty inline image when the bundle is served. The
pages carry a Content-Security-Policy that allows no other host, so nothing they load can leave the machine.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs-assets"
REDOC_LOGO = b'"https://cdn.redoc.ly/redoc/logo-mini.svg"'
EMPTY_IMAGE = b'"data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27/%3E"'
# The pages' own inline script and styles, and the assets beside them: no other origin.
CSP = "default-src 'self' 'unsafe-inline' data: blob:"


@cache
def redoc_bundle() -> bytes:
    """ReDoc's standalone bundle, with its one external image made local (read once, on first use)."""
    return (ASSETS / "redoc.standalone.js").read_bytes().replace(REDOC_LOGO, EMPTY_IMAGE)


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve /docs and /redoc with local assets (the app must be made with ``docs_url=None, redoc_url=None``)."""

    # Before the mount, which would otherwise answer this path with the file as shipped.
    @app.get(f"{ASSETS_URL}/redoc.standalone.js", include_in_schema=False)
    async def redoc_js() -> Response:
        headers = {"Cache-Control": "public, max-age=3600"}
        return Response(redoc_bundle(), media_type="text/javascript", headers=headers)

    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")
    oauth2_redirect_url = f"{docs_url}/oauth2-redirect"

    def assets(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS_URL}"

    def openapi_url(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{app.openapi_url}"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        base = assets(request)
        page = get_swagger_ui_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect_url,
            swagger_js_url=f"{base}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}/swagger-ui.css",
            swagger_favicon_url=f"{base}/favicon.png",
            # No badge from validator.swagger.io: it would send the schema's URL to a third party.
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = CSP
        return page

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        base = assets(request)
        page = get_redoc_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{base}/redoc.standalone.js",
            redoc_favicon_url=f"{base}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = CSP
        return page
