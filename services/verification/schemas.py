from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from services.verification.models import LedgerMarkKind
from shared.deadlines import ClockRead
from shared.errors import LocalisedError
from shared.validation import Code, Line, RequestBody, Text

OUTCOME_LABELS = {
    "substantiated": "属实",
    "mostly_substantiated": "基本属实",
    "partly_substantiated": "部分属实",
    "unsubstantiated": "不属实",
    "unverifiable": "无法查实",
    "no_finding": "未作结论（撤回或移交）",
}
ACCOUNTABILITY = (
    "批评教育",
    "通报批评",
    "诫勉谈话",
    "停止执行职务",
    "禁闭",
    "党纪政务处分",
    "移送司法机关",
)
SUBSTANTIATED = frozenset({"substantiated", "mostly_substantiated", "partly_substantiated"})


class ClockState(BaseModel):
    name: str
    label: str
    due_at: datetime
    original_due_at: datetime
    extended: bool
    status: str
    working_days_left: int
    next_step: str | None
    next_step_at: datetime | None
    steps_taken: list[str]
    rule: str
    source: str


class TaskRead(BaseModel):
    id: str
    case_id: str
    case_kind: str
    tracking_code: str | None = None
    title: str | None = None
    team_code: str
    team_name: str
    assignment_kind: str
    participants: list[str]
    reasons: list[str]
    review_required: bool
    review_team_code: str | None
    key_clue: bool
    round: int
    status: str
    claimed_by: str | None
    claimed_at: datetime | None
    due_at: datetime | None
    clocks: list[ClockRead]
    created_at: datetime
    concluded_at: datetime | None
    # The clocks' live states (the same as /tasks/{id}/clocks): only when the list asks include=clocks.
    # ``clocks`` above is the clock sets the assignment carried, kept for earlier clients.
    clock_states: list[ClockState] | None = None


OutcomeValue = Literal[
    "substantiated",
    "mostly_substantiated",
    "partly_substantiated",
    "unsubstantiated",
    "unverifiable",
    "no_finding",
]


class AllegationFinding(RequestBody):
    category: Line = Field(min_length=1, max_length=64)
    outcome: OutcomeValue
    note: Text | None = Field(default=None, max_length=2000)


class OfficerFinding(RequestBody):
    name: Line | None = Field(default=None, max_length=64)
    badge_no: Line | None = Field(default=None, max_length=16)
    outcome: OutcomeValue
    accountability: list[Literal[ACCOUNTABILITY]] = Field(default_factory=list, max_length=10)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _identified(self) -> OfficerFinding:
        if not (self.name or self.badge_no):
            raise LocalisedError(
                "请填写民警姓名或警号", "an officer needs a name or badge number", field="name"
            )
        if self.accountability and self.outcome not in SUBSTANTIATED:
            raise LocalisedError(
                "只有属实或部分属实的，才能记录问责",
                "accountability only with a substantiated finding",
                field="accountability",
            )
        return self


class RectificationIn(RequestBody):
    item: Text = Field(min_length=2, max_length=2000)
    owner: Line = Field(min_length=1, max_length=100)
    # None: the default period of shared/data/deadlines.json ("rectification") from the conclusion.
    due_date: datetime | None = None

    @model_validator(mode="after")
    def _aware(self) -> RectificationIn:
        if self.due_date is not None and self.due_date.tzinfo is None:
            raise LocalisedError("时间需带时区", "due_date needs a time zone", field="due_date")
        return self


class FindingIn(RequestBody):
    outcome: Literal[
        "substantiated",
        "mostly_substantiated",
        "partly_substantiated",
        "unsubstantiated",
        "unverifiable",
        "no_finding",
    ]
    summary: Text = Field(
        min_length=2, max_length=5000, description="the finding in plain words, for the answer"
    )
    facts: Text | None = Field(default=None, max_length=20000, description="facts established (internal)")
    no_finding_reason: Text | None = Field(default=None, max_length=500)
    accountability: list[Literal[ACCOUNTABILITY]] = Field(default_factory=list, max_length=10)  # type: ignore[valid-type]
    classification: Literal["A", "B", "C", "D"] | None = None
    allegations: list[AllegationFinding] = Field(default_factory=list, max_length=50)
    officers: list[OfficerFinding] = Field(default_factory=list, max_length=50)
    evidence_ids: list[Line] = Field(default_factory=list, max_length=200)
    rectifications: list[RectificationIn] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _consistent(self) -> FindingIn:
        if self.outcome == "no_finding" and not (self.no_finding_reason or "").strip():
            raise LocalisedError(
                "未作结论的，需说明原因（撤回、移交其他机关等）",
                "no_finding needs a reason",
                field="no_finding_reason",
            )
        if self.accountability and self.outcome not in SUBSTANTIATED:
            raise LocalisedError(
                "只有属实或部分属实的，才能记录问责",
                "accountability only with a substantiated finding",
                field="accountability",
            )
        return self


class FindingRead(BaseModel):
    id: str
    task_id: str
    outcome: str
    outcome_label: str
    summary: str
    facts: str | None
    no_finding_reason: str | None
    classification: str | None
    accountability: list[str]
    per_allegation: list[dict[str, object]]
    per_officer: list[dict[str, object]]
    evidence_ids: list[str]
    follow_up: bool
    recorded_by: str
    recorded_at: datetime
    review_status: str
    reviewed_by: str | None
    review_reasons: list[str]
    reviewed_at: datetime | None


class ReviewIn(RequestBody):
    decision: Literal["confirm", "send_back"]
    reasons: list[Text] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _reasons_for_send_back(self) -> ReviewIn:
        if self.decision == "send_back" and not any(r.strip() for r in self.reasons):
            raise LocalisedError("退回重查需写明理由", "send_back needs reasons", field="reasons")
        return self


class ReturnIn(RequestBody):
    reason: Text = Field(min_length=2, max_length=1000)


class TaskEventRead(BaseModel):
    action: str
    actor: str
    note: str | None
    at: datetime


class MatterRead(BaseModel):
    case_id: str
    case_kind: str
    tracking_code: str
    received_at: datetime
    title: str
    accused_unit: str | None
    county_code: str | None
    officers: list[dict[str, object]]
    allegations: list[dict[str, object]]
    incident_at: datetime | None
    place: str | None
    text: str
    anonymous: bool


class RepeatCallRead(BaseModel):
    """A repeat call (重复来电) about the task's matter: when, how, which operator; never who called."""

    tracking_code: str
    channel: str
    received_at: datetime
    recorded_by: str | None


class TaskDetail(BaseModel):
    task: TaskRead
    matter: MatterRead | None
    findings: list[FindingRead]
    history: list[TaskEventRead]
    repeat_calls: list[RepeatCallRead] = Field(
        default_factory=list, description="repeat calls linked to this matter (重复件), oldest first"
    )


class FollowUpIn(RequestBody):
    """The follow-up reply that closes a B-class suggestion (正在解决或列入计划解决)."""

    summary: Text = Field(min_length=2, max_length=5000)
    classification: Literal["A", "B", "C", "D"]


class ExtensionIn(RequestBody):
    clock: Line = Field(default="verification", min_length=1, max_length=32)
    days: int = Field(ge=1, le=366)
    reason: Text = Field(min_length=4, max_length=2000)


class ExtensionDecisionIn(RequestBody):
    approve: bool
    note: Text | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _note_when_refused(self) -> ExtensionDecisionIn:
        if not self.approve and not (self.note or "").strip():
            raise LocalisedError("不批准延期需说明理由", "a refusal needs a note", field="note")
        return self


class ExtensionRead(BaseModel):
    id: str
    task_id: str
    case_id: str
    clock: str
    days: int
    reason: str
    requested_by: str
    requested_at: datetime
    status: str
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    new_due_at: datetime | None


class EvidenceRead(BaseModel):
    id: str
    task_id: str
    kind: str
    description: str
    reference: str | None
    filename: str | None
    content_type: str | None
    size_bytes: int | None
    sha256: str | None
    added_by: str
    added_at: datetime


class RectificationRead(BaseModel):
    id: str
    task_id: str
    case_id: str
    item: str
    owner: str
    due_date: datetime
    status: str
    checked_by: str | None
    checked_at: datetime | None
    check_note: str | None
    added_by: str
    added_at: datetime


class RectificationCheckIn(RequestBody):
    done: bool
    note: Text = Field(min_length=2, max_length=2000)


class CoViewIn(RequestBody):
    view: Text = Field(min_length=2, max_length=10000)


class CoViewRead(BaseModel):
    team_code: str
    view: str
    given_by: str
    given_at: datetime


class RequireReviewIn(RequestBody):
    reason: Text = Field(min_length=2, max_length=1000)
    review_team_code: Code | None = Field(default=None, max_length=32)


class LedgerMarkIn(RequestBody):
    mark: LedgerMarkKind
    leader: Line | None = Field(default=None, max_length=64)
    note: Text | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _leader_named(self) -> LedgerMarkIn:
        if self.mark == LedgerMarkKind.LEADER_ASSIGNED and not (self.leader or "").strip():
            raise LocalisedError(
                "领导包案需填写包案领导", "leader_assigned needs the leader's name", field="leader"
            )
        return self


class LedgerRow(BaseModel):
    case_id: str
    tracking_code: str | None
    title: str | None
    case_kind: str
    county_code: str | None
    categories: list[str]
    task_id: str
    team_code: str
    team_name: str
    status: str
    received_at: datetime | None
    age_days: int
    clocks: list[ClockState]
    worst_step: str | None
    marks: list[str]
    # The work that keeps the matter on the ledger (running clocks, a B-class follow-up), in words.
    pending: list[str] = Field(default_factory=list)


class LedgerCloseOffIn(RequestBody):
    """挂账销号: why the matter leaves the ledger."""

    reason: Text = Field(min_length=2, max_length=2000)


class LedgerMarkRemoveIn(RequestBody):
    mark: LedgerMarkKind
    reason: Text = Field(min_length=2, max_length=2000)


class ThresholdIn(RequestBody):
    measure: Literal["complaints", "substantiated"]
    count: int = Field(ge=1, le=1000, description="matters within the window that raise the warning")
    window_months: int = Field(ge=1, le=120)


class ThresholdsIn(RequestBody):
    thresholds: list[ThresholdIn] = Field(min_length=1, max_length=2)
    reason: Text = Field(min_length=2, max_length=2000)
