from __future__ import annotations

from fastapi import FastAPI

from services.feedback.clock_ladder import clock_scheduler
from services.feedback.clock_router import clock_router
from services.feedback.consumers import subscriptions
from services.feedback.context import FeedbackContext
from services.feedback.deliveries import delivery_queued
from services.feedback.notification_summary import summary_worker
from services.feedback.router import router
from services.feedback.sending import DeliverySender
from services.feedback.settings import FeedbackSettings
from services.feedback.web import web_router
from shared.app import Runtime, create_service_app
from shared.asgi import PathHeadersMiddleware
from shared.clock import Clock
from shared.db import is_sqlite
from shared.logging import get_logger
from shared.settings import load_settings
from shared.worker import BackgroundWorker

log = get_logger(__name__)

PUBLIC_PREFIX = "/api/v1/public/"


def delivery_worker(ctx: FeedbackContext, runtime: Runtime, sender: DeliverySender) -> BackgroundWorker:
    return BackgroundWorker(
        name="delivery",
        step=sender.step,
        idle_seconds=ctx.delivery.poll_seconds,
        # A step past its leases may race another instance for the same rows: that is the bound.
        step_timeout=ctx.delivery.lease_seconds,
        # Deliveries live in the database: whatever was pending before a restart is picked up at once.
        wake_signal=delivery_queued,
        engine=runtime.engine,
    )


def create_app(settings: FeedbackSettings | None = None) -> FastAPI:
    settings = settings or load_settings(FeedbackSettings)
    ctx = FeedbackContext.from_settings(settings)

    async def start_delivery_worker(runtime: Runtime) -> None:
        sender = DeliverySender(
            ctx=ctx,
            sessions=runtime.session_factory,
            lock_rows=not is_sqlite(str(runtime.engine.url)),
        )
        app.state.delivery_sender = sender
        runtime.add_worker(delivery_worker(ctx, runtime, sender))
        if not (ctx.delivery.sms_enabled or ctx.delivery.email_enabled):
            log.warning(
                "neither SMS_GATEWAY_URL nor SMTP_HOST is set: every answer needs a person to deliver it"
            )
        if not (ctx.letter_contact_name and ctx.letter_contact_phone):
            log.warning("LETTER_CONTACT_NAME or LETTER_CONTACT_PHONE is not set: reply letters omit the line")

    async def start_clock_scheduler(runtime: Runtime) -> None:
        # Feedback's own clocks (answer approval, 回访); their steps are looked for as often as deliveries.
        scheduler = clock_scheduler(
            ctx=ctx,
            session_factory=runtime.session_factory,
            # Read through the app state each tick, so a test can put its own clock in.
            now=lambda: app.state.clock.now(),
            interval_seconds=ctx.delivery.poll_seconds,
            lock_rows=not is_sqlite(str(runtime.engine.url)),
        )
        app.state.clock_scheduler = scheduler
        runtime.add_worker(scheduler.worker)

    async def start_notification_summary(runtime: Runtime) -> None:
        # The 通知送达 figures' summary of the days past their read deadlines (notification_summary).
        runtime.add_worker(summary_worker(sessions=runtime.session_factory, calendar=ctx.calendar))

    app = create_service_app(
        settings=settings,
        title="督察答复与查询 feedback",
        routers=[router, clock_router, web_router],
        subscriptions=subscriptions(ctx),
        on_startup=[start_delivery_worker, start_clock_scheduler, start_notification_summary],
    )
    app.state.feedback = ctx
    app.state.clock = Clock()

    # Every public answer (including 404, 422 and 429) may reveal a matter's state: no cache may keep it.
    app.add_middleware(PathHeadersMiddleware, prefix=PUBLIC_PREFIX, headers={"Cache-Control": "no-store"})
    return app
