"""Routing's tables: the organisation, the rules and their history, each matter's facts and assignments."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index
from sqlmodel import Column, Field, SQLModel, Text

from shared.db import UTCDateTime, new_id, utcnow

# The states are StrEnums: each compares equal to its stored string, so the columns stay `str`
# (no migration) and the JSON of the API and the events does not change.


class TeamLevel(StrEnum):
    CITY = "city"
    COUNTY = "county"


class UnitKind(StrEnum):
    BUREAU = "bureau"
    BUREAU_ALIAS = "bureau_alias"
    CITY_UNIT = "city_unit"
    INSPECTION_TEAM = "inspection_team"
    STATION = "station"
    BRIGADE = "brigade"
    OTHER = "other"


class AssignKind(StrEnum):
    """A rule's action (``RoutingRule.assign``) and, but for LEAD_UNIT, an assignment's kind."""

    COUNTY = "county"
    CITY = "city"
    JOINT = "joint"
    CROSS = "cross"
    LEAD_UNIT = "lead_unit"


class Fact(StrEnum):
    """What a rule's ``when`` can test; the order is the order the rules page lists them in."""

    ALWAYS = "always"
    SUGGESTION = "suggestion"
    REOPENED = "reopened"
    RETURNED_TWICE = "returned_twice"
    ACCUSED_LEADERSHIP = "accused_leadership"
    ACCUSED_INSPECTION_TEAM = "accused_inspection_team"
    SERIOUS_CATEGORY = "serious_category"
    INJURY_OR_DEATH = "injury_or_death"
    REPEAT_AFTER_REJECTION = "repeat_after_rejection"
    SUPERVISOR_FLAG = "supervisor_flag"
    CITY_UNIT = "city_unit"
    # Recorded for a complaint the petitions office transferred; not offered to the rules (no label).
    PETITION = "petition"


class SystemRule(StrEnum):
    """The ``rule`` an assignment names when no rule of the table made the decision."""

    NO_RULE_MATCHED = "no_rule_matched"
    SUPERVISOR_REASSIGNMENT = "supervisor_reassignment"
    SUGGESTION_REHANDLE = "suggestion_rehandle"


class TeamBase(SQLModel):
    name: str = Field(max_length=100)
    level: str = Field(max_length=16, description="city or county")
    area_code: str = Field(max_length=16)
    bureau: str = Field(max_length=100)
    active: bool = True


class Team(TeamBase, table=True):
    __tablename__ = "routing_team"

    code: str = Field(primary_key=True, max_length=32)
    last_assigned_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class UnitBase(SQLModel):
    name: str = Field(max_length=200, index=True)
    area_code: str = Field(max_length=16)
    kind: str = Field(max_length=32, description="bureau, city_unit, inspection_team, station, brigade, ...")
    active: bool = True


class Unit(UnitBase, table=True):
    __tablename__ = "routing_unit"

    code: str = Field(primary_key=True, max_length=32)


class RuleBase(SQLModel):
    priority: int
    case_kinds: list[str] = Field(sa_column=Column(JSON, nullable=False))
    when: list[str] = Field(sa_column=Column(JSON, nullable=False))
    assign: str = Field(max_length=16)
    review: bool = False
    description: str = Field(sa_column=Column(Text, nullable=False))
    enabled: bool = True


class RoutingRule(RuleBase, table=True):
    __tablename__ = "routing_rule"

    name: str = Field(primary_key=True, max_length=64)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_by: str = Field(default="seed", max_length=64)


class RuleChange(SQLModel, table=True):
    __tablename__ = "routing_rule_change"

    id: int | None = Field(default=None, primary_key=True)
    rule_name: str = Field(max_length=64, index=True)
    changed_by: str = Field(max_length=64)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    after: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    changed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RoutedCase(SQLModel, table=True):
    """What routing knows about a matter: enough to decide again after a return or a reopen."""

    __tablename__ = "routing_case"

    case_id: str = Field(primary_key=True, max_length=64)
    case_kind: str = Field(max_length=16)
    tracking_code: str = Field(max_length=32)
    county_code: str = Field(max_length=16)
    accused_unit: str = Field(max_length=200)
    facts: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    lead_unit: str | None = Field(default=None, max_length=200)
    co_units: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    named_complainant: bool = True
    complex_matter: bool = False
    received_at: datetime = Field(sa_type=UTCDateTime)
    round: int = 1
    return_count: int = 0
    previous_team_codes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    open: bool = True


class Assignment(SQLModel, table=True):
    __tablename__ = "routing_assignment"
    __table_args__ = (
        Index("ix_routing_assignment_case_current", "case_id", "current"),
        Index("ix_routing_assignment_team_open", "team_code", "open"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    case_id: str = Field(max_length=64)
    case_kind: str = Field(max_length=16)
    team_code: str = Field(max_length=32)
    kind: str = Field(max_length=16)
    rule: str = Field(max_length=64)
    reasons: list[str] = Field(sa_column=Column(JSON, nullable=False))
    participants: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    review_required: bool = False
    review_team_code: str | None = Field(default=None, max_length=32)
    key_clue: bool = False
    needs_supervisor: bool = False
    round: int = 1
    clocks: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    current: bool = True
    open: bool = True
    assigned_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BureauContact(SQLModel, table=True):
    """A bureau's 分管领导 and how to reach them: who a 通报 names and whom feedback's notices reach.

    ``bureau_code`` is the county's area code, or the city's for the city bureau.  Organisation
    data, edited by supervisors on the organisation page; seeded with fictional leaders in demo mode.
    """

    __tablename__ = "routing_bureau_contact"

    bureau_code: str = Field(primary_key=True, max_length=16)
    bureau_name: str = Field(max_length=100)
    leader_name: str | None = Field(default=None, max_length=64)
    leader_title: str | None = Field(default=None, max_length=64)
    phone: str | None = Field(default=None, max_length=32)
    email: str | None = Field(default=None, max_length=254)
    # The leader's account in intake (``leader-<code>``), for their 待办 and bell.
    leader_username: str | None = Field(default=None, max_length=64)
    updated_by: str = Field(default="seed", max_length=64)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
