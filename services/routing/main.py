from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.routing.bureaus import seed_demo_contacts
from services.routing.consumers import subscriptions
from services.routing.context import RoutingContext
from services.routing.organisation import seed_organisation
from services.routing.router import internal_router, router
from services.routing.rulebook import DEFAULT_RULES_FILE, seed_rules
from services.routing.settings import RoutingSettings
from services.routing.web import web_router
from shared.app import Runtime, create_service_app
from shared.db import serialise_on
from shared.reference import Organisation
from shared.settings import load_settings

SEED_LOCK = "routing.seed"


async def seed_reference_data(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    organisation: Organisation,
    rules_file: Path,
    demo: bool = False,
) -> None:
    """The organisation and the rules on first start; instances starting at once seed one at a time.

    They are the bureau's data, not demo data: seeded in every mode.  The bureaus' leaders are
    fictional people: seeded in demo mode only.
    """
    async with session_factory() as session, session.begin():
        await serialise_on(session, SEED_LOCK)
        await seed_organisation(session=session, organisation=organisation)
        await seed_rules(session=session, rules_file=rules_file)
        if demo:
            await seed_demo_contacts(session=session, organisation=organisation)


def create_app(settings: RoutingSettings | None = None) -> FastAPI:
    settings = settings or load_settings(RoutingSettings)
    ctx = RoutingContext.from_settings(settings)
    rules_file = settings.rules_file or DEFAULT_RULES_FILE

    async def seed(runtime: Runtime) -> None:
        await seed_reference_data(
            session_factory=runtime.session_factory,
            organisation=ctx.seed_organisation,
            rules_file=rules_file,
            demo=settings.demo_mode,
        )

    app = create_service_app(
        settings=settings,
        title="督察分派 routing",
        routers=[router, internal_router, web_router],
        subscriptions=subscriptions(ctx),
        on_startup=[seed],
    )
    app.state.routing = ctx
    return app
