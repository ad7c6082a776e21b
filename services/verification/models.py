"""Verification's tables: a snapshot of each matter, the teams' tasks, findings and their history."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import JSON, Index
from sqlmodel import Column, Field, SQLModel, Text

from shared.db import UTCDateTime, utcnow


class MatterSnapshot(SQLModel, table=True):
    """What an inspector needs to know about the matter, without the complainant's identity."""

    __tablename__ = "verification_matter"

    case_id: str = Field(primary_key=True, max_length=64)
    case_kind: str = Field(max_length=16)
    tracking_code: str = Field(max_length=32)
    received_at: datetime = Field(sa_type=UTCDateTime)
    title: str = Field(max_length=300)
    accused_unit: str | None = Field(default=None, max_length=200)
    county_code: str | None = Field(default=None, max_length=16)
    officers: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    allegations: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    incident_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    place: str | None = Field(default=None, max_length=500)
    text: str = Field(sa_column=Column(Text, nullable=False))
    anonymous: bool = False


class Task(SQLModel, table=True):
    __tablename__ = "verification_task"
    __table_args__ = (
        Index("ix_verification_task_team_status", "team_code", "status"),
        Index("ix_verification_task_due", "status", "due_at"),
    )

    id: str = Field(default_factory=lambda: str(uuid4()), primary_key=True, max_length=64)
    case_id: str = Field(max_length=64, index=True)
    case_kind: str = Field(max_length=16)
    assignment_id: str = Field(max_length=64, unique=True)
    team_code: str = Field(max_length=32)
    team_name: str = Field(max_length=100)
    assignment_kind: str = Field(max_length=16)
    participants: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    review_required: bool = False
    review_team_code: str | None = Field(default=None, max_length=32)
    key_clue: bool = False
    round: int = 1
    status: str = Field(
        default="open", max_length=16, description="open, claimed, in_review, concluded, returned, superseded"
    )
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    clocks: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    concluded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Finding(SQLModel, table=True):
    __tablename__ = "verification_finding"

    id: str = Field(default_factory=lambda: str(uuid4()), primary_key=True, max_length=64)
    task_id: str = Field(max_length=64, index=True, foreign_key="verification_task.id")
    outcome: str = Field(max_length=32)
    summary: str = Field(sa_column=Column(Text, nullable=False))
    facts: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    no_finding_reason: str | None = Field(default=None, max_length=500)
    classification: str | None = Field(default=None, max_length=1)
    accountability: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    per_allegation: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    recorded_by: str = Field(max_length=64)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    review_status: str = Field(
        default="none", max_length=16, description="none, pending, confirmed, sent_back"
    )
    reviewed_by: str | None = Field(default=None, max_length=64)
    review_reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reviewed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class TaskEvent(SQLModel, table=True):
    """A task's history as the team sees it."""

    __tablename__ = "verification_task_event"

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(max_length=64, index=True)
    action: str = Field(max_length=32)
    actor: str = Field(max_length=64)
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class WithdrawnMatter(SQLModel, table=True):
    """A matter that left inspection (reclassified); an assignment arriving late makes no task."""

    __tablename__ = "verification_withdrawn"

    case_id: str = Field(primary_key=True, max_length=64)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
