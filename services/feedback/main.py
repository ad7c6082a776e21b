from __future__ import annotations

from fastapi import FastAPI

from services.feedback.consumers import subscriptions
from services.feedback.router import router
from services.feedback.service import DEFAULT_TEMPLATE, FeedbackContext
from services.feedback.settings import FeedbackSettings
from shared.app import create_service_app
from shared.settings import load_settings


def create_app(settings: FeedbackSettings | None = None) -> FastAPI:
    settings = settings or load_settings(FeedbackSettings)
    ctx = FeedbackContext(
        signing_key=settings.signing_key,
        intake_url=settings.intake_url,
        template=(settings.answer_template_file or DEFAULT_TEMPLATE).read_text(encoding="utf-8"),
        issuing_unit=settings.issuing_unit,
        max_reopens=settings.max_reopens,
        sms_gateway_url=settings.sms_gateway_url,
        intake_timeout=settings.intake_timeout_seconds,
    )
    app = create_service_app(
        settings=settings, title="督察答复与查询 feedback", routers=[router], subscriptions=subscriptions(ctx)
    )
    app.state.feedback = ctx
    return app
