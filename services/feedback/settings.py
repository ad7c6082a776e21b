from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.keys import check_key_id
from shared.settings import ServiceSettings, check_private_key, database_url_field, port_field


class FeedbackSettings(ServiceSettings):
    service_name: str = "feedback"
    database_url: str = database_url_field("feedback")
    port: int = port_field("feedback", 8004)
    answer_template_file: Path | None = Field(
        default=None, description="template of the answer to a complainant"
    )
    max_reopens: int = Field(
        default=2, ge=0, description="how many times 不满意 or 复查 may reopen a matter before it is closed"
    )
    issuing_unit: str = "周口市公安局督察支队"
    intake_timeout_seconds: float = 5.0
    # Feedback's own key for its one call to intake (/contact); intake lists its public key.
    caller_private_key: SecretStr | None = Field(
        default=None, description="PEM of feedback's Ed25519 key for its calls to intake's /contact"
    )
    caller_key_id: str = Field(default="feedback", description="kid of CALLER_PRIVATE_KEY")

    # Reply letters to deputies and CPPCC members.
    letter_contact_name: str = Field(default="", description="联系人 line of reply letters; empty: omitted")
    letter_contact_phone: str = Field(
        default="", description="联系电话 line of reply letters; empty: omitted"
    )

    # SMS: an HTTP gateway taking POST {"to", "text", "reference"} with an Idempotency-Key header.
    sms_gateway_url: str | None = Field(default=None, description="HTTP SMS gateway; unset: no SMS is sent")
    sms_gateway_token: SecretStr | None = Field(default=None, description="sent as a Bearer token if set")
    sms_timeout_seconds: float = 10.0

    # E-mail over SMTP.
    smtp_host: str | None = Field(default=None, description="SMTP server; unset: no e-mail is sent")
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = Field(default=None, description="sender address; required with SMTP_HOST")
    smtp_starttls: bool = Field(default=True, description="upgrade the connection with STARTTLS")
    smtp_ssl: bool = Field(
        default=False, description="implicit TLS (usually port 465); STARTTLS is then ignored"
    )
    smtp_timeout_seconds: float = 15.0

    # Deliveries (answers and notices to complainants) and their automatic retries.
    delivery_max_attempts: int = Field(
        default=5, ge=1, description="automatic attempts before a delivery is handed to a person"
    )
    delivery_retry_base_seconds: float = Field(
        default=60.0, gt=0, description="wait after the first failure; doubles each time"
    )
    delivery_retry_max_seconds: float = Field(default=3600.0, gt=0)
    delivery_poll_seconds: float = Field(
        default=2.0, gt=0, description="how often the worker looks for due work"
    )
    delivery_lease_seconds: float = Field(
        default=120.0, gt=0, description="how long an attempt owns a delivery before another may take it"
    )
    delivery_batch_size: int = Field(default=20, ge=1)

    # The public query, rating and review request: failed attempts allowed per client address and
    # per tracking code, counted in the database for every instance (services/feedback/ratelimit.py).
    public_rate_per_address: int = Field(
        default=10,
        ge=0,
        description="failed attempts (wrong secret or unknown code) per window per client address, "
        "then 429 for anything from it; 0: unlimited",
    )
    public_rate_per_code: int = Field(
        default=20,
        ge=0,
        description="failed attempts per window per tracking code, then 429 for wrong secrets of it "
        "(the right secret always passes); 0: unlimited",
    )
    public_rate_window_seconds: float = Field(
        default=600.0, gt=0, description="the window both allowances refill over"
    )
    public_trusted_proxy_hops: int = Field(
        default=0,
        ge=0,
        description="reverse proxies in front of feedback that append to X-Forwarded-For; 0: use the peer",
    )

    @field_validator("caller_private_key")
    @classmethod
    def _caller_key_is_real(cls, value: SecretStr | None) -> SecretStr:
        return check_private_key("CALLER_PRIVATE_KEY", value)

    @field_validator("caller_key_id")
    @classmethod
    def _caller_key_id_is_valid(cls, value: str) -> str:
        return check_key_id(value)

    @model_validator(mode="after")
    def _smtp_needs_sender(self) -> FeedbackSettings:
        if self.smtp_host and not self.smtp_from:
            raise ValueError("SMTP_FROM is required when SMTP_HOST is set (the sender address of answers)")
        return self
