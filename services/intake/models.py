"""Intake's tables.  Complainant identity lives only here, sealed with the identity key."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, UniqueConstraint
from sqlalchemy.orm import relationship
from sqlmodel import Column, Field, Relationship, SQLModel, Text

from shared.db import UTCDateTime, new_id, utcnow


class CaseStatus(StrEnum):
    """Where a complaint or a suggestion stands, as intake learns it from the other services."""

    RECEIVED = "received"
    ROUTED = "routed"
    CONCLUDED = "concluded"
    ANSWERED = "answered"
    REOPENED = "reopened"
    CLOSED = "closed"
    # Moved to another track (``shared.states.ReclassifyTarget``): later news about it changes nothing here.
    RECLASSIFIED = "reclassified"


# A matter in one of these states can no longer be moved to another track.
CLOSED_STATUSES = frozenset({CaseStatus.ANSWERED, CaseStatus.CLOSED, CaseStatus.RECLASSIFIED})


class Channel(StrEnum):
    """How a complaint reached the bureau."""

    PHONE = "phone"
    WEB = "web"
    LETTER = "letter"
    VISIT = "visit"
    WECHAT = "wechat"
    EMAIL = "email"
    TRANSFER_12345 = "transfer_12345"
    TRANSFER_XINFANG = "transfer_xinfang"
    # Sent by a connecting system (a platform) through the Open311 GeoReport v2 interface.
    OPEN311 = "open311"


class UserBase(SQLModel):
    username: str = Field(max_length=64, unique=True, index=True)
    role: str = Field(max_length=20)
    team_code: str | None = Field(default=None, max_length=32)
    display_name: str | None = Field(default=None, max_length=64)
    deputy_name: str | None = Field(default=None, max_length=64)
    deputy_delegation: str | None = Field(default=None, max_length=128)
    # A leader's county (or city) bureau: the code of its area, as in the units data.
    county_code: str | None = Field(default=None, max_length=16)
    active: bool = True


class User(UserBase, table=True):
    __tablename__ = "intake_user"

    id: int | None = Field(default=None, primary_key=True)
    password_hash: str = Field(max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Complaint(SQLModel, table=True):
    __tablename__ = "intake_complaint"
    __table_args__ = (
        Index("ix_intake_complaint_received", "received_at"),
        # The dashboard's figures (``statistics``): every column they read, after the period's start.
        Index(
            "ix_intake_complaint_figures",
            "received_at",
            "status",
            "county_code",
            "assigned_team_code",
            "linked_repeat",
            "repeat_of",
        ),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    tracking_code: str = Field(max_length=32, unique=True, index=True)
    query_secret_hash: str = Field(max_length=64)
    channel: str = Field(max_length=32)
    platform_ticket_no: str | None = Field(default=None, max_length=64, index=True)
    received_at: datetime = Field(sa_type=UTCDateTime)
    anonymous: bool = False
    identity_sealed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    name_masked: str | None = Field(default=None, max_length=64)
    phone_masked: str | None = Field(default=None, max_length=32)
    accused_unit: str = Field(max_length=200)
    accused_unit_code: str | None = Field(default=None, max_length=32)
    county_code: str = Field(max_length=16, index=True)
    accused_is_inspection_team: bool = False
    officers: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    allegations: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    attachments: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    incident_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    place: str | None = Field(default=None, max_length=500)
    account: str = Field(sa_column=Column(Text, nullable=False))
    injury_or_death: bool = False
    supervisor_flag: bool = False
    repeat_of: str | None = Field(default=None, max_length=64, index=True)
    repeat_after_rejection: bool = False
    # A repeat call about the open complaint ``repeat_of`` (重复件): linked to it, never worked on its own.
    linked_repeat: bool = False
    # Why the operator recorded a repeat of an open complaint as a new matter (作为新事项登记).
    new_matter_reason: str | None = Field(default=None, max_length=500)
    status: str = Field(default=CaseStatus.RECEIVED, max_length=32)
    assigned_team_code: str | None = Field(default=None, max_length=32)
    last_rating: str | None = Field(default=None, max_length=32)
    answered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ComplainantKey(SQLModel, table=True):
    """Keyed hashes of a complainant's phone and ID number, for finding earlier matters."""

    __tablename__ = "intake_complainant_key"

    complaint_id: str = Field(primary_key=True, max_length=64, foreign_key="intake_complaint.id")
    match_key: str = Field(primary_key=True, max_length=64, index=True)

    # Never loaded (lazy "raise"): declared so that a flush writes a new complaint before its keys.
    complaint: Complaint | None = Relationship(sa_relationship=relationship("Complaint", lazy="raise"))


class Suggestion(SQLModel, table=True):
    __tablename__ = "intake_suggestion"
    __table_args__ = (
        UniqueConstraint("session", "number", name="uq_intake_suggestion_session_number"),
        # The operator's list, newest first, a page by keyset (received_at, id).
        Index("ix_intake_suggestion_received", "received_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    tracking_code: str = Field(max_length=32, unique=True, index=True)
    query_secret_hash: str = Field(max_length=64)
    kind: str = Field(max_length=32)
    session: str = Field(max_length=200)
    number: str = Field(max_length=32)
    title: str = Field(max_length=300)
    text: str = Field(sa_column=Column(Text, nullable=False))
    deputy_name: str = Field(max_length=64, index=True)
    deputy_delegation: str = Field(max_length=128)
    # The deputy's account (username): whose suggestion it is. Names repeat within a delegation;
    # None when the deputy had no account when it was recorded.
    deputy_account: str | None = Field(default=None, max_length=64, index=True)
    deputy_phone: str | None = Field(default=None, max_length=32)
    co_signers: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    lead_unit: str = Field(max_length=200)
    co_units: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    received_at: datetime = Field(sa_type=UTCDateTime)
    complex_matter: bool = False
    status: str = Field(default=CaseStatus.RECEIVED, max_length=32)
    assigned_team_code: str | None = Field(default=None, max_length=32)
    reclassified_from: str | None = Field(default=None, max_length=64)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class IdentityAccess(SQLModel, table=True):
    """Every read of a complainant's full identity: who, when, why."""

    __tablename__ = "intake_identity_access"

    id: int | None = Field(default=None, primary_key=True)
    complaint_id: str = Field(max_length=64, index=True)
    accessor: str = Field(max_length=100)
    role: str = Field(max_length=20)
    purpose: str = Field(max_length=200)
    # The reader's own words beside the purpose chosen from the list; None on reads before it was asked.
    reason: str | None = Field(default=None, max_length=500)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SignInThrottle(SQLModel, table=True):
    """Wrong passwords counted per account (``account:<name>``) and per address (``address:<ip>``)."""

    __tablename__ = "intake_sign_in_throttle"

    key: str = Field(primary_key=True, max_length=200)
    failures: int = 0
    window_started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    blocked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Accounts only: set after too many wrong passwords, cleared by a supervisor.
    locked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RefreshToken(SQLModel, table=True):
    """A sign-in's refresh token, kept only as its hash; one use each, its successor in the same family."""

    __tablename__ = "intake_refresh_token"

    token_hash: str = Field(primary_key=True, max_length=64)
    family: str = Field(max_length=64, index=True)
    username: str = Field(max_length=64, index=True)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ImportStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ImportRowResult(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    DUPLICATE = "duplicate"


class ImportJob(SQLModel, table=True):
    """A bulk import of transferred matters (.xlsx), worked through in the background."""

    __tablename__ = "intake_import"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    filename: str = Field(max_length=255)
    status: str = Field(default=ImportStatus.RUNNING, max_length=16, index=True)
    rows: int = 0
    processed: int = 0
    accepted: int = 0
    refused: int = 0
    duplicates: int = 0
    # The parsed rows, sealed with the identity key (they hold names and phones); cleared when done.
    rows_sealed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    failure: str | None = Field(default=None, max_length=500)
    # Which instance works on it until when: another one takes over only after this passes.
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ImportRow(SQLModel, table=True):
    """The outcome of one row of an import: accepted with its tracking code, refused, or a duplicate."""

    __tablename__ = "intake_import_row"

    import_id: str = Field(primary_key=True, max_length=64, foreign_key="intake_import.id")
    row: int = Field(primary_key=True)
    result: str = Field(max_length=16)
    platform_ticket_no: str | None = Field(default=None, max_length=64)
    tracking_code: str | None = Field(default=None, max_length=32)
    field: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=500)


class ImportedTicket(SQLModel, table=True):
    """A platform ticket number recorded by an import: the key that keeps a re-import from recording twice."""

    __tablename__ = "intake_imported_ticket"

    platform_ticket_no: str = Field(primary_key=True, max_length=64)
    complaint_id: str = Field(max_length=64)
    tracking_code: str = Field(max_length=32)
    import_id: str = Field(max_length=64)
    row: int


class Open311Key(SQLModel, table=True):
    """A connecting system's Open311 API key, issued by a supervisor; only its hash is kept."""

    __tablename__ = "intake_open311_key"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True, index=True)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    active: bool = True
    revoked_by: str | None = Field(default=None, max_length=64)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
