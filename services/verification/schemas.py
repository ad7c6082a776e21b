from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.errors import LocalisedError

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


class ClockRead(BaseModel):
    name: str
    label: str
    due_at: datetime
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


class FindingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Literal[
        "substantiated",
        "mostly_substantiated",
        "partly_substantiated",
        "unsubstantiated",
        "unverifiable",
        "no_finding",
    ]
    summary: str = Field(
        min_length=2, max_length=5000, description="the finding in plain words, for the answer"
    )
    facts: str | None = Field(default=None, max_length=20000, description="facts established (internal)")
    no_finding_reason: str | None = Field(default=None, max_length=500)
    accountability: list[Literal[ACCOUNTABILITY]] = Field(default_factory=list, max_length=10)  # type: ignore[valid-type]
    classification: Literal["A", "B", "C", "D"] | None = None

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
    recorded_by: str
    recorded_at: datetime
    review_status: str
    reviewed_by: str | None
    review_reasons: list[str]
    reviewed_at: datetime | None


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["confirm", "send_back"]
    reasons: list[str] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _reasons_for_send_back(self) -> ReviewIn:
        if self.decision == "send_back" and not any(r.strip() for r in self.reasons):
            raise LocalisedError("退回重查需写明理由", "send_back needs reasons", field="reasons")
        return self


class ReturnIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=2, max_length=1000)


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


class TaskDetail(BaseModel):
    task: TaskRead
    matter: MatterRead | None
    findings: list[FindingRead]
    history: list[TaskEventRead]
