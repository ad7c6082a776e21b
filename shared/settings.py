"""Settings shared by the four services.

Each service subclasses ``ServiceSettings`` and adds what only it needs.  A
missing or placeholder secret stops start-up: a bureau that forgot to set its
signing key must not run with a guessable one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "changethis",
        "secret",
        "password",
        "placeholder",
        "example",
        "xxx",
        "todo",
    }
)
MIN_SECRET_LENGTH = 32


class SettingsError(RuntimeError):
    """A setting is missing or unsafe; the message tells the operator which."""


GENERATE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"  # noqa: S105 - a command


def check_secret(name: str, value: SecretStr | None, *, generate: str = GENERATE_TOKEN) -> SecretStr:
    if value is None or not value.get_secret_value().strip():
        raise ValueError(f"{name} is not set; generate one with: {generate}")
    raw = value.get_secret_value().strip()
    lowered = raw.lower()
    if lowered in PLACEHOLDER_SECRETS or lowered.startswith("change") or "placeholder" in lowered:
        raise ValueError(f"{name} is a placeholder ({raw[:6]}...); set a real random value")
    if len(raw) < MIN_SECRET_LENGTH:
        raise ValueError(f"{name} is too short: at least {MIN_SECRET_LENGTH} characters are required")
    return value


class ServiceSettings(BaseSettings):
    """Settings every service reads.  Environment variables, case-insensitive."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, env_file=None)

    service_name: str = "service"
    # Each service overrides this with its own variable (INTAKE_DATABASE_URL, ...).
    database_url: str = ""
    secret_key: SecretStr | None = Field(
        default=None, description="signs tokens accepted by all four services"
    )
    nats_url: str = "nats://127.0.0.1:4222"
    nats_stream: str = "SUPERVISION"
    nats_stream_max_age_days: int = 365
    nats_replicas: int = 1
    demo_mode: bool = False
    log_level: str = "INFO"
    log_json: bool | None = Field(
        default=None, description="JSON logs; default: JSON when stderr is not a terminal"
    )
    http_host: str = "127.0.0.1"
    token_ttl_minutes: int = 12 * 60
    intake_url: str = "http://127.0.0.1:8001"
    routing_url: str = "http://127.0.0.1:8002"
    verification_url: str = "http://127.0.0.1:8003"
    feedback_url: str = "http://127.0.0.1:8004"
    # Where a browser reaches each service, when that differs from where the services reach each
    # other (containers talk by service name; people use the proxy's address).
    public_intake_url: str | None = None
    public_routing_url: str | None = None
    public_verification_url: str | None = None
    public_feedback_url: str | None = None
    timezone: str = "Asia/Shanghai"
    calendar_override_file: Path | None = Field(
        default=None, description="JSON file of extra holidays and make-up working days"
    )
    units_file: Path | None = Field(
        default=None, description="organisation seed; default: the bundled Zhoukou example"
    )
    categories_file: Path | None = Field(
        default=None, description="complaint categories; default: the bundled list"
    )
    deadlines_file: Path | None = Field(default=None, description="named clocks; default: the bundled rules")
    outbox_batch_size: int = 200
    outbox_poll_seconds: float = 0.5
    consumer_batch_size: int = 100
    consumer_max_deliver: int = 8
    consumer_transaction_size: int = Field(default=100, description="events handled per database transaction")
    write_group_size: int = Field(
        default=32,
        ge=1,
        description="concurrent create requests committed in one transaction (1: each alone)",
    )
    consumer_ack_wait_seconds: float = 30.0

    @field_validator("secret_key")
    @classmethod
    def _secret_key_is_real(cls, value: SecretStr | None) -> SecretStr:
        return check_secret("SECRET_KEY", value)

    @property
    def signing_key(self) -> str:
        assert self.secret_key is not None
        return self.secret_key.get_secret_value()


S = TypeVar("S", bound=ServiceSettings)


def load_settings(settings_cls: type[S]) -> S:
    """Build settings or exit with a message a person can act on."""
    from pydantic import ValidationError

    try:
        return settings_cls()
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        ]
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
