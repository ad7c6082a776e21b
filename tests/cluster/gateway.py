"""An SMS gateway stand-in that records every POST it receives, in the shape feedback sends:
``{"to", "text", "reference"}`` with an ``Idempotency-Key`` header (services/feedback/sending.py).

Like a real gateway it sends a key once: a repeated key is acknowledged and counted, not sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.support import serving


@dataclass
class SmsGateway:
    url: str = ""
    posts: list[dict[str, Any]] = field(default_factory=list)  # every POST, repeats included
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # Idempotency-Key -> first body

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/sms")
        async def sms(request: Request) -> JSONResponse:
            body = await request.json()
            key = request.headers.get("Idempotency-Key")
            self.posts.append({**body, "key": key})
            if key is None:
                return JSONResponse(status_code=400, content={"error": "Idempotency-Key required"})
            if key in self.sent:
                return JSONResponse(status_code=200, content={"id": key, "duplicate": True})
            self.sent[key] = body
            return JSONResponse(status_code=200, content={"id": key})

        return app


@contextlib.asynccontextmanager
async def running_gateway() -> AsyncIterator[SmsGateway]:
    gateway = SmsGateway()
    async with serving(gateway.app(), name="sms-gateway") as port:
        gateway.url = f"http://127.0.0.1:{port}/sms"
        yield gateway
