from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from shared.settings import ServiceSettings


class FeedbackSettings(ServiceSettings):
    service_name: str = "feedback"
    database_url: str = Field(
        default="sqlite+aiosqlite:///var/feedback.db", validation_alias=AliasChoices("FEEDBACK_DATABASE_URL")
    )
    port: int = Field(default=8004, validation_alias=AliasChoices("FEEDBACK_PORT"))
    answer_template_file: Path | None = Field(
        default=None, description="template of the answer to a complainant"
    )
    max_reopens: int = Field(
        default=2, description="how many times 不满意 may reopen a matter before it is closed"
    )
    review_request_days: int = Field(
        default=30, description="days after the written answer to ask for a review (复查)"
    )
    sms_gateway_url: str | None = Field(default=None, description="HTTP SMS gateway; unset: no SMS is sent")
    issuing_unit: str = "周口市公安局督察支队"
    intake_timeout_seconds: float = 5.0
