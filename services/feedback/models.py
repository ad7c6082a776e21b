"""Feedback's tables: a public-safe projection of each matter, its timeline, answers and ratings."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import JSON, Index
from sqlmodel import Column, Field, SQLModel, Text

from shared.db import UTCDateTime, utcnow


class CaseView(SQLModel, table=True):
    __tablename__ = "feedback_case"
    __table_args__ = (Index("ix_feedback_case_deputy", "deputy_name", "deputy_delegation"),)

    case_id: str = Field(primary_key=True, max_length=64)
    case_kind: str = Field(max_length=16)
    tracking_code: str = Field(max_length=32, unique=True, index=True)
    query_secret_hash: str | None = Field(default=None, max_length=64)
    status: str = Field(default="received", max_length=16)
    received_at: datetime = Field(sa_type=UTCDateTime)
    anonymous: bool = False
    accused_unit: str | None = Field(default=None, max_length=200)
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    title: str | None = Field(default=None, max_length=300)
    session: str | None = Field(default=None, max_length=200)
    number: str | None = Field(default=None, max_length=32)
    suggestion_kind: str | None = Field(default=None, max_length=32)
    deputy_name: str | None = Field(default=None, max_length=64)
    deputy_delegation: str | None = Field(default=None, max_length=128)
    lead_unit: str | None = Field(default=None, max_length=200)
    team_code: str | None = Field(default=None, max_length=32)
    team_name: str | None = Field(default=None, max_length=100)
    teams_so_far: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    clocks: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    round: int = 1
    reopen_count: int = 0
    outcome: str | None = Field(default=None, max_length=32)
    classification: str | None = Field(default=None, max_length=1)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TimelineEntry(SQLModel, table=True):
    __tablename__ = "feedback_timeline"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=64, index=True)
    stage: str = Field(max_length=16)
    label: str = Field(max_length=200, description="public wording: no names, no internal notes")
    at: datetime = Field(sa_type=UTCDateTime)


class Answer(SQLModel, table=True):
    __tablename__ = "feedback_answer"

    id: str = Field(default_factory=lambda: str(uuid4()), primary_key=True, max_length=64)
    case_id: str = Field(max_length=64, index=True)
    round: int = 1
    source_event_id: str = Field(max_length=64, unique=True)
    status: str = Field(
        default="pending_approval", max_length=20, description="pending_approval, delivered, failed"
    )
    text: str = Field(sa_column=Column(Text, nullable=False))
    outcome: str = Field(max_length=32)
    classification: str | None = Field(default=None, max_length=1)
    channel: str | None = Field(default=None, max_length=16)
    approved_by: str | None = Field(default=None, max_length=64)
    approved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    delivery_attempts: int = 0
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RatingRow(SQLModel, table=True):
    __tablename__ = "feedback_rating"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=64, index=True)
    round: int
    rating: str = Field(max_length=24)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    source: str = Field(max_length=16)
    recorded_by: str | None = Field(default=None, max_length=64)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
