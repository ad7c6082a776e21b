"""The FastAPI application factory every service uses.

Start-up order matters: database first (readiness reports it), then NATS,
streams and consumers, then the outbox relay.  Shutdown reverses it and drains
the NATS connection so in-flight acks and publishes reach the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.asgi import RequestContextMiddleware
from shared.audit import trail, verify_chain
from shared.auth import Principal, Role, require_roles
from shared.bus import EventConsumer, Subscription, connect, ensure_streams, start_consumers
from shared.db import create_engine, create_session_factory, is_sqlite
from shared.errors import FieldProblems, field_problems_response, validation_error_response
from shared.groupcommit import GroupCommitter
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings
from shared.web import mount_web
from shared.workcalendar import WorkCalendar

log = get_logger(__name__)


@dataclass
class Runtime:
    settings: ServiceSettings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    calendar: WorkCalendar
    nc: NatsClient | None = None
    js: JetStreamContext | None = None
    relay: OutboxRelay | None = None
    writes: GroupCommitter | None = None
    consumers: list[EventConsumer] = field(default_factory=list)
    background: list[asyncio.Task[Any]] = field(default_factory=list)


StartupHook = Callable[[Runtime], Awaitable[None]]

POSTGRES_WRITE_TRANSACTIONS = 4


def create_service_app(
    *,
    settings: ServiceSettings,
    title: str,
    routers: Sequence[APIRouter],
    subscriptions: Sequence[Subscription] = (),
    on_startup: Sequence[StartupHook] = (),
    on_shutdown: Sequence[StartupHook] = (),
) -> FastAPI:
    configure_logging(service=settings.service_name, level=settings.log_level, json_output=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        runtime = Runtime(
            settings=settings,
            engine=engine,
            session_factory=create_session_factory(engine),
            calendar=WorkCalendar.load(settings.calendar_override_file, tz=settings.timezone),
        )
        # SQLite has one connection, so one shared transaction at a time.  PostgreSQL's pool
        # also serves the consumers and the relay; a few shared transactions at once carried
        # the most complaints there (measured with bench/pipeline.py).
        runtime.writes = GroupCommitter(
            runtime.session_factory,
            max_group=settings.write_group_size,
            concurrency=1 if is_sqlite(settings.database_url) else POSTGRES_WRITE_TRANSACTIONS,
        )
        app.state.runtime = runtime
        runtime.nc = await connect(settings.nats_url, name=settings.service_name)
        runtime.js = runtime.nc.jetstream()
        await ensure_streams(
            runtime.js,
            stream=settings.nats_stream,
            max_age_days=settings.nats_stream_max_age_days,
            replicas=settings.nats_replicas,
        )
        for hook in on_startup:
            await hook(runtime)
        runtime.consumers = await start_consumers(
            js=runtime.js,
            stream=settings.nats_stream,
            subscriptions=subscriptions,
            session_factory=runtime.session_factory,
            batch_size=settings.consumer_batch_size,
            max_deliver=settings.consumer_max_deliver,
            ack_wait=settings.consumer_ack_wait_seconds,
            transaction_size=settings.consumer_transaction_size,
        )
        runtime.relay = OutboxRelay(
            engine=engine,
            session_factory=runtime.session_factory,
            js=runtime.js,
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
        )
        runtime.relay.start()
        log.info("service started", consumers=[c.subscription.durable for c in runtime.consumers])
        try:
            yield
        finally:
            log.info("service stopping")
            for task in runtime.background:
                task.cancel()
            await asyncio.gather(*runtime.background, return_exceptions=True)
            for hook in on_shutdown:
                await hook(runtime)
            for consumer in runtime.consumers:
                await consumer.stop()
            await runtime.writes.close()
            await runtime.relay.stop()
            await runtime.nc.drain()
            await engine.dispose()
            log.info("service stopped")

    app = FastAPI(title=title, lifespan=lifespan, openapi_url="/api/openapi.json", docs_url="/api/docs")
    app.state.settings = settings
    app.add_middleware(RequestContextMiddleware)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(request, exc)

    @app.exception_handler(FieldProblems)
    async def on_field_problems(request: Request, exc: FieldProblems) -> JSONResponse:
        return field_problems_response(request, exc)

    @app.exception_handler(Exception)
    async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return JSONResponse(status_code=500, content={"detail": "服务器内部错误，请稍后重试"})

    health = APIRouter(tags=["health"])

    @health.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": settings.service_name}

    @health.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        runtime: Runtime | None = getattr(request.app.state, "runtime", None)
        checks = {"database": False, "bus": False}
        if runtime is not None:
            try:
                async with runtime.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                checks["database"] = True
            except Exception as exc:
                log.warning("readiness: database unreachable", error=str(exc))
            checks["bus"] = bool(runtime.nc is not None and runtime.nc.is_connected)
        ready = all(checks.values())
        return JSONResponse(status_code=200 if ready else 503, content={"ready": ready, **checks})

    app.include_router(health)
    app.include_router(audit_router)
    # Every service serves the shared stylesheet and scripts and accepts its siblings' pages (CORS).
    mount_web(app, settings)
    for router in routers:
        app.include_router(router)
    return app


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with runtime_of(request).session_factory() as session:
        yield session


async def get_write_groups(request: Request) -> GroupCommitter:
    writes = runtime_of(request).writes
    assert writes is not None, "the service has not started"
    return writes


def current_correlation_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get("correlation_id")
    return str(value) if value else None


audit_router = APIRouter(prefix="/api/v1", tags=["audit"])


@audit_router.get("/audit/{case_id}")
async def read_audit_trail(
    case_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(require_roles(Role.SUPERVISOR))],
) -> dict[str, Any]:
    """This service's part of a matter's audit trail, and whether its hash chain is intact."""
    structlog.contextvars.bind_contextvars(case_id=case_id)
    async with runtime_of(request).session_factory() as session:
        entries = await trail(session, case_id)
    return {
        "case_id": case_id,
        "service": request.app.state.settings.service_name,
        "chain_intact": verify_chain(entries),
        "entries": [
            {
                "action": e.action,
                "actor": e.actor,
                "reason": e.reason,
                "detail": e.detail,
                "at": e.at.isoformat(),
                "entry_hash": e.entry_hash,
            }
            for e in entries
        ],
    }
