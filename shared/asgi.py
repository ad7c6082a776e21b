"""Plain ASGI middleware.

Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``) runs every
request through an extra task and memory streams; measured under load it cost
more than the complaint endpoint's own work, so the per-request concerns here
wrap the ASGI callables directly.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import structlog
from starlette.datastructures import MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logging import get_logger

log = get_logger(__name__)

CORRELATION_HEADER = "X-Correlation-Id"


class RequestContextMiddleware:
    """Binds a correlation id to every log line of a request, returns it, and logs the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = _header(scope, b"x-correlation-id") or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_with_correlation(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                MutableHeaders(scope=message)[CORRELATION_HEADER] = correlation_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_correlation)
        finally:
            # The path only: query strings can carry a phone number being searched for.
            log.info(
                "request",
                method=scope.get("method"),
                path=scope.get("path"),
                status=status["code"],
                ms=round((time.perf_counter() - started) * 1000, 1),
            )


class PathHeadersMiddleware:
    """Sets fixed response headers on every answer under a path prefix, errors included."""

    def __init__(self, app: ASGIApp, *, prefix: str, headers: dict[str, str]) -> None:
        self.app = app
        self.prefix = prefix
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    response_headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The session cookies intake sets (the access token, and whatever else of ours rides along).
SESSION_COOKIE_PREFIX = "sv_"
CROSS_SITE_REFUSAL = "请求来源不明：只接受本系统页面提交的操作，请从系统页面重新操作"


class SameOriginMiddleware:
    """Refuses a state change carried by the session cookie unless one of the four services sent it.

    A page of another site can make the browser post a form here with the cookie attached
    (SameSite is the only other defence); such a request names that site in ``Origin`` (or,
    from older browsers, ``Referer``). A request with a bearer token is not affected: no
    browser adds that header by itself.
    """

    def __init__(self, app: ASGIApp, *, origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(origin.rstrip("/").lower() for origin in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in STATE_CHANGING_METHODS:
            await self.app(scope, receive, send)
            return
        if _has_bearer(scope) or not _has_session_cookie(scope) or self._from_known_page(scope):
            await self.app(scope, receive, send)
            return
        log.warning("cross-site state change refused", path=scope.get("path"), method=scope.get("method"))
        body = json.dumps({"detail": CROSS_SITE_REFUSAL}, ensure_ascii=False).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _from_known_page(self, scope: Scope) -> bool:
        source = _header(scope, b"origin") or _header(scope, b"referer")
        if not source or source == "null":
            return False
        parts = urlsplit(source)
        if not parts.scheme or not parts.netloc:
            return False
        if f"{parts.scheme}://{parts.netloc}".lower() in self.origins:
            return True
        # The service's own pages, under whatever host name the browser reached it by.
        host = _header(scope, b"host")
        return host is not None and parts.netloc.lower() == host.lower()


def _has_bearer(scope: Scope) -> bool:
    authorization = _header(scope, b"authorization") or ""
    return authorization[:7].lower() == "bearer " and bool(authorization[7:].strip())


def _has_session_cookie(scope: Scope) -> bool:
    raw = _header(scope, b"cookie")
    if not raw:
        return False
    # The parser the endpoints read cookies with, so both see the same session cookie.
    return any(name.startswith(SESSION_COOKIE_PREFIX) for name in cookie_parser(raw))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


BODY_TOO_LARGE = "提交的内容过大"


class BodyLimitMiddleware:
    """Refuses a request body over its limit while it arrives, not after it was all received.

    The framework reads a multipart upload to its end (spooling it to disk) before the
    endpoint sees any of it, so a limit checked there still lets a client push gigabytes
    at the service.  A declared ``Content-Length`` over the limit is refused before a byte
    is read; a body that grows past it (chunked, or lying about its length) is refused the
    moment it does, and whatever the application answers afterwards is dropped.  Uploads
    (multipart) get their own, larger limit; the upload's own check of its exact size stays
    with the endpoint.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type = _header(scope, b"content-type") or ""
        limit = self.max_upload_bytes if content_type.startswith("multipart/") else self.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse_too_large(send, limit)
            return
        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not refused:
                    refused = True
                    await _refuse_too_large(send, limit)
                    # The application sees the client go away and stops reading.
                    return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counting_receive, send_unless_refused)
        except Exception:
            # The application may fail on the body cut short (a client disconnect); the client
            # already has its 413, so that failure is expected and not an error of the service.
            if not refused:
                raise
            log.info("request body over its limit refused", path=scope.get("path"), limit=limit)


async def _refuse_too_large(send: Send, limit: int) -> None:
    detail = f"{BODY_TOO_LARGE}：最多 {limit // (1024 * 1024) or 1} MB"
    body = json.dumps({"detail": detail}, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
