from __future__ import annotations

from fastapi import FastAPI

from services.verification import matter_rows, measure_facts
from services.verification.consumers import subscriptions
from services.verification.context import VerificationContext
from services.verification.ladder import LadderScheduler
from services.verification.measure_rules import load_settings as load_measure_settings
from services.verification.reports import load_config as load_report_config
from services.verification.reports_router import router as reports_router
from services.verification.reports_worker import ReportScheduler
from services.verification.router import router
from services.verification.settings import VerificationSettings
from services.verification.web import web_router
from shared.app import Runtime, create_service_app
from shared.clock import Clock
from shared.db import is_sqlite
from shared.settings import load_settings


def create_app(settings: VerificationSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or load_settings(VerificationSettings)
    ctx = VerificationContext.from_settings(settings, clock=clock)

    async def keep_matter_rows(runtime: Runtime) -> None:
        matter_rows.follow(runtime.engine, tz=ctx.calendar.tz)
        runtime.add_worker(
            measure_facts.fact_builder(
                sessions=runtime.session_factory, settings=load_measure_settings, tz=ctx.calendar.tz
            )
        )

    async def start_scheduler(runtime: Runtime) -> None:
        scheduler = LadderScheduler(
            session_factory=runtime.session_factory,
            policy=ctx.policy,
            # Read through the context each tick, so a test can put its own clock in.
            now=lambda: ctx.clock.now(),
            interval_seconds=settings.ladder_interval_seconds,
            lock_rows=not is_sqlite(settings.database_url),
        )
        app.state.scheduler = scheduler
        runtime.add_worker(scheduler.worker)

    async def start_report_scheduler(runtime: Runtime) -> None:
        reports = ReportScheduler(
            session_factory=runtime.session_factory,
            ctx=ctx,
            config=lambda: load_report_config(settings.report_file),
            hour=settings.reports_schedule_hour,
            interval_seconds=settings.reports_interval_seconds,
        )
        app.state.report_scheduler = reports
        if settings.reports_schedule_enabled:
            runtime.add_worker(reports.worker)

    async def connect_evidence_store(runtime: Runtime) -> None:
        # Asked at each use: the bus connects in the background and may come and go.
        ctx.evidence_store.connect(
            lambda: runtime.js if runtime.nc is not None and runtime.nc.is_connected else None
        )

    app = create_service_app(
        settings=settings,
        title="督察核查 verification",
        routers=[router, reports_router, web_router],
        subscriptions=subscriptions(ctx),
        on_startup=[keep_matter_rows, start_scheduler, start_report_scheduler, connect_evidence_store],
    )
    app.state.verification = ctx
    return app
