from __future__ import annotations

from fastapi import FastAPI

from services.verification.consumers import SUBSCRIPTIONS
from services.verification.router import router
from services.verification.settings import VerificationSettings
from shared.app import create_service_app
from shared.settings import load_settings


def create_app(settings: VerificationSettings | None = None) -> FastAPI:
    settings = settings or load_settings(VerificationSettings)
    return create_service_app(
        settings=settings,
        title="督察核查 verification",
        routers=[router],
        subscriptions=SUBSCRIPTIONS,
    )
