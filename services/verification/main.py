from __future__ import annotations

from fastapi import FastAPI

from services.verification.consumers import subscriptions
from services.verification.context import VerificationContext
from services.verification.ladder import LadderScheduler
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

    async def connect_evidence_store(runtime: Runtime) -> None:
        # Asked at each use: the bus connects in the background and may come and go.
        ctx.evidence_store.connect(
            lambda: runtime.js if runtime.nc is not None and runtime.nc.is_connected else None
        )

    app = create_service_app(
        settings=settings,
        title="督察核查 verification",
        routers=[router, web_router],
        subscriptions=subscriptions(ctx),
        on_startup=[start_scheduler, connect_evidence_store],
    )
    app.state.verification = ctx
    return app
