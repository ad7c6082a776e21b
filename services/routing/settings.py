from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from shared.settings import ServiceSettings


class RoutingSettings(ServiceSettings):
    service_name: str = "routing"
    database_url: str = Field(
        default="sqlite:///var/routing.db", validation_alias=AliasChoices("ROUTING_DATABASE_URL")
    )
    port: int = Field(default=8002, validation_alias=AliasChoices("ROUTING_PORT"))
    rules_file: Path | None = Field(
        default=None, description="routing rules seed; default: the bundled rules"
    )
    max_returns_before_supervisor: int = Field(
        default=2, description="after this many returns (退回) a supervisor decides"
    )
