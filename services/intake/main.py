from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import FastAPI

from services.intake.accounts import seed_demo_accounts
from services.intake.consumers import SUBSCRIPTIONS
from services.intake.identity import IdentityVault
from services.intake.router import router
from services.intake.service import IntakeContext
from services.intake.settings import IntakeSettings
from services.intake.web import web_router
from shared.app import Runtime, create_service_app
from shared.db import utcnow
from shared.idempotency import purge_expired
from shared.logging import get_logger
from shared.reference import DEFAULT_CATEGORIES_FILE, DEFAULT_UNITS_FILE, load_categories, load_organisation
from shared.settings import load_settings

log = get_logger(__name__)


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or load_settings(IntakeSettings)
    organisation = load_organisation(settings.units_file or DEFAULT_UNITS_FILE)

    async def purge_idempotency_keys(runtime: Runtime) -> None:
        async def loop() -> None:
            while True:
                try:
                    async with runtime.session_factory() as session, session.begin():
                        cutoff = utcnow() - timedelta(hours=settings.idempotency_ttl_hours)
                        purged = await purge_expired(session, older_than=cutoff)
                    if purged:
                        log.info("expired idempotency keys purged", count=purged)
                except Exception as exc:  # housekeeping must never take the service down
                    log.warning("idempotency purge failed", error=str(exc))
                await asyncio.sleep(3600)

        runtime.background.append(asyncio.create_task(loop(), name="idempotency-purge"))

    async def seed(runtime: Runtime) -> None:
        if not settings.demo_mode:
            return
        async with runtime.session_factory() as session, session.begin():
            created = await seed_demo_accounts(session=session, organisation=organisation)
        if created:
            log.info("demo accounts created", count=created)

    app = create_service_app(
        settings=settings,
        title="督察投诉受理 intake",
        routers=[router, web_router],
        subscriptions=SUBSCRIPTIONS,
        on_startup=[seed, purge_idempotency_keys],
    )
    app.state.intake = IntakeContext(
        vault=IdentityVault(settings.identity_key_bytes),
        signing_key=settings.signing_key,
        organisation=organisation,
        categories=load_categories(settings.categories_file or DEFAULT_CATEGORIES_FILE),
        repeat_window=timedelta(days=settings.repeat_window_days),
        account_max_chars=settings.account_max_chars,
    )
    return app
