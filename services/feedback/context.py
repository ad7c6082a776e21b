"""What feedback's handlers need besides a session: settings, the calendar, the limiter."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from services.feedback.ratelimit import Allowance, PublicLimiter
from services.feedback.settings import FeedbackSettings
from shared.auth import TokenSigner
from shared.deadlines import DEFAULT_DEADLINES_FILE, DeadlineBook, load_deadlines
from shared.reference import DEFAULT_UNITS_FILE, load_organisation
from shared.workcalendar import WorkCalendar

DEFAULT_TEMPLATE = Path(__file__).resolve().parent / "templates" / "answer_complaint.txt"


@dataclass(frozen=True)
class DeliveryConfig:
    sms_gateway_url: str | None
    sms_gateway_token: str | None
    sms_timeout: float
    smtp_host: str | None
    smtp_port: int
    smtp_username: str | None
    smtp_password: str | None
    smtp_from: str | None
    smtp_starttls: bool
    smtp_ssl: bool
    smtp_timeout: float
    max_attempts: int
    retry_base_seconds: float
    retry_max_seconds: float
    poll_seconds: float
    lease_seconds: float
    batch_size: int

    @property
    def sms_enabled(self) -> bool:
        return bool(self.sms_gateway_url)

    @property
    def email_enabled(self) -> bool:
        return bool(self.smtp_host and self.smtp_from)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next automatic attempt after ``attempts`` failed ones."""
        return float(min(self.retry_base_seconds * 2 ** max(attempts - 1, 0), self.retry_max_seconds))

    @classmethod
    def from_settings(cls, settings: FeedbackSettings) -> DeliveryConfig:
        return cls(
            sms_gateway_url=settings.sms_gateway_url or None,
            sms_gateway_token=(
                settings.sms_gateway_token.get_secret_value() if settings.sms_gateway_token else None
            ),
            sms_timeout=settings.sms_timeout_seconds,
            smtp_host=settings.smtp_host or None,
            smtp_port=settings.smtp_port,
            smtp_username=settings.smtp_username or None,
            smtp_password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            smtp_from=settings.smtp_from,
            smtp_starttls=settings.smtp_starttls,
            smtp_ssl=settings.smtp_ssl,
            smtp_timeout=settings.smtp_timeout_seconds,
            max_attempts=settings.delivery_max_attempts,
            retry_base_seconds=settings.delivery_retry_base_seconds,
            retry_max_seconds=settings.delivery_retry_max_seconds,
            poll_seconds=settings.delivery_poll_seconds,
            lease_seconds=settings.delivery_lease_seconds,
            batch_size=settings.delivery_batch_size,
        )


def follow_up_max_attempts(path: Path) -> int:
    """Calls that did not get through before a 回访 is closed with a note (data, default 3)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return int(data.get("later_clocks", {}).get("follow_up", {}).get("max_attempts", 3))


@dataclass(frozen=True)
class FeedbackContext:
    signing_key: str
    intake_url: str
    template: str
    issuing_unit: str
    max_reopens: int
    intake_timeout: float
    calendar: WorkCalendar
    deadlines: DeadlineBook
    limiter: PublicLimiter
    delivery: DeliveryConfig
    # How many unanswered 回访 calls close the follow-up (deadlines.json, later_clocks.follow_up).
    follow_up_max_attempts: int = 3
    letter_contact_name: str = ""
    letter_contact_phone: str = ""
    # Feedback's own key for its one call to intake (/contact); None only in tests that make none.
    caller_signer: TokenSigner | None = None
    # Where a staff message's contact comes from (routing's bureau contacts), and the city bureau's
    # code: the contact of the city supervisors (role:supervisor).
    routing_url: str = ""
    city_code: str = ""

    @classmethod
    def from_settings(cls, settings: FeedbackSettings) -> FeedbackContext:
        return cls(
            signing_key=settings.signing_key,
            intake_url=settings.intake_url,
            template=(settings.answer_template_file or DEFAULT_TEMPLATE).read_text(encoding="utf-8"),
            issuing_unit=settings.issuing_unit,
            max_reopens=settings.max_reopens,
            intake_timeout=settings.intake_timeout_seconds,
            calendar=WorkCalendar.load(settings.calendar_override_file, tz=settings.timezone),
            deadlines=load_deadlines(settings.deadlines_file or DEFAULT_DEADLINES_FILE),
            limiter=PublicLimiter(
                per_address=Allowance(
                    failures=settings.public_rate_per_address,
                    window_seconds=settings.public_rate_window_seconds,
                ),
                per_code=Allowance(
                    failures=settings.public_rate_per_code, window_seconds=settings.public_rate_window_seconds
                ),
                # The key of the query secrets' hashes: every instance has it, so they share counters.
                key_secret=settings.signing_key,
                trusted_proxy_hops=settings.public_trusted_proxy_hops,
            ),
            delivery=DeliveryConfig.from_settings(settings),
            follow_up_max_attempts=follow_up_max_attempts(settings.deadlines_file or DEFAULT_DEADLINES_FILE),
            routing_url=settings.routing_url,
            city_code=load_organisation(settings.units_file or DEFAULT_UNITS_FILE).city_code,
            letter_contact_name=settings.letter_contact_name.strip(),
            letter_contact_phone=settings.letter_contact_phone.strip(),
            caller_signer=TokenSigner.from_pem(
                settings.caller_private_key.get_secret_value(), key_id=settings.caller_key_id
            )
            if settings.caller_private_key is not None
            else None,
        )
