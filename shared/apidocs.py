"""The interactive API page (Swagger UI), off unless ``API_DOCS_ENABLED`` turns it on.

Police networks are closed: the page's script and stylesheet come from the service itself,
out of the ``fastapi-offline`` package, never from a CDN. ``/api/openapi.json`` is always
served; only the page is optional.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/api/docs"
DOCS_STATIC_URL = "/api/docs/static"
SWAGGER_UI_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"


def mount_api_docs(app: FastAPI, *, enabled: bool) -> None:
    if not enabled:
        return
    app.mount(DOCS_STATIC_URL, StaticFiles(directory=SWAGGER_UI_DIR), name="api-docs-static")
    openapi_url = app.openapi_url or "/api/openapi.json"

    @app.get(DOCS_URL, include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC_URL}/favicon.png",
        )


def file_download(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for an operation that answers with a file, so that its OpenAPI declares the
    file's media type instead of FastAPI's default JSON (schemathesis checks the two agree)."""
    return {
        200: {
            "description": description,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    }


def attachment(name: str, *, fallback: str) -> str:
    """``Content-Disposition`` of a download: ``name`` (Chinese, RFC 5987-encoded) for browsers, and
    an ASCII ``fallback`` for the clients that read only the plain ``filename``."""
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"


def file_route(
    media_type: str, description: str, *, response_class: type[Response] = Response
) -> dict[str, Any]:
    """The route's ``response_class=`` and ``responses=`` for a file answer, which always go together:
    ``@router.get(path, tags=[...], **file_route(XLSX, "..."))``."""
    return {"response_class": response_class, "responses": file_download(media_type, description)}
