"""Prometheus metrics at ``GET /metrics``: requests, outbox, consumer lag, dead letters, workers.

Two kinds of figures, kept in two places:

- What the app can read about itself when scraped (request latency, outbox backlog and age,
  consumer lag, background worker health) lives in a registry **per app**
  (``ServiceMetrics.registry``), not in prometheus-client's process-global default: the tests
  start the four apps in one process, and each must answer for itself only.
- What happens deep inside domain code that has no handle on its app (an event parked on the
  dead-letter subject, a slice applied, outbox rows published, a ladder step fired, a delivery
  sent or failed) is counted by module-level functions (``count_dead_letter`` ...) into one
  process-wide registry, ``EVENTS`` (again not the default one).  Each sample carries a
  ``service`` label, read from a context variable that the app's lifespan sets (every
  background worker is started from there and inherits it) and that the request middleware
  sets for each request; each app's ``/metrics`` shows only its own service's samples.  In
  production one process runs one service, so the filter changes nothing there.

Everything is gathered when Prometheus scrapes, with a bound (``SCRAPE_TIMEOUT_SECONDS``): the
outbox figures come from the database (``shared.outbox.oldest_unpublished_age``, as for
``/readyz``), the lag of each durable consumer from JetStream's consumer info (``num_pending``
plus ``num_ack_pending``).  A source that did not answer in time is left out of that scrape and
``sv_metrics_source_up`` says so.  Labels never carry a case id, a phone number or a user:
requests are labelled by their route's path template (``/api/v1/tasks/{task_id}``), consumers
by durable name, workers by worker name.  ``docs/operations.md`` lists the metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import event, func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import utcnow
from shared.logging import get_logger

if TYPE_CHECKING:
    from shared.app import Runtime

log = get_logger(__name__)

METRICS_PATH = "/metrics"
# Prometheus's own scrape timeout is 10 s by default; every source together gets this much.
SCRAPE_TIMEOUT_SECONDS = 2.0
UNMATCHED_ROUTE = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# The ``_created`` series of every counter and histogram double the output and nobody graphs them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus-client leaves it unannotated

# The service whose work the current task does: set by the app's lifespan and per request.
current_service: ContextVar[str] = ContextVar("metrics_service", default="unknown")

EVENTS = CollectorRegistry(auto_describe=True)

DEAD_LETTERS = Counter(
    "sv_dead_letters",
    "Events parked on the dead-letter subject, by consumer and kind of reason.",
    ["service", "consumer", "reason"],
    registry=EVENTS,
)
SLICES_APPLIED = Counter(
    "sv_consumer_slices_applied",
    "Slices of fetched events applied in one transaction each, by consumer.",
    ["service", "consumer"],
    registry=EVENTS,
)
SLICE_EVENTS = Counter(
    "sv_consumer_slice_events",
    "Events in the slices applied, by consumer.",
    ["service", "consumer"],
    registry=EVENTS,
)
OUTBOX_PUBLISHED = Counter(
    "sv_outbox_published_rows",
    "Outbox rows acknowledged by JetStream.",
    ["service"],
    registry=EVENTS,
)
OUTBOX_UNACKNOWLEDGED = Counter(
    "sv_outbox_unacknowledged_rows",
    "Outbox rows whose publish was not acknowledged (tried again later).",
    ["service"],
    registry=EVENTS,
)
LADDER_STEPS = Counter(
    "sv_ladder_steps_fired",
    "Overdue ladder steps taken by the scheduler, by step.",
    ["service", "step"],
    registry=EVENTS,
)
DELIVERIES_SENT = Counter(
    "sv_deliveries_sent",
    "Answers and notices sent to complainants, by channel.",
    ["service", "channel"],
    registry=EVENTS,
)
DB_STATEMENTS = Counter(
    "sv_db_statements",
    "Statements sent to the service's database (a statement for many rows counts once).",
    ["service"],
    registry=EVENTS,
)
DB_COMMITS = Counter(
    "sv_db_commits",
    "Transactions committed on the service's database.",
    ["service"],
    registry=EVENTS,
)
DELIVERIES_FAILED = Counter(
    "sv_deliveries_failed",
    "Delivery attempts that failed, by channel (none: no channel could be used) and permanence.",
    ["service", "channel", "permanent"],
    registry=EVENTS,
)

# The dead-letter reasons ``shared.bus`` writes, by how they begin; anything else is a handler's
# permanent refusal.  The reason itself quotes the event, so only its kind becomes a label.
_REASON_KINDS = (("invalid event", "invalid"), ("no handler", "no_handler"), ("gave up after", "gave_up"))


def dead_letter_kind(reason: str) -> str:
    return next((kind for prefix, kind in _REASON_KINDS if reason.startswith(prefix)), "permanent")


def count_dead_letter(*, consumer: str, reason: str) -> None:
    DEAD_LETTERS.labels(current_service.get(), consumer, dead_letter_kind(reason)).inc()


def count_slice(*, consumer: str, events: int) -> None:
    service = current_service.get()
    SLICES_APPLIED.labels(service, consumer).inc()
    SLICE_EVENTS.labels(service, consumer).inc(events)


def count_outbox(*, published: int, unacknowledged: int) -> None:
    service = current_service.get()
    OUTBOX_PUBLISHED.labels(service).inc(published)
    OUTBOX_UNACKNOWLEDGED.labels(service).inc(unacknowledged)


def count_database_work(engine: AsyncEngine, *, service: str) -> None:
    """Count the engine's statements and commits: divided by the events or requests handled, the
    work each costs whatever the machine's speed (``bench/pipeline.py`` prints them per complaint)."""
    statements, commits = DB_STATEMENTS.labels(service), DB_COMMITS.labels(service)
    # The label is bound once here: ``labels()`` on every statement would cost more than the count.
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *_: statements.inc())
    event.listen(engine.sync_engine, "commit", lambda *_: commits.inc())


def count_ladder_step(*, step: str) -> None:
    LADDER_STEPS.labels(current_service.get(), str(step)).inc()


def count_delivery(*, channel: str | None, sent: bool, permanent: bool) -> None:
    service, channel_label = current_service.get(), str(channel) if channel else "none"
    if sent:
        DELIVERIES_SENT.labels(service, channel_label).inc()
    else:
        DELIVERIES_FAILED.labels(service, channel_label, "true" if permanent else "false").inc()


class _OwnEvents(Collector):
    """The process-wide event counters, reduced to one service's samples."""

    def __init__(self, service: str) -> None:
        self.service = service

    def collect(self) -> Iterable[Metric]:
        for family in EVENTS.collect():
            own = Metric(family.name, family.documentation, family.type, family.unit)
            own.samples = [s for s in family.samples if s.labels.get("service") == self.service]
            yield own


class WorkerRow(NamedTuple):
    name: str
    running: bool
    consecutive_failures: int
    seconds_since_progress: float | None
    stuck: bool


@dataclass
class Snapshot:
    """What one scrape read from the database, JetStream and the workers."""

    database_up: bool = False
    nats_up: bool = False
    outbox_unpublished: int | None = None
    outbox_oldest_age: float | None = None
    # durable -> (num_pending, num_ack_pending)
    consumers: dict[str, tuple[int, int]] = field(default_factory=dict)
    workers: list[WorkerRow] = field(default_factory=list)
    bus_connected: bool = False
    bus_ready: bool = False


class _RuntimeCollector(Collector):
    """Yields the last scrape's ``Snapshot`` as gauges (``collect`` cannot await)."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        up = GaugeMetricFamily(
            "sv_metrics_source_up",
            "Whether this scrape could read a source (1) or not (0).",
            labels=["source"],
        )
        up.add_metric(["database"], float(s.database_up))
        up.add_metric(["nats"], float(s.nats_up))
        yield up
        bus = GaugeMetricFamily(
            "sv_bus_up", "NATS connection (connected) and streams/consumers set up (ready).", labels=["state"]
        )
        bus.add_metric(["connected"], float(s.bus_connected))
        bus.add_metric(["ready"], float(s.bus_ready))
        yield bus
        yield from self._outbox(s)
        yield from self._consumers(s)
        yield from self._workers(s)

    @staticmethod
    def _outbox(s: Snapshot) -> Iterator[Metric]:
        backlog = GaugeMetricFamily("sv_outbox_unpublished_rows", "Outbox rows not yet published.")
        age = GaugeMetricFamily(
            "sv_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished outbox row (0 when everything is published).",
        )
        if s.outbox_unpublished is not None:
            backlog.add_metric([], s.outbox_unpublished)
            age.add_metric([], s.outbox_oldest_age or 0.0)
        yield backlog
        yield age

    @staticmethod
    def _consumers(s: Snapshot) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "sv_consumer_lag_messages",
            "Events not yet acknowledged by a durable consumer (num_pending + num_ack_pending).",
            labels=["durable"],
        )
        in_flight = GaugeMetricFamily(
            "sv_consumer_ack_pending_messages",
            "Events delivered to a durable consumer and not yet acknowledged (num_ack_pending).",
            labels=["durable"],
        )
        for durable, (pending, ack_pending) in sorted(s.consumers.items()):
            lag.add_metric([durable], pending + ack_pending)
            in_flight.add_metric([durable], ack_pending)
        yield lag
        yield in_flight

    @staticmethod
    def _workers(s: Snapshot) -> Iterator[Metric]:
        running = GaugeMetricFamily(
            "sv_worker_running", "Background worker running (1) or not.", labels=["worker"]
        )
        failures = GaugeMetricFamily(
            "sv_worker_consecutive_failures", "Failed steps since the last good one.", labels=["worker"]
        )
        idle = GaugeMetricFamily(
            "sv_worker_seconds_since_progress",
            "Seconds since the worker's last good step (absent before the first).",
            labels=["worker"],
        )
        stuck = GaugeMetricFamily(
            "sv_worker_stuck", "Worker stuck (1): the watchdog restarts it.", labels=["worker"]
        )
        for row in s.workers:
            running.add_metric([row.name], float(row.running))
            failures.add_metric([row.name], row.consecutive_failures)
            if row.seconds_since_progress is not None:
                idle.add_metric([row.name], row.seconds_since_progress)
            stuck.add_metric([row.name], float(row.stuck))
        yield from (running, failures, idle, stuck)


class ServiceMetrics:
    """One app's registry: its request histogram, its runtime's gauges, its own event counters."""

    def __init__(self, *, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Histogram(
            "sv_http_request_duration_seconds",
            "HTTP request latency, by method, route template and status class.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._runtime = _RuntimeCollector()
        self.registry.register(self._runtime)
        self.registry.register(_OwnEvents(service))
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._lock = asyncio.Lock()

    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        self.requests.labels(method, route, f"{status // 100}xx").observe(seconds)

    async def render(self, runtime: Runtime | None) -> bytes:
        """The text exposition, after reading the runtime's figures (bounded by ``SCRAPE_TIMEOUT_SECONDS``)."""
        # Concurrent scrapes would only repeat the same queries; they take turns.
        async with self._lock:
            self._runtime.snapshot = await read_snapshot(runtime, budget=SCRAPE_TIMEOUT_SECONDS)
            return generate_latest(self.registry)


async def read_snapshot(runtime: Runtime | None, *, budget: float) -> Snapshot:
    """Read every source at once, each within ``budget`` seconds."""
    snapshot = Snapshot()
    if runtime is None:  # still starting
        return snapshot
    snapshot.bus_connected = runtime.nc is not None and runtime.nc.is_connected
    snapshot.bus_ready = runtime.bus_ready
    snapshot.workers = _worker_rows(runtime)
    await asyncio.gather(_read_outbox(runtime, snapshot, budget), _read_lag(runtime, snapshot, budget))
    return snapshot


def _worker_rows(runtime: Runtime) -> list[WorkerRow]:
    rows: dict[str, WorkerRow] = {}
    now = utcnow()
    for worker in runtime.supervised_workers():
        health = worker.health
        since = None if health.last_progress_at is None else (now - health.last_progress_at).total_seconds()
        # Two workers of one name would be one series twice: the first one speaks for the name.
        rows.setdefault(
            health.name,
            WorkerRow(health.name, health.running, health.consecutive_failures, since, health.stuck),
        )
    return list(rows.values())


async def _read_outbox(runtime: Runtime, snapshot: Snapshot, budget: float) -> None:
    # Imported here: the outbox module counts its publishes through this one.
    from shared.outbox import OutboxMessage, oldest_unpublished_age

    async def read() -> None:
        async with runtime.engine.connect() as conn:
            unpublished = select(func.count()).where(col(OutboxMessage.published_at).is_(None))
            snapshot.outbox_unpublished = int((await conn.execute(unpublished)).scalar() or 0)
            snapshot.outbox_oldest_age = await oldest_unpublished_age(conn)

    try:
        await asyncio.wait_for(read(), timeout=budget)
    except Exception as exc:
        log.warning("metrics: outbox figures unavailable", error=repr(exc))
        snapshot.outbox_unpublished = snapshot.outbox_oldest_age = None
        return
    snapshot.database_up = True


async def _read_lag(runtime: Runtime, snapshot: Snapshot, budget: float) -> None:
    js, stream = runtime.js, runtime.settings.nats_stream
    durables = [consumer.subscription.durable for consumer in runtime.consumers]
    if js is None or not snapshot.bus_connected:
        return

    async def one(durable: str) -> tuple[str, int, int]:
        info = await js.consumer_info(stream, durable, timeout=budget)
        return durable, int(info.num_pending or 0), int(info.num_ack_pending or 0)

    started = time.monotonic()
    results = await asyncio.gather(
        *(asyncio.wait_for(one(durable), timeout=budget) for durable in durables), return_exceptions=True
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    for result in results:
        if not isinstance(result, BaseException):
            snapshot.consumers[result[0]] = (result[1], result[2])
    if failed:
        log.warning(
            "metrics: consumer lag unavailable",
            failed=len(failed),
            error=repr(failed[0]),
            seconds=round(time.monotonic() - started, 2),
        )
    snapshot.nats_up = not failed


def route_template(scope: Scope, *, root_path: str) -> str:
    """The matched route's path template, never the raw path (which may carry a case id)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if not isinstance(template, str):
        return UNMATCHED_ROUTE
    if isinstance(route, Mount):
        return template  # a whole mounted app (static files) is one route: "/static/{path}"
    # A route of a mounted app is relative to its mount point.
    mounted_at = str(scope.get("root_path", ""))[len(root_path) :]
    return mounted_at + template


class RequestMetricsMiddleware:
    """Times every request into the app's histogram and marks the task as this service's work."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = current_service.set(self.metrics.service)
        root_path = str(scope.get("root_path", ""))
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            current_service.reset(token)
            route = route_template(scope, root_path=root_path)
            if route != METRICS_PATH:
                self.metrics.observe_request(
                    method=str(scope.get("method", "")),
                    route=route,
                    status=status["code"],
                    seconds=time.perf_counter() - started,
                )


def bind_service(service: str) -> None:
    """Count what the current task, and every task it starts from now on, does as ``service``'s."""
    current_service.set(service)


metrics_router = APIRouter(tags=["health"])


@metrics_router.get(METRICS_PATH, include_in_schema=False)
async def read_metrics(request: Request) -> Response:
    """Prometheus text format; unauthenticated like ``/healthz``, and free of identities and case ids."""
    metrics: ServiceMetrics = request.app.state.metrics
    runtime: Any = getattr(request.app.state, "runtime", None)
    body = await metrics.render(runtime)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
