from __future__ import annotations

import base64
import binascii

from pydantic import AliasChoices, Field, SecretStr, field_validator

from shared.settings import ServiceSettings, check_secret

GENERATE_IDENTITY_KEY = (
    "python -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"
)


class IntakeSettings(ServiceSettings):
    service_name: str = "intake"
    database_url: str = Field(
        default="sqlite:///var/intake.db", validation_alias=AliasChoices("INTAKE_DATABASE_URL")
    )
    port: int = Field(default=8001, validation_alias=AliasChoices("INTAKE_PORT"))
    identity_key: SecretStr | None = Field(
        default=None, description="base64 of 32 random bytes; encrypts complainant identity at rest"
    )
    repeat_window_days: int = Field(
        default=180, description="a new complaint within this many days can be a repeat"
    )
    account_max_chars: int = Field(default=20_000, description="longest account an operator may record")
    idempotency_ttl_hours: int = 48

    @field_validator("identity_key")
    @classmethod
    def _identity_key_is_real(cls, value: SecretStr | None) -> SecretStr:
        checked = check_secret("IDENTITY_KEY", value, generate=GENERATE_IDENTITY_KEY)
        try:
            raw = base64.urlsafe_b64decode(checked.get_secret_value().strip() + "==")
        except (binascii.Error, ValueError):
            raise ValueError("IDENTITY_KEY must be base64 of 32 random bytes") from None
        if len(raw) != 32:
            raise ValueError("IDENTITY_KEY must decode to exactly 32 bytes")
        return checked

    @property
    def identity_key_bytes(self) -> bytes:
        assert self.identity_key is not None
        return base64.urlsafe_b64decode(self.identity_key.get_secret_value().strip() + "==")
