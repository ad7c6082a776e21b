"""Settings shared by the four services.

Each service subclasses ``ServiceSettings`` and adds what only it needs.  A
missing or placeholder secret stops start-up: a bureau that forgot to set its
signing key must not run with a guessable one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.keys import load_private_key, parse_key_list

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


GENERATE_TOKEN_KEY = "python -m shared.keys <key id>"  # noqa: S105 - a command
REVOCATION_LEEWAY_SECONDS = 120
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


def check_private_key(name: str, value: SecretStr | None) -> SecretStr:
    """A PEM private key that loads; unset, the message says how to make a key pair."""
    if value is None or not value.get_secret_value().strip():
        raise ValueError(f"{name} is not set; make a key pair with: {GENERATE_TOKEN_KEY}")
    load_private_key(value.get_secret_value())
    return value


def database_url_field(service: str) -> Any:
    """A service's database URL: read from ``<SERVICE>_DATABASE_URL``, a SQLite file in var/ by default."""
    return Field(
        default=f"sqlite:///var/{service}.db",
        validation_alias=AliasChoices(f"{service.upper()}_DATABASE_URL"),
    )


def port_field(service: str, default: int) -> Any:
    """The port a service listens on: read from ``<SERVICE>_PORT``."""
    return Field(default=default, validation_alias=AliasChoices(f"{service.upper()}_PORT"))


class ServiceSettings(BaseSettings):
    """Settings every service reads.  Environment variables, case-insensitive."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, env_file=None)

    service_name: str = "service"
    # Each service overrides this with database_url_field: its own variable (INTAKE_DATABASE_URL, ...).
    database_url: str = ""
    secret_key: SecretStr | None = Field(
        default=None,
        description="keys the public query secrets' hash (intake writes it, feedback checks it); "
        "signs no token",
    )
    token_public_keys: str | None = Field(
        default=None,
        description="the public keys access tokens are verified with: kid=PEM entries separated by commas, "
        "or a JSON object of kid to PEM (two during a key change-over)",
    )
    db_pool_size: int = Field(
        default=10, ge=1, description="PostgreSQL: connections each instance keeps open (SQLite: one)"
    )
    db_max_overflow: int = Field(
        default=10, ge=0, description="PostgreSQL: connections opened beyond the pool at peaks, then closed"
    )
    sqlite_analyze_hours: float = Field(
        default=6.0,
        gt=0,
        description="SQLite: how often the service refreshes the query planner's statistics (ANALYZE), "
        "after doing so at start",
    )
    nats_url: str = "nats://127.0.0.1:4222"
    # The service's own NATS user (shared.natsauth): no default, and a real password when set.
    # <SERVICE>_NATS_USER / <SERVICE>_NATS_PASSWORD (INTAKE_NATS_USER, ...) win over these, for
    # processes that share one environment (the tests).
    nats_user: str | None = Field(
        default=None, description="the service's NATS user; its publish rights are the service's own"
    )
    nats_password: SecretStr | None = Field(
        default=None, description="required with NATS_USER; at least 32 characters, no placeholder"
    )
    nats_tls_ca: Path | None = Field(
        default=None, description="CA file the NATS server's certificate is checked with"
    )
    nats_tls_cert: Path | None = Field(default=None, description="client certificate for NATS (mutual TLS)")
    nats_tls_key: Path | None = Field(default=None, description="the client certificate's private key")
    nats_stream: str = "SUPERVISION"
    nats_stream_max_age_days: int = 365
    nats_replicas: int = 1
    demo_mode: bool = False
    log_level: str = "INFO"
    log_json: bool | None = Field(
        default=None, description="JSON logs; default: JSON when stderr is not a terminal"
    )
    http_host: str = "127.0.0.1"
    access_token_ttl_minutes: int = Field(
        default=15,
        ge=1,
        le=24 * 60,
        validation_alias=AliasChoices("access_token_ttl_minutes", "token_ttl_minutes"),
        description="life of an access token; the sign-in cookie is renewed with the refresh token",
    )
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
    # The batching vocabulary (docs/architecture.md): a consumer pulls a "fetch batch" of messages
    # at once and applies them in "slices", a transaction each; concurrent create requests share
    # a transaction as a "write group" (group commit).  The old variable names still work.
    consumer_fetch_batch_size: int = Field(
        default=100,
        validation_alias=AliasChoices("consumer_fetch_batch_size", "consumer_batch_size"),
        description="messages a consumer fetches at once (CONSUMER_BATCH_SIZE also accepted)",
    )
    consumer_slice_size: int = Field(
        default=100,
        validation_alias=AliasChoices("consumer_slice_size", "consumer_transaction_size"),
        description="events applied in one database transaction (CONSUMER_TRANSACTION_SIZE also accepted)",
    )
    consumer_max_deliver: int = Field(
        default=8,
        description="deliveries before a failing event is dead-lettered, unless its subscription says",
    )
    consumer_ack_wait_seconds: float = Field(
        default=30.0,
        description="redelivery delay of an unacknowledged event, unless its subscription says",
    )
    write_group_size: int = Field(
        default=32,
        ge=1,
        description="concurrent create requests committed in one transaction (1: each alone)",
    )
    batching_guard: bool = Field(
        default=False,
        description="fail a write group or slice that queries rows it cannot see (shared/batchguard.py); for tests",
    )
    outbox_publish_timeout_seconds: float = Field(
        default=5.0, gt=0, description="how long the relay waits for a batch's acks; the rest is retried"
    )
    outbox_lease_seconds: float = Field(
        default=30.0, gt=0, description="PostgreSQL: how long a relay instance keeps the rows it took"
    )
    outbox_max_age_seconds: float = Field(
        default=60.0, gt=0, description="/readyz fails when an unpublished outbox row is older than this"
    )
    worker_stuck_seconds: float = Field(
        default=60.0, gt=0, description="a background step running this long is stuck and restarted"
    )
    stop_timeout_seconds: float = Field(
        default=10.0, gt=0, description="shutdown bound for background work and the NATS drain"
    )
    audit_checkpoint_seconds: float = Field(
        default=300.0, gt=0, description="how often the audit chain's head is checkpointed on NATS"
    )
    nats_request_timeout_seconds: float = Field(
        default=5.0, gt=0, description="bound on every JetStream request (stream and consumer set-up)"
    )

    api_docs_enabled: bool = Field(
        default=False, description="serve Swagger UI at /api/docs (its files from the service itself)"
    )
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, description="largest request body other than an upload"
    )
    max_upload_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="largest multipart (upload) request body"
    )

    @property
    def upload_limit_bytes(self) -> int:
        """The multipart limit the service enforces while the body arrives (a service may raise it)."""
        return self.max_upload_bytes

    @field_validator("secret_key")
    @classmethod
    def _secret_key_is_real(cls, value: SecretStr | None) -> SecretStr:
        return check_secret("SECRET_KEY", value)

    @field_validator("token_public_keys")
    @classmethod
    def _public_keys_are_keys(cls, value: str | None) -> str:
        if value is None or not value.strip():
            raise ValueError(f"TOKEN_PUBLIC_KEYS is not set; make a key pair with: {GENERATE_TOKEN_KEY}")
        parse_key_list(value)
        return value

    @model_validator(mode="after")
    def _nats_credentials_are_real(self) -> ServiceSettings:
        if self.nats_user is not None and not self.nats_user.strip():
            raise ValueError("NATS_USER is empty: set the service's NATS user, or leave it unset")
        if self.nats_user:
            check_secret("NATS_PASSWORD", self.nats_password)
        elif self.nats_password is not None:
            raise ValueError("NATS_PASSWORD is set without NATS_USER")
        if bool(self.nats_tls_cert) != bool(self.nats_tls_key):
            raise ValueError("NATS_TLS_CERT and NATS_TLS_KEY go together")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _ServiceScopedEnv(settings_cls),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @property
    def signing_key(self) -> str:
        """``SECRET_KEY``: the query-secret hash key (the name is older than the token keys)."""
        assert self.secret_key is not None
        return self.secret_key.get_secret_value()

    @property
    def token_public_key_map(self) -> dict[str, str]:
        assert self.token_public_keys is not None
        return parse_key_list(self.token_public_keys)

    @property
    def revocation_ttl_seconds(self) -> float:
        """How long a revocation is kept: the longest access token, and the clocks' leeway."""
        return self.access_token_ttl_minutes * 60 + REVOCATION_LEEWAY_SECONDS


class FeedbackCalledSettings(ServiceSettings):
    """A service feedback calls with a token signed by its own key (intake's /contact, routing's contacts)."""

    feedback_caller_public_keys: str | None = Field(
        default=None,
        description="kid=PEM entries (or a JSON object) of feedback's own public keys, for its calls to "
        "this service; unset: those calls are refused (intake requires them)",
    )

    @field_validator("feedback_caller_public_keys")
    @classmethod
    def _caller_keys_are_keys(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            parse_key_list(value)
            return value
        return None

    @property
    def feedback_caller_key_map(self) -> dict[str, str]:
        return parse_key_list(self.feedback_caller_public_keys) if self.feedback_caller_public_keys else {}


# Settings a service may also read under its own name's prefix (INTAKE_NATS_PASSWORD, ...).
SERVICE_SCOPED_FIELDS = ("nats_user", "nats_password", "nats_tls_cert", "nats_tls_key")


class _ServiceScopedEnv(PydanticBaseSettingsSource):
    """``<SERVICE>_<FIELD>`` for the fields in ``SERVICE_SCOPED_FIELDS``, before the plain names."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        service_field = self.settings_cls.model_fields.get("service_name")
        service = str(service_field.default if service_field else "").upper()
        environ = {key.upper(): value for key, value in os.environ.items()}
        found: dict[str, Any] = {}
        for name in SERVICE_SCOPED_FIELDS:
            value = environ.get(f"{service}_{name.upper()}")
            if value is not None:
                found[name] = value
        return found


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
