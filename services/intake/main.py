from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from services.intake import sessions
from services.intake.accounts import seed_demo_accounts
from services.intake.auth_router import auth_router
from services.intake.consumers import subscriptions
from services.intake.context import IntakeContext
from services.intake.imports_router import imports_router
from services.intake.imports_worker import ImportRunner
from services.intake.open311_keys import seed_demo_key
from services.intake.open311_router import open311_router
from services.intake.router import router
from services.intake.settings import IntakeSettings
from services.intake.web import web_router
from shared.app import Runtime, create_service_app
from shared.db import serialise_on, utcnow
from shared.groupcommit import WriteGroups
from shared.idempotency import purge_expired
from shared.logging import get_logger
from shared.settings import load_settings
from shared.worker import BackgroundWorker

log = get_logger(__name__)

# Answers are kept for a retry window of hours: forgetting the expired ones hourly is soon enough.
PURGE_EVERY_SECONDS = 3600.0
PURGE_TIMEOUT_SECONDS = 60.0


def idempotency_purge(runtime: Runtime, *, ttl: timedelta) -> BackgroundWorker:
    async def purge() -> bool:
        async with runtime.session_factory() as session, session.begin():
            purged = await purge_expired(session, older_than=utcnow() - ttl)
            # Expired refresh tokens go with them: they too only wait to be forgotten.
            await sessions.purge_expired(session, now=utcnow())
        if purged:
            log.info("expired idempotency keys purged", count=purged)
        return False  # one statement purges every expired key: nothing left until the next hour

    return BackgroundWorker(
        name="idempotency-purge",
        step=purge,
        idle_seconds=PURGE_EVERY_SECONDS,
        step_timeout=PURGE_TIMEOUT_SECONDS,
    )


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or load_settings(IntakeSettings)
    ctx = IntakeContext.from_settings(settings)

    async def purge_idempotency_keys(runtime: Runtime) -> None:
        runtime.add_worker(idempotency_purge(runtime, ttl=timedelta(hours=settings.idempotency_ttl_hours)))

    async def seed(runtime: Runtime) -> None:
        if not settings.demo_mode:
            return
        async with runtime.session_factory() as session, session.begin():
            # Instances started together on an empty database seed one after another.
            await serialise_on(session, "intake.seed")
            created = await seed_demo_accounts(session=session, organisation=ctx.organisation)
            # The demo's connecting system, api_key ``demo-open311-key`` (Open311, README).
            await seed_demo_key(session=session)
        if created:
            log.info("demo accounts created", count=created)

    write_groups = WriteGroups()
    # Bulk imports record their rows in the background, through the same group commit.
    import_runner = ImportRunner(ctx=ctx, write_groups=write_groups, timezone=settings.timezone)
    app = create_service_app(
        settings=settings,
        title="督察投诉受理 intake",
        routers=[auth_router, router, imports_router, open311_router, web_router],
        subscriptions=subscriptions(ctx),
        on_startup=[seed, purge_idempotency_keys, write_groups.open, import_runner.open],
        on_shutdown=[write_groups.close],
    )
    # Group commit, for the two create endpoints (``shared.groupcommit.get_write_groups``).
    app.state.write_groups = write_groups
    app.state.intake = ctx
    app.state.imports = import_runner
    return app
