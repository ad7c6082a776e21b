from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from services.feedback.models import CaseStatus
from shared.errors import LocalisedError
from shared.states import Rating
from shared.validation import Line, RequestBody, Text

PublicStatus = Literal[
    "received", "routed", "verifying", "reviewing", "concluded", "answered", "closed", "reopened"
]
RatingValue = Literal["satisfied", "basically_satisfied", "unsatisfied"]

STATUS_LABELS: dict[str, str] = {
    CaseStatus.RECEIVED: "已受理",
    CaseStatus.ROUTED: "已分派",
    CaseStatus.VERIFYING: "核查中",
    CaseStatus.REVIEWING: "复核中",
    CaseStatus.CONCLUDED: "已办结",
    CaseStatus.ANSWERED: "已答复",
    CaseStatus.CLOSED: "已结案",
    CaseStatus.REOPENED: "重新办理",
}
RATING_LABELS: dict[str, str] = {
    Rating.SATISFIED: "满意",
    Rating.BASICALLY_SATISFIED: "基本满意",
    Rating.UNSATISFIED: "不满意",
}


class LookupIn(RequestBody):
    tracking_code: Line = Field(min_length=4, max_length=32)
    query_secret: Line = Field(min_length=4, max_length=32)


class TimelineItem(BaseModel):
    stage: str
    label: str
    at: datetime


class PublicClock(BaseModel):
    name: str
    label: str
    due_at: datetime
    extended: bool = False


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
    can_request_review: bool = False
    review_until: datetime | None = None


class RatingFields(RequestBody):
    rating: RatingValue
    reason: Text | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _reason_when_unsatisfied(self) -> RatingFields:
        if Rating(self.rating) == Rating.UNSATISFIED and not (self.reason or "").strip():
            raise LocalisedError(
                "选择“不满意”时请写明理由", "a reason is required when unsatisfied", field="reason"
            )
        return self


class RatingIn(LookupIn, RatingFields):
    """The complainant's own rating on the public query page."""


class CaseRatingIn(RatingFields):
    """A rating an operator records from a follow-up call (回访), or a deputy gives on their page."""


class ReviewFields(RequestBody):
    reason: Text = Field(min_length=2, max_length=2000, description="why the answer is contested")

    @model_validator(mode="after")
    def _reason_not_blank(self) -> ReviewFields:
        if len(self.reason.strip()) < 2:
            raise LocalisedError("请写明申请复查的理由", "a reason is required", field="reason")
        return self


class ReviewRequestIn(LookupIn, ReviewFields):
    """A review request (复查) on the public query page."""


class CaseReviewRequestIn(ReviewFields):
    """A review request an operator takes down (by phone, letter or in person)."""


class RatingOut(BaseModel):
    status: PublicStatus
    status_label: str
    message: str


class DeliveryRead(BaseModel):
    id: str
    case_id: str
    answer_id: str | None
    kind: str
    mode: str
    channel: str | None
    status: str
    subject: str | None
    text: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    sent_at: datetime | None
    recorded_by: str | None
    note: str | None
    created_at: datetime


class AnswerRead(BaseModel):
    id: str
    case_id: str
    round: int
    follow_up: bool
    status: str
    text: str
    outcome: str
    classification: str | None
    channel: str | None
    approved_by: str | None
    approved_at: datetime | None
    delivered_at: datetime | None
    served_at: datetime | None
    created_at: datetime
    deliveries: list[DeliveryRead] = Field(default_factory=list)


class AnswerEdit(RequestBody):
    text: Text = Field(min_length=10, max_length=10000)


class ManualDeliveryIn(RequestBody):
    """A delivery made by a person: the answer told by phone, or sent as a letter."""

    channel: Literal["phone", "letter"]
    note: Text = Field(
        min_length=2,
        max_length=1000,
        description="what was done (e.g. 已电话告知，对方表示知悉); phone numbers are masked when stored",
    )

    @model_validator(mode="after")
    def _note_not_blank(self) -> ManualDeliveryIn:
        if len(self.note.strip()) < 2:
            raise LocalisedError("请填写送达情况说明", "a note is required", field="note")
        return self


# The list filters' values (models.AnswerStatus, DeliveryStatus, DeliveryKind), spelled out as literals
# so that a wrong value is refused with the same error (type ``literal_error``) as before the enums.
AnswerStatusName = Literal["pending_approval", "delivered"]
DeliveryStatusName = Literal["pending", "sent", "failed", "cancelled"]
DeliveryKindName = Literal["answer", "notice"]


class DeputySuggestionRead(BaseModel):
    case_id: str
    tracking_code: str
    kind: str | None
    session: str | None
    number: str | None
    title: str | None
    status: str
    status_label: str
    lead_unit: str | None = Field(description="handling unit (承办单位)")
    team_code: str | None
    team_name: str | None
    due_at: datetime | None
    clocks: list[PublicClock]
    reply: str | None
    replied_at: datetime | None
    classification: str | None
    classification_label: str | None
    letter_url: str | None
    can_rate: bool
    rating: str | None
    awaiting_follow_up: bool
    received_at: datetime


class MessageRead(BaseModel):
    """One message sent (消息记录): never the full phone or e-mail, only ``sent_to_masked``."""

    id: str
    case_id: str
    tracking_code: str | None
    kind: str
    kind_label: str
    channel: str | None
    channel_label: str | None
    recipient: str
    sent_to_masked: str | None
    status: str
    sent_at: datetime | None
    created_at: datetime


NOTIFICATION_KIND_LABELS: dict[str, str] = {
    "reminder": "到期提醒",
    "chase": "催办",
    "escalation": "督办",
    "rebuke": "通报",
    "acceptance_notice": "告知受理",
    "approval_due": "答复待审批",
    "follow_up_due": "回访",
    "rectification_due": "整改到期",
    "delivery_failed": "送达失败",
    "early_warning": "预警",
    "needs_supervisor": "待指定承办",
}


class NotificationOut(BaseModel):
    """One notification (通知) or 待办 item of the signed-in person."""

    id: str
    case_id: str | None
    tracking_code: str | None
    kind: str
    kind_label: str
    title: str
    link: str | None = Field(description="the page where it is handled")
    due_at: datetime | None
    created_at: datetime
    read_at: datetime | None
    handled_at: datetime | None
    handled_by: str | None


class NotificationSummary(BaseModel):
    unread: int = Field(description="unread items still open: the bell's number")


class NotificationStatsRow(BaseModel):
    county_code: str | None
    team_code: str | None
    kind: str
    kind_label: str
    sent: int
    unread_after_one_working_day: int


class NotificationStats(BaseModel):
    since: datetime
    county: str | None
    rows: list[NotificationStatsRow]


# --- Follow-up calls (回访) and feedback's own clocks ------------------------------------------------

FollowUpOutcome = Literal["satisfied", "basically_satisfied", "unsatisfied", "review", "unreachable"]


class FollowUpOutcomeIn(RequestBody):
    """What a 回访 call came to: a rating, a review request (复查), or nobody answered."""

    outcome: FollowUpOutcome
    reason: Text | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _reason_when_needed(self) -> FollowUpOutcomeIn:
        reason = (self.reason or "").strip()
        if self.outcome == "unsatisfied" and not reason:
            raise LocalisedError(
                "选择“不满意”时请写明理由", "a reason is required when unsatisfied", field="reason"
            )
        if self.outcome == "review" and len(reason) < 2:
            raise LocalisedError("请写明申请复查的理由", "a reason is required", field="reason")
        return self


class FollowUpRead(BaseModel):
    case_id: str
    tracking_code: str
    due_at: datetime
    started_at: datetime
    overdue: bool
    attempts: int
    max_attempts: int
    outcome_label: str | None = None


class FollowUpResult(BaseModel):
    case_id: str
    outcome: FollowUpOutcome
    status: PublicStatus
    status_label: str
    message: str
    attempts: int
    closed: bool


class ClockListRead(BaseModel):
    case_id: str
    tracking_code: str
    clock: str
    label: str
    due_at: datetime
    next_step: str | None
    next_step_at: datetime | None
    last_step: str | None
    rule: str
    source: str
