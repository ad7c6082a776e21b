from __future__ import annotations

from pydantic import AliasChoices, Field

from shared.settings import ServiceSettings


class VerificationSettings(ServiceSettings):
    service_name: str = "verification"
    database_url: str = Field(
        default="sqlite+aiosqlite:///var/verification.db",
        validation_alias=AliasChoices("VERIFICATION_DATABASE_URL"),
    )
    port: int = Field(default=8003, validation_alias=AliasChoices("VERIFICATION_PORT"))
