from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.routing.models import RuleBase, TeamBase, UnitBase
from services.routing.rules import FACT_LABELS
from shared.deadlines import ClockRead
from shared.validation import Code, Line, Priority, RequestBody, Text

# Plain strings, not the enums' members: pydantic names these in its "expected" error text.
_FACTS = tuple(str(fact) for fact in FACT_LABELS)


class AssignmentRead(BaseModel):
    id: str
    case_id: str
    case_kind: str
    team_code: str
    team_name: str
    kind: str
    rule: str
    reasons: list[str]
    participants: list[str]
    review_required: bool
    review_team_code: str | None
    key_clue: bool
    needs_supervisor: bool
    round: int
    clocks: list[ClockRead]
    current: bool
    assigned_by: str
    created_at: datetime


class ReassignIn(RequestBody):
    team_code: Code = Field(min_length=1, max_length=32)
    reason: Text = Field(min_length=2, max_length=1000)


class FlagIn(RequestBody):
    reason: Text = Field(min_length=2, max_length=1000)


class RuleUpdate(RuleBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    assign: Literal["county", "city", "joint", "cross", "lead_unit"]
    when: list[Literal[_FACTS]]  # type: ignore[valid-type]
    case_kinds: list[Literal["complaint", "suggestion"]] = Field(min_length=1)  # type: ignore[assignment]
    priority: Priority
    description: Text = Field(min_length=1, max_length=2000)
    reason: Text = Field(min_length=2, max_length=1000, description="why the rule changes; recorded")


class RuleRead(RuleBase):
    name: str
    updated_at: datetime
    updated_by: str


class RuleChangeRead(BaseModel):
    rule_name: str
    changed_by: str
    reason: str
    before: dict[str, object] | None
    after: dict[str, object]
    changed_at: datetime


class TeamRead(TeamBase):
    code: str
    open_tasks: int = 0


class TeamUpdate(TeamBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    level: Literal["city", "county"]
    name: Line = Field(min_length=1, max_length=100)
    area_code: Code = Field(max_length=16)
    bureau: Line = Field(min_length=1, max_length=100)


class UnitRead(UnitBase):
    code: str


class UnitUpsert(UnitBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    name: Line = Field(min_length=1, max_length=200)
    area_code: Code = Field(max_length=16)
    kind: Line = Field(min_length=1, max_length=32)


class BureauRead(BaseModel):
    """A bureau and its 分管领导; the contact fields are None when none is stored."""

    code: str
    bureau_name: str
    leader_name: str | None = None
    leader_title: str | None = None
    phone: str | None = None
    email: str | None = None
    leader_username: str | None = None
    updated_by: str | None = None
    updated_at: datetime | None = None


class BureauUpdate(RequestBody):
    """A bureau's leader and contact as a supervisor sets them; an empty field clears it."""

    leader_name: Line | None = Field(default=None, max_length=64)
    leader_title: Line | None = Field(default=None, max_length=64)
    phone: Line | None = Field(default=None, max_length=32, description="mobile or landline with area code")
    email: Line | None = Field(default=None, max_length=254)
    leader_username: Line | None = Field(default=None, max_length=64, description="the leader's account")


class BureauContactOut(BaseModel):
    """What feedback's delivery worker needs to reach a bureau's leader."""

    name: str | None
    phone: str | None
    email: str | None
