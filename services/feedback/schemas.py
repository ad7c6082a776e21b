from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.errors import LocalisedError

PublicStatus = Literal[
    "received", "routed", "verifying", "reviewing", "concluded", "answered", "closed", "reopened"
]
RatingValue = Literal["satisfied", "basically_satisfied", "unsatisfied"]

STATUS_LABELS = {
    "received": "已受理",
    "routed": "已分派",
    "verifying": "核查中",
    "reviewing": "复核中",
    "concluded": "已办结",
    "answered": "已答复",
    "closed": "已结案",
    "reopened": "重新办理",
}
RATING_LABELS = {"satisfied": "满意", "basically_satisfied": "基本满意", "unsatisfied": "不满意"}


class LookupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tracking_code: str = Field(min_length=4, max_length=32)
    query_secret: str = Field(min_length=4, max_length=32)


class TimelineItem(BaseModel):
    stage: str
    label: str
    at: datetime


class PublicClock(BaseModel):
    name: str
    label: str
    due_at: datetime


class LookupOut(BaseModel):
    tracking_code: str
    kind: str
    status: PublicStatus
    status_label: str
    received_at: datetime
    timeline: list[TimelineItem]
    clocks: list[PublicClock]
    answer: str | None
    answered_at: datetime | None
    can_rate: bool
    rating: str | None


class RatingIn(LookupIn):
    rating: RatingValue
    reason: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _reason_when_unsatisfied(self) -> RatingIn:
        if self.rating == "unsatisfied" and not (self.reason or "").strip():
            raise LocalisedError(
                "选择“不满意”时请写明理由", "a reason is required when unsatisfied", field="reason"
            )
        return self


class RatingOut(BaseModel):
    status: PublicStatus
    status_label: str
    message: str


class AnswerRead(BaseModel):
    id: str
    case_id: str
    round: int
    status: str
    text: str
    outcome: str
    classification: str | None
    channel: str | None
    approved_by: str | None
    approved_at: datetime | None
    delivered_at: datetime | None
    delivery_attempts: int
    last_error: str | None
    created_at: datetime


class AnswerEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=10, max_length=10000)


class DeputySuggestionRead(BaseModel):
    case_id: str
    tracking_code: str
    kind: str | None
    session: str | None
    number: str | None
    title: str | None
    status: str
    status_label: str
    lead_unit: str | None
    team_code: str | None
    team_name: str | None
    due_at: datetime | None
    clocks: list[PublicClock]
    reply: str | None
    classification: str | None
    received_at: datetime
