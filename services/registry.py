"""The four services: where each one's app factory and settings live, and its default port."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shared.settings import ServiceSettings


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int
    module: str  # services.<name>; it has settings.py (class <Name>Settings) and main.py (create_app)

    @property
    def database_env(self) -> str:
        return f"{self.name.upper()}_DATABASE_URL"

    @property
    def port_env(self) -> str:
        return f"{self.name.upper()}_PORT"

    def settings_class(self) -> type[ServiceSettings]:
        module = importlib.import_module(f"{self.module}.settings")
        cls: type[ServiceSettings] = getattr(module, f"{self.name.capitalize()}Settings")
        return cls

    def create_app(self, settings: Any = None) -> FastAPI:
        module = importlib.import_module(f"{self.module}.main")
        app: FastAPI = module.create_app(settings)
        return app


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec("intake", 8001, "services.intake"),
        ServiceSpec("routing", 8002, "services.routing"),
        ServiceSpec("verification", 8003, "services.verification"),
        ServiceSpec("feedback", 8004, "services.feedback"),
    )
}
