from __future__ import annotations

import asyncio

from fastapi import FastAPI

from services.feedback.consumers import subscriptions
from services.feedback.context import FeedbackContext
from services.feedback.delivery import DeliveryWorker
from services.feedback.router import router
from services.feedback.settings import FeedbackSettings
from services.feedback.web import web_router
from shared.app import Runtime, create_service_app
from shared.asgi import PathHeadersMiddleware
from shared.logging import get_logger
from shared.settings import load_settings

log = get_logger(__name__)

PUBLIC_PREFIX = "/api/v1/public/"


def create_app(settings: FeedbackSettings | None = None) -> FastAPI:
    settings = settings or load_settings(FeedbackSettings)
    ctx = FeedbackContext.from_settings(settings)
    worker = DeliveryWorker(ctx)

    async def start_delivery_worker(runtime: Runtime) -> None:
        worker.bind(runtime.engine, runtime.session_factory)
        # Deliveries live in the database: whatever was pending before a restart is picked up here.
        runtime.background.append(asyncio.create_task(worker.run(), name="delivery-worker"))
        if not (ctx.delivery.sms_enabled or ctx.delivery.email_enabled):
            log.warning(
                "neither SMS_GATEWAY_URL nor SMTP_HOST is set: every answer needs a person to deliver it"
            )
        if not (ctx.letter_contact_name and ctx.letter_contact_phone):
            log.warning("LETTER_CONTACT_NAME or LETTER_CONTACT_PHONE is not set: reply letters omit the line")

    async def stop_delivery_worker(runtime: Runtime) -> None:
        worker.unbind()

    app = create_service_app(
        settings=settings,
        title="督察答复与查询 feedback",
        routers=[router, web_router],
        subscriptions=subscriptions(ctx),
        on_startup=[start_delivery_worker],
        on_shutdown=[stop_delivery_worker],
    )
    app.state.feedback = ctx
    app.state.delivery_worker = worker

    # Every public answer (including 404, 422 and 429) may reveal a matter's state: no cache may keep it.
    app.add_middleware(PathHeadersMiddleware, prefix=PUBLIC_PREFIX, headers={"Cache-Control": "no-store"})
    return app
