"""A request body over its limit is refused while it arrives, not after it was all received."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request

from shared.asgi import BodyLimitMiddleware

LIMIT = 64 * 1024
UPLOAD_LIMIT = 256 * 1024


def small_app() -> tuple[FastAPI, list[int]]:
    app = FastAPI()
    read: list[int] = []

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            read.append(size)
        return {"size": size}

    app.add_middleware(BodyLimitMiddleware, max_body_bytes=LIMIT, max_upload_bytes=UPLOAD_LIMIT)
    return app, read


async def post(app: FastAPI, **kwargs: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/echo", **kwargs)  # type: ignore[arg-type]


async def test_a_body_within_the_limit_passes() -> None:
    app, _ = small_app()
    response = await post(app, content=b"x" * LIMIT)
    assert response.status_code == 200
    assert response.json() == {"size": LIMIT}


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    app, read = small_app()
    response = await post(app, content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert "提交的内容过大" in response.json()["detail"]
    assert read == []


async def test_a_streamed_body_is_cut_off_when_it_passes_the_limit() -> None:
    app, read = small_app()
    chunk = b"y" * 16 * 1024
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):  # 16 MB if nobody stopped it
            sent += len(chunk)
            yield chunk

    response = await post(app, content=endless())
    assert response.status_code == 413
    # The application never saw more than the limit.
    assert not read or read[-1] <= LIMIT


async def test_uploads_have_their_own_larger_limit() -> None:
    app, _ = small_app()
    files = {"file": ("a.bin", b"z" * (LIMIT * 2), "application/octet-stream")}
    assert (await post(app, files=files)).status_code == 200
    files = {"file": ("a.bin", b"z" * (UPLOAD_LIMIT + 1), "application/octet-stream")}
    assert (await post(app, files=files)).status_code == 413
