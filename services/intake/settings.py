from __future__ import annotations

import base64
import binascii
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.keys import check_key_id, load_private_key, load_public_key, parse_key_list, same_public_key
from shared.settings import (
    GENERATE_TOKEN_KEY,
    FeedbackCalledSettings,
    check_private_key,
    check_secret,
    database_url_field,
    port_field,
)

GENERATE_IDENTITY_KEY = (
    "python -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"
)


class IntakeSettings(FeedbackCalledSettings):
    service_name: str = "intake"
    database_url: str = database_url_field("intake")
    port: int = port_field("intake", 8001)
    identity_key: SecretStr | None = Field(
        default=None, description="base64 of 32 random bytes; encrypts complainant identity at rest"
    )
    repeat_window_days: int = Field(
        default=180, description="a new complaint within this many days can be a repeat"
    )
    account_max_chars: int = Field(default=20_000, description="longest account an operator may record")
    received_at_max_age_days: int = Field(
        default=365,
        ge=1,
        description="oldest receipt time accepted, in days; older ones would start every clock overdue",
    )
    idempotency_ttl_hours: int = 48
    import_max_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1024, description="largest .xlsx a bulk import (批量导入) accepts"
    )
    import_max_rows: int = Field(default=10_000, ge=1, description="most data rows one bulk import accepts")
    identity_purposes_file: Path | None = Field(
        default=None,
        description="JSON list of the purposes an identity read may give; default: the bundled list",
    )

    # Sign-in: intake alone signs access tokens (shared/auth.py, docs/operations.md "Keys").
    token_private_key: SecretStr | None = Field(
        default=None, description="PEM of the Ed25519 key access tokens are signed with (intake only)"
    )
    token_key_id: str = Field(
        default="",
        description="kid of TOKEN_PRIVATE_KEY; its public key is listed under it in TOKEN_PUBLIC_KEYS",
    )
    refresh_token_ttl_minutes: int = Field(
        default=12 * 60, ge=1, description="life of the sign-in cookie's refresh token (renewed on use)"
    )
    password_min_length: int = Field(default=10, ge=8, description="create-user refuses shorter passwords")
    sign_in_free_failures: int = Field(
        default=3, ge=1, description="wrong passwords for one account before each try must wait"
    )
    sign_in_backoff_base_seconds: float = Field(
        default=1.0, gt=0, description="first wait after the free failures; doubles with each further one"
    )
    sign_in_backoff_max_seconds: float = Field(default=300.0, gt=0, description="longest wait")
    sign_in_lock_after: int = Field(
        default=10, ge=1, description="wrong passwords in a row after which the account is locked"
    )
    sign_in_address_failures: int = Field(
        default=30, ge=1, description="wrong passwords from one address per window, then 429 for it"
    )
    sign_in_address_window_seconds: float = Field(default=900.0, gt=0)
    sign_in_trusted_proxy_hops: int = Field(
        default=0, ge=0, description="reverse proxies in front of intake that append to X-Forwarded-For"
    )

    @field_validator("token_private_key")
    @classmethod
    def _private_key_is_real(cls, value: SecretStr | None) -> SecretStr:
        return check_private_key("TOKEN_PRIVATE_KEY", value)

    @field_validator("feedback_caller_public_keys")
    @classmethod
    def _caller_keys_are_keys(cls, value: str | None) -> str:
        # Required here: feedback reads a complainant's contact from intake to deliver every answer.
        if value is None or not value.strip():
            raise ValueError(
                f"FEEDBACK_CALLER_PUBLIC_KEYS is not set; make feedback's key pair with: {GENERATE_TOKEN_KEY}"
            )
        parse_key_list(value)
        return value

    @model_validator(mode="after")
    def _signing_key_is_listed(self) -> IntakeSettings:
        if self.token_private_key is None or self.token_public_keys is None:
            return self  # already reported by the fields' own checks
        check_key_id(self.token_key_id)
        listed = self.token_public_key_map.get(self.token_key_id)
        own = load_private_key(self.token_private_key.get_secret_value()).public_key()
        if listed is None or not same_public_key(load_public_key(listed), own):
            raise ValueError(
                f"TOKEN_PUBLIC_KEYS must list TOKEN_PRIVATE_KEY's public key under TOKEN_KEY_ID "
                f"({self.token_key_id!r}): the services would refuse intake's tokens"
            )
        return self

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
