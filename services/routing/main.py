from __future__ import annotations

from fastapi import FastAPI

from services.routing.consumers import subscriptions
from services.routing.router import router
from services.routing.service import DEFAULT_RULES_FILE, RoutingContext, seed_reference_data
from services.routing.settings import RoutingSettings
from services.routing.web import web_router
from shared.app import Runtime, create_service_app
from shared.deadlines import DEFAULT_DEADLINES_FILE, load_deadlines
from shared.reference import DEFAULT_UNITS_FILE, load_organisation
from shared.settings import load_settings
from shared.workcalendar import WorkCalendar


def create_app(settings: RoutingSettings | None = None) -> FastAPI:
    settings = settings or load_settings(RoutingSettings)
    organisation = load_organisation(settings.units_file or DEFAULT_UNITS_FILE)
    ctx = RoutingContext(
        calendar=WorkCalendar.load(settings.calendar_override_file, tz=settings.timezone),
        deadlines=load_deadlines(settings.deadlines_file or DEFAULT_DEADLINES_FILE),
        max_returns=settings.max_returns_before_supervisor,
        seed_organisation=organisation,
    )

    async def seed(runtime: Runtime) -> None:
        # The organisation and rules are the bureau's data, not demo data: seeded on first start in every mode.
        async with runtime.session_factory() as session, session.begin():
            await seed_reference_data(
                session=session,
                organisation=organisation,
                rules_file=settings.rules_file or DEFAULT_RULES_FILE,
            )

    app = create_service_app(
        settings=settings,
        title="督察分派 routing",
        routers=[router, web_router],
        subscriptions=subscriptions(ctx),
        on_startup=[seed],
    )
    app.state.routing = ctx
    return app
