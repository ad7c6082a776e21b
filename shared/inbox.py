"""What a consumer has processed, recorded in the same transaction as its effect."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from shared.db import UTCDateTime, utcnow


class InboxRecord(SQLModel, table=True):
    __tablename__ = "inbox"

    consumer: str = Field(primary_key=True, max_length=100)
    event_id: str = Field(primary_key=True, max_length=64)
    event_type: str = Field(max_length=100)
    case_id: str = Field(max_length=64, index=True)
    processed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
