from __future__ import annotations

import asyncio

from fastapi import FastAPI

from services.verification.consumers import subscriptions
from services.verification.ladder import LadderPolicy, LadderScheduler
from services.verification.router import router
from services.verification.service import VerificationContext
from services.verification.settings import VerificationSettings
from services.verification.web import web_router
from shared.app import Runtime, create_service_app
from shared.clock import Clock
from shared.db import is_sqlite
from shared.reference import DEFAULT_UNITS_FILE, load_organisation
from shared.settings import load_settings
from shared.workcalendar import WorkCalendar


def create_app(settings: VerificationSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or load_settings(VerificationSettings)
    calendar = WorkCalendar.load(settings.calendar_override_file, tz=settings.timezone)
    ctx = VerificationContext(
        calendar=calendar,
        policy=LadderPolicy(
            calendar=calendar,
            reminder_working_days_before=settings.reminder_working_days_before,
            rebuke_after_working_days=settings.rebuke_after_working_days,
            step_hour=settings.ladder_step_hour,
        ),
        clock=clock or Clock(),
        organisation=load_organisation(settings.units_file or DEFAULT_UNITS_FILE),
        extension_max_days=settings.extension_max_days,
        extension_max_count=settings.extension_max_count,
        ledger_min_age_days=settings.ledger_min_age_days,
        evidence_dir=settings.evidence_dir,
        evidence_max_bytes=settings.evidence_max_bytes,
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
        runtime.background.append(asyncio.create_task(scheduler.run(), name="ladder-scheduler"))

    app = create_service_app(
        settings=settings,
        title="督察核查 verification",
        routers=[router, web_router],
        subscriptions=subscriptions(ctx),
        on_startup=[start_scheduler],
    )
    app.state.verification = ctx
    return app
