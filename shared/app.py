"""The FastAPI application factory every service uses.

Start-up waits only for the database: the service answers HTTP at once, and what it
writes meanwhile waits in the outbox.  The bus comes up in the background (connect,
however long NATS takes, then streams, consumers and the outbox relay), and ``/readyz``
says it is missing until then.  Every background loop is a ``BackgroundWorker`` the app
starts, watches (a stuck one is restarted) and stops within ``stop_timeout_seconds``;
shutdown then drains the NATS connection, within a bound too, so in-flight acks and
publishes reach the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.apidocs import mount_api_docs
from shared.asgi import BodyLimitMiddleware, RequestContextMiddleware
from shared.audit import trail, verify_chain
from shared.audit_anchor import runtime_checkpoint_worker
from shared.auth import Principal, Role, require_roles, watch_revocations
from shared.bus import EventConsumer, Subscription, connect, ensure_streams, start_consumers
from shared.db import create_engine, create_session_factory
from shared.db_statistics import statistics_worker
from shared.deadletters import count_parked
from shared.deadletters_api import dead_letter_box, dead_letters_page_router, dead_letters_router
from shared.errors import (
    DomainError,
    FieldProblems,
    declare_field_errors,
    domain_error_response,
    field_problems_response,
    validation_error_response,
)
from shared.logging import configure_logging, get_logger
from shared.metrics import (
    RequestMetricsMiddleware,
    ServiceMetrics,
    bind_service,
    count_database_work,
    metrics_router,
)
from shared.natsauth import credentials_from
from shared.outbox import OutboxRelay, oldest_unpublished_age
from shared.settings import ServiceSettings
from shared.web import mount_web
from shared.worker import BackgroundWorker

log = get_logger(__name__)

_T = TypeVar("_T")


@dataclass
class Runtime:
    settings: ServiceSettings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    nc: NatsClient | None = None
    js: JetStreamContext | None = None
    relay: OutboxRelay | None = None
    consumers: list[EventConsumer] = field(default_factory=list)
    # The workers the service's start-up hooks added; the bus's own (consumers, relay) come later.
    workers: list[BackgroundWorker] = field(default_factory=list)
    # Streams, consumers and relay are set up (the connection itself may still come and go).
    bus_ready: bool = False
    # The service's durable consumers: whose parked events are its dead letters.
    durables: tuple[str, ...] = ()
    workers_started: bool = False

    def add_worker(self, worker: BackgroundWorker) -> None:
        """Register a background loop: the app starts it, watches it and stops it on shutdown."""
        self.supervise(worker)
        self.workers.append(worker)
        if self.workers_started:
            worker.start()

    def supervise(self, worker: BackgroundWorker) -> None:
        # A step running past its own timeout ignored its cancellation; one running past the
        # operator's bound as well is stuck.
        worker.stuck_after = max(worker.stuck_after, self.settings.worker_stuck_seconds)

    def supervised_workers(self) -> list[BackgroundWorker]:
        """Every background loop whose health counts: the added ones, the consumers', the relay's."""
        bus_workers = [consumer.worker for consumer in self.consumers if consumer.worker is not None]
        relay = [self.relay.worker] if self.relay is not None else []
        return [*self.workers, *bus_workers, *relay]


StartupHook = Callable[[Runtime], Awaitable[None]]


def create_service_app(
    *,
    settings: ServiceSettings,
    title: str,
    routers: Sequence[APIRouter],
    subscriptions: Sequence[Subscription] = (),
    on_startup: Sequence[StartupHook] = (),
    on_shutdown: Sequence[StartupHook] = (),
) -> FastAPI:
    """The app every service runs: its lifespan, middleware, error mapping and shared routes.

    Longer than the usual limit on purpose: the lifespan closes over ``settings`` and the
    hooks, and start-up, shutdown, middleware order and the one place domain errors become
    HTTP answers read best together, in the order they take effect.
    """
    configure_logging(service=settings.service_name, level=settings.log_level, json_output=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The workers started from here count their events as this service's (shared.metrics).
        bind_service(settings.service_name)
        engine = create_engine(
            settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
        )
        count_database_work(engine, service=settings.service_name)
        runtime = Runtime(
            settings=settings,
            engine=engine,
            session_factory=create_session_factory(engine),
            durables=tuple(subscription.durable for subscription in subscriptions),
        )
        app.state.runtime = runtime
        # Every service refuses revoked tokens: its list follows the revocation bucket.
        runtime.add_worker(watch_revocations(app, runtime))
        # Every service anchors its audit chain: checkpoints of its head kept on NATS.
        runtime.add_worker(runtime_checkpoint_worker(runtime))
        # On SQLite the service keeps the query planner's statistics itself.
        statistics = statistics_worker(engine, hours=settings.sqlite_analyze_hours)
        if statistics is not None:
            runtime.add_worker(statistics)
        for hook in on_startup:
            await hook(runtime)
        runtime.workers_started = True
        for worker in runtime.workers:
            worker.start()
        supervision = [
            asyncio.create_task(_start_bus(runtime, subscriptions), name="bus-start-up"),
            asyncio.create_task(_restart_stuck_workers(runtime), name="worker-watchdog"),
        ]
        # What start-up made (modules, models, statements, the organisation) lives as long as the
        # process: out of the collector's sight, a full collection no longer walks it, and such a
        # collection paused a request for about 100 ms every few (bench/scale.py).
        gc.collect()
        gc.freeze()
        log.info("service started; the bus connects in the background")
        try:
            yield
        finally:
            log.info("service stopping")
            await _stop_workers(runtime, supervision=supervision, on_shutdown=on_shutdown)
            await _stop_bus(runtime)
            await engine.dispose()
            log.info("service stopped")

    app = FastAPI(
        title=title, lifespan=lifespan, openapi_url="/api/openapi.json", docs_url=None, redoc_url=None
    )
    declare_field_errors(app)
    mount_api_docs(app, enabled=settings.api_docs_enabled)
    app.state.settings = settings
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.upload_limit_bytes,
    )
    app.state.metrics = ServiceMetrics(service=settings.service_name)
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(request, exc)

    @app.exception_handler(FieldProblems)
    async def on_field_problems(request: Request, exc: FieldProblems) -> JSONResponse:
        return field_problems_response(request, exc)

    @app.exception_handler(DomainError)
    async def on_domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return domain_error_response(request, exc)

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
        if runtime is None:
            content: dict[str, Any] = {
                "ready": False,
                "database": False,
                "bus": False,
                "reasons": ["starting"],
            }
        else:
            content = await _readiness(runtime)
        return JSONResponse(status_code=200 if content["ready"] else 503, content=content)

    app.include_router(health)
    app.include_router(metrics_router)
    app.include_router(audit_router)
    # Every service's parked events, for a supervisor to replay or discard (shared.deadletters).
    app.include_router(dead_letters_router)
    app.include_router(dead_letters_page_router)
    # Every service serves the shared stylesheet and scripts and accepts its siblings' pages (CORS).
    mount_web(app, settings)
    for router in routers:
        app.include_router(router)
    return app


async def _start_bus(runtime: Runtime, subscriptions: Sequence[Subscription]) -> None:
    """Connect (for as long as NATS takes to come), then streams, consumers and the relay."""
    settings = runtime.settings
    runtime.nc = NatsClient()
    await connect(
        settings.nats_url,
        name=settings.service_name,
        client=runtime.nc,
        credentials=credentials_from(settings),
    )
    js = runtime.js = runtime.nc.jetstream(timeout=settings.nats_request_timeout_seconds)
    await _until_done(
        "ensure streams",
        partial(
            ensure_streams,
            js,
            stream=settings.nats_stream,
            max_age_days=settings.nats_stream_max_age_days,
            replicas=settings.nats_replicas,
        ),
    )
    # One at a time, so a consumer that started is kept when the next one has to be tried again.
    for subscription in subscriptions:
        started = await _until_done(
            f"start consumer {subscription.durable}",
            partial(
                start_consumers,
                js=js,
                stream=settings.nats_stream,
                subscriptions=[subscription],
                session_factory=runtime.session_factory,
                batch_size=settings.consumer_fetch_batch_size,
                max_deliver=settings.consumer_max_deliver,
                ack_wait=settings.consumer_ack_wait_seconds,
                slice_size=settings.consumer_slice_size,
                guard=settings.batching_guard,
            ),
        )
        for consumer in started:
            if consumer.worker is not None:
                runtime.supervise(consumer.worker)
        runtime.consumers.extend(started)
    runtime.relay = OutboxRelay(
        engine=runtime.engine,
        session_factory=runtime.session_factory,
        js=js,
        nc=runtime.nc,
        batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
        publish_timeout=settings.outbox_publish_timeout_seconds,
        lease_seconds=settings.outbox_lease_seconds,
        producer=settings.service_name,
    )
    runtime.supervise(runtime.relay.worker)
    runtime.relay.worker.start()
    runtime.bus_ready = True
    log.info("bus ready", consumers=[c.subscription.durable for c in runtime.consumers])


async def _until_done(what: str, operation: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``operation`` until it succeeds: JetStream may refuse requests for a while after a (re)start."""
    failures = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            failures += 1
            delay = min(0.5 * 2 ** (failures - 1), 5.0)
            log.warning("bus start-up step failed; will retry", step=what, error=repr(exc), retry_in=delay)
            await asyncio.sleep(delay)


async def _restart_stuck_workers(runtime: Runtime) -> None:
    interval = max(0.2, min(5.0, runtime.settings.worker_stuck_seconds / 4))
    while True:
        await asyncio.sleep(interval)
        for worker in runtime.supervised_workers():
            health = worker.health
            if not health.stuck:
                continue
            log.error(
                "background worker stuck; restarting it",
                worker=worker.name,
                stuck_after=worker.stuck_after,
                last_error=health.last_error,
            )
            try:
                await worker.restart(timeout=runtime.settings.stop_timeout_seconds)
            except Exception:  # the watchdog itself must outlive whatever went wrong
                log.exception("restarting a background worker failed", worker=worker.name)


# Shutdown shares ``stop_timeout_seconds``: half for the workers and consumers (stopped together),
# a quarter for the relay's last publishes, an eighth each for the NATS drain and the close after it.


async def _stop_workers(
    runtime: Runtime, *, supervision: list[asyncio.Task[None]], on_shutdown: Sequence[StartupHook]
) -> None:
    """Stop the bus start-up, the watchdog, the consumers and the service's own workers."""
    budget = runtime.settings.stop_timeout_seconds / 2
    for task in supervision:
        task.cancel()
    await asyncio.gather(
        *(worker.stop(timeout=budget) for worker in runtime.workers),
        *(consumer.stop(timeout=budget) for consumer in runtime.consumers),
        asyncio.wait(supervision, timeout=budget),
        return_exceptions=True,
    )
    for hook in on_shutdown:
        await hook(runtime)


async def _stop_bus(runtime: Runtime) -> None:
    """Stop the relay (it publishes what it can meanwhile), then drain the connection, or close it."""
    stop_timeout = runtime.settings.stop_timeout_seconds
    if runtime.relay is not None:
        await runtime.relay.worker.stop(timeout=stop_timeout / 4)
    nc = runtime.nc
    if nc is None or nc.is_closed:
        return
    try:
        if not nc.is_connected:
            raise ConnectionError("not connected")
        await asyncio.wait_for(nc.drain(), timeout=stop_timeout / 8)
    except Exception as exc:
        log.warning("nats drain did not finish; closing the connection", error=repr(exc))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), timeout=stop_timeout / 8)


async def _readiness(runtime: Runtime) -> dict[str, Any]:
    settings = runtime.settings
    reasons: list[str] = []
    database, outbox_age = False, None
    try:
        async with runtime.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            database = True
            outbox_age = await oldest_unpublished_age(conn)
    except Exception as exc:
        log.warning("readiness: database unreachable", error=str(exc))
        reasons.append("database unreachable")
    connected = runtime.nc is not None and runtime.nc.is_connected
    if not connected:
        reasons.append("NATS is not connected")
    elif not runtime.bus_ready:
        reasons.append("streams and consumers are being set up")
    if outbox_age is not None and outbox_age > settings.outbox_max_age_seconds:
        reasons.append(
            f"oldest unpublished outbox row is {outbox_age:.0f} s old "
            f"(bound {settings.outbox_max_age_seconds:.0f} s)"
        )
    workers = {worker.name: worker.health for worker in runtime.supervised_workers()}
    reasons.extend(f"worker {name} is stuck" for name, health in workers.items() if health.stuck)
    return {
        "ready": not reasons,
        "database": database,
        "bus": connected and runtime.bus_ready,
        "reasons": reasons,
        "outbox_oldest_unpublished_seconds": outbox_age,
        "dead_letters_parked": await _parked_dead_letters(runtime) if connected else None,
        "workers": {name: health.as_json() for name, health in workers.items()},
    }


async def _parked_dead_letters(runtime: Runtime) -> int | None:
    """Informational: parked events await a person, but the service works on; None if unknown."""
    try:
        return await count_parked(sessions=runtime.session_factory, box=dead_letter_box(runtime))
    except Exception as exc:
        log.info("readiness: dead letters not counted", error=repr(exc))
        return None


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with runtime_of(request).session_factory() as session:
        yield session


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
    """This service's part of a matter's audit trail, and whether it is intact in the service's chain."""
    structlog.contextvars.bind_contextvars(case_id=case_id)
    async with runtime_of(request).session_factory() as session:
        entries = await trail(session, case_id)
    return {
        "case_id": case_id,
        "service": request.app.state.settings.service_name,
        "chain_intact": verify_chain(entries),
        "entries": [
            {
                "seq": e.seq,
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
