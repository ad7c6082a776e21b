"""Verification's tables: a snapshot of each matter, the teams' tasks, findings and their history."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, LargeBinary
from sqlalchemy.orm import relationship
from sqlmodel import Column, Field, Relationship, SQLModel, Text

from shared.db import UTCDateTime, batch_insert_sentinel, new_id, utcnow


class TaskStatus(StrEnum):
    OPEN = "open"
    CLAIMED = "claimed"
    IN_REVIEW = "in_review"
    CONCLUDED = "concluded"
    RETURNED = "returned"
    SUPERSEDED = "superseded"
    WITHDRAWN = "withdrawn"


# A task in one of these still has work to do: it holds running clocks and takes evidence.
ACTIVE_TASK_STATUSES = (TaskStatus.OPEN, TaskStatus.CLAIMED, TaskStatus.IN_REVIEW)
# The statuses in which the cross-check team sees a task.
REVIEWER_VISIBLE_STATUSES = (TaskStatus.IN_REVIEW, TaskStatus.CONCLUDED)


class ReviewStatus(StrEnum):
    NONE = "none"
    PENDING = "pending"
    CONFIRMED = "confirmed"
    SENT_BACK = "sent_back"


class ClockStatus(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class OverdueStep(StrEnum):
    """The rungs of the overdue ladder, in the order a clock climbs them."""

    REMINDER = "reminder"
    DUE_TODAY = "due_today"
    CHASE = "chase"
    ESCALATION = "escalation"
    REBUKE = "rebuke"


class ExtensionStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REFUSED = "refused"


class RectificationStatus(StrEnum):
    OPEN = "open"
    DONE = "done"
    NOT_DONE = "not_done"


class LedgerMarkKind(StrEnum):
    SUPERVISED = "supervised"
    LEADER_ASSIGNED = "leader_assigned"


# The clocks that set a task's own due date; the others (notice, co-handling view) run beside it.
MAIN_CLOCKS = ("verification", "deputy_reply", "rehandle")
# The one classification that waits for a follow-up reply (B: 正在解决或列入计划解决).
FOLLOW_UP_CLASSIFICATION = "B"


class MatterSnapshot(SQLModel, table=True):
    """What an inspector needs to know about the matter, without the complainant's identity."""

    __tablename__ = "verification_matter"
    # The dashboard and the measures count matters by when they arrived, in one county or all; the
    # ledger pages through them in the same order, with case_id as the keyset's tie-break.
    __table_args__ = (
        Index("ix_verification_matter_received", "received_at", "case_id"),
        Index("ix_verification_matter_county_received", "county_code", "received_at", "case_id"),
    )

    case_id: str = Field(primary_key=True, max_length=64)
    case_kind: str = Field(max_length=16, description="a CaseKind")
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
        # The matter's latest task (the figures' group), and the tasks concluded in a period.
        Index("ix_verification_task_case_created", "case_id", "created_at"),
        Index("ix_verification_task_concluded", "status", "concluded_at"),
        # The ledger's candidates: open tasks, and B-class matters waiting for their follow-up reply.
        Index("ix_verification_task_status_id", "status", "id"),
        Index("ix_verification_task_classification", "classification", "status"),
        # The task board of the cross-checking team: the tasks it reviews, by status.
        Index("ix_verification_task_review_status", "review_team_code", "status"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    case_id: str = Field(max_length=64, index=True)
    case_kind: str = Field(max_length=16, description="a CaseKind")
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
    status: str = Field(default=TaskStatus.OPEN, max_length=16, description="a TaskStatus")
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    clocks: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    concluded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    classification: str | None = Field(default=None, max_length=1)
    # The worst overdue step (its rank in stats.OVERDUE_STEPS, 0 for none) its running clocks took:
    # the dashboard's open tasks are counted by it (``open_figures``).
    overdue_rank: int = 0


class TaskParticipant(SQLModel, table=True):
    """A team taking part in a task (a joint check, co-handling): ``Task.participants`` as rows, so
    that a team's task board finds its tasks through an index, not by reading every task's list."""

    __tablename__ = "verification_task_participant"

    team_code: str = Field(primary_key=True, max_length=32)
    task_id: str = Field(primary_key=True, max_length=64, foreign_key="verification_task.id")


class Finding(SQLModel, table=True):
    __tablename__ = "verification_finding"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    task_id: str = Field(max_length=64, index=True, foreign_key="verification_task.id")
    outcome: str = Field(max_length=32)
    summary: str = Field(sa_column=Column(Text, nullable=False))
    facts: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    no_finding_reason: str | None = Field(default=None, max_length=500)
    classification: str | None = Field(default=None, max_length=1)
    accountability: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    per_allegation: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    per_officer: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    evidence_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    follow_up: bool = False
    recorded_by: str = Field(max_length=64)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    review_status: str = Field(default=ReviewStatus.NONE, max_length=16, description="a ReviewStatus")
    reviewed_by: str | None = Field(default=None, max_length=64)
    review_reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reviewed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class TaskEvent(SQLModel, table=True):
    """A task's history as the team sees it."""

    __tablename__ = "verification_task_event"
    __table_args__ = (batch_insert_sentinel(),)

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


class RepeatCall(SQLModel, table=True):
    """A repeat call (重复来电) linked to an open matter: shown on its task, never a task of its own.

    Only when, how and who recorded it: never the caller's identity.
    """

    __tablename__ = "verification_repeat_call"
    __table_args__ = (Index("ix_verification_repeat_call_received", "received_at"),)

    repeat_case_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(max_length=64, index=True, description="the open matter it repeats")
    tracking_code: str = Field(max_length=32)
    channel: str = Field(max_length=32)
    received_at: datetime = Field(sa_type=UTCDateTime)
    recorded_by: str | None = Field(default=None, max_length=64, description="the operator's account")


class TaskClock(SQLModel, table=True):
    """One named deadline of a task, with the next step of its overdue ladder.

    Deadlines live here, not in memory: the scheduler finds what is due through
    the (status, next_step_at) index, so after downtime it fires what fell due.
    """

    __tablename__ = "verification_clock"
    __table_args__ = (
        Index("ix_verification_clock_due", "status", "next_step_at"),
        Index("uq_verification_clock_task_name", "task_id", "name", unique=True),
        batch_insert_sentinel(),
    )

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(max_length=64, foreign_key="verification_task.id")
    case_id: str = Field(max_length=64, index=True)
    team_code: str = Field(max_length=32)
    # A rectification item's clock is named after the item ("rectification:<item id>").
    name: str = Field(max_length=64)
    label: str = Field(max_length=64)
    rule: str = Field(sa_column=Column(Text, nullable=False))
    source: str = Field(sa_column=Column(Text, nullable=False))
    due_at: datetime = Field(sa_type=UTCDateTime)
    original_due_at: datetime = Field(sa_type=UTCDateTime)
    extended: bool = False
    status: str = Field(default=ClockStatus.RUNNING, max_length=16, description="a ClockStatus")
    stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    next_step: str | None = Field(default=None, max_length=16)
    next_step_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    # Never loaded (lazy "raise"): declared so that a flush writes a new task before its clocks,
    # which lets a batch of new tasks and clocks go to the database in one flush.
    task: Task | None = Relationship(sa_relationship=relationship("Task", lazy="raise"))


class LadderStep(SQLModel, table=True):
    """A step of the overdue ladder that happened; unique per clock so it happens once."""

    __tablename__ = "verification_ladder_step"
    __table_args__ = (Index("uq_verification_ladder_clock_step", "clock_id", "step", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    clock_id: int = Field(foreign_key="verification_clock.id")
    task_id: str = Field(max_length=64, index=True)
    case_id: str = Field(max_length=64)
    step: str = Field(max_length=16)
    due_at: datetime = Field(sa_type=UTCDateTime)
    at: datetime = Field(sa_type=UTCDateTime)
    notified: str = Field(max_length=200, description="who the step reaches, in words")


class Extension(SQLModel, table=True):
    __tablename__ = "verification_extension"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    task_id: str = Field(max_length=64, index=True, foreign_key="verification_task.id")
    case_id: str = Field(max_length=64)
    clock: str = Field(max_length=32)
    days: int
    reason: str = Field(sa_column=Column(Text, nullable=False))
    requested_by: str = Field(max_length=64)
    requested_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    status: str = Field(default=ExtensionStatus.PENDING, max_length=16, description="an ExtensionStatus")
    decided_by: str | None = Field(default=None, max_length=64)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decision_note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    new_due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Evidence(SQLModel, table=True):
    __tablename__ = "verification_evidence"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    task_id: str = Field(max_length=64, index=True, foreign_key="verification_task.id")
    kind: str = Field(max_length=16, description="recording, document, interview, photo, other")
    description: str = Field(sa_column=Column(Text, nullable=False))
    reference: str | None = Field(default=None, max_length=300, description="where the original is kept")
    filename: str | None = Field(default=None, max_length=255)
    content_type: str | None = Field(default=None, max_length=100)
    size_bytes: int | None = None
    sha256: str | None = Field(default=None, max_length=64, index=True)
    added_by: str = Field(max_length=64)
    added_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Rectification(SQLModel, table=True):
    __tablename__ = "verification_rectification"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    task_id: str = Field(max_length=64, index=True, foreign_key="verification_task.id")
    case_id: str = Field(max_length=64)
    item: str = Field(sa_column=Column(Text, nullable=False))
    owner: str = Field(max_length=100)
    due_date: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(default=RectificationStatus.OPEN, max_length=16, description="a RectificationStatus")
    checked_by: str | None = Field(default=None, max_length=64)
    checked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    check_note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    added_by: str = Field(max_length=64)
    added_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CoHandlingView(SQLModel, table=True):
    __tablename__ = "verification_co_view"

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(max_length=64, index=True, foreign_key="verification_task.id")
    team_code: str = Field(max_length=32)
    view: str = Field(sa_column=Column(Text, nullable=False))
    given_by: str = Field(max_length=64)
    given_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LedgerMark(SQLModel, table=True):
    """A supervisor's mark on a long-pending matter: 督办件 or 领导包案."""

    __tablename__ = "verification_ledger_mark"
    __table_args__ = (Index("uq_verification_ledger_mark", "case_id", "mark", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=64)
    mark: str = Field(max_length=20, description="a LedgerMarkKind")
    leader: str | None = Field(default=None, max_length=64)
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    marked_by: str = Field(max_length=64)
    marked_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LedgerCloseOff(SQLModel, table=True):
    """A supervisor's close-off (销号) of a matter on the ledger, with the reason; the matter leaves
    the ledger until new work (a task, a mark) comes after it."""

    __tablename__ = "verification_ledger_closeoff"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=64, index=True)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    closed_by: str = Field(max_length=64)
    closed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class WarningThreshold(SQLModel, table=True):
    """An early-warning threshold (预警) a supervisor changed; absent, the data file's default holds."""

    __tablename__ = "verification_warning_threshold"

    measure: str = Field(primary_key=True, max_length=32, description="complaints or substantiated")
    count: int
    window_months: int
    reason: str = Field(sa_column=Column(Text, nullable=False))
    updated_by: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class WarningHit(SQLModel, table=True):
    """One matter counted against an officer (badge number) or a unit for an early-warning measure."""

    __tablename__ = "verification_warning_hit"
    __table_args__ = (
        Index(
            "uq_verification_warning_hit", "subject_kind", "subject_key", "measure", "case_id", unique=True
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    subject_kind: str = Field(max_length=16, description="officer or unit")
    subject_key: str = Field(max_length=200)
    measure: str = Field(max_length=32)
    case_id: str = Field(max_length=64)
    county_code: str | None = Field(default=None, max_length=16)
    at: datetime = Field(sa_type=UTCDateTime)


class EarlyWarning(SQLModel, table=True):
    """A crossing of an early-warning threshold, once per crossing (the matter that crossed it)."""

    __tablename__ = "verification_early_warning"
    __table_args__ = (
        Index(
            "uq_verification_early_warning",
            "subject_kind",
            "subject_key",
            "measure",
            "crossing_case_id",
            unique=True,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    subject_kind: str = Field(max_length=16)
    subject_key: str = Field(max_length=200)
    measure: str = Field(max_length=32)
    county_code: str | None = Field(default=None, max_length=16)
    count: int
    threshold: int
    window_months: int
    crossing_case_id: str = Field(max_length=64)
    case_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    raised_at: datetime = Field(sa_type=UTCDateTime)


class RoundRating(SQLModel, table=True):
    """The complainant's rating of one round's answer, from feedback's ``RatingRecorded``: it counts
    for the team that concluded that round (statistics), not the team the matter sits with now."""

    __tablename__ = "verification_rating"
    __table_args__ = (
        Index("uq_verification_rating_case_round", "case_id", "round", unique=True),
        Index("ix_verification_rating_at", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=64)
    round: int
    rating: str = Field(max_length=32, description="a Rating")
    at: datetime = Field(sa_type=UTCDateTime)


class ReportStatus(StrEnum):
    GENERATING = "generating"
    DONE = "done"
    FAILED = "failed"


class Report(SQLModel, table=True):
    """A 督察工作通报 (monthly or yearly, city or one county), its Word and Excel files kept in the row:
    every instance serves every report, and a database backup keeps them."""

    __tablename__ = "verification_report"
    __table_args__ = (
        # The scheduled run's key ("scheduled:<scope>:<period>:<start>"): two instances or a restart
        # never make the same scheduled report twice. On-demand reports have none (NULLs differ).
        Index("uq_verification_report_schedule", "schedule_key", unique=True),
        Index("ix_verification_report_generated", "generated_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    scope: str = Field(max_length=16, description="'city' or a county code")
    scope_name: str = Field(max_length=100)
    period: str = Field(max_length=8, description="'month' or 'year'")
    start: date
    end: date
    generated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    generated_by: str = Field(max_length=64, description="'system' or the user's name")
    status: str = Field(default=ReportStatus.GENERATING, max_length=16, description="a ReportStatus")
    schedule_key: str | None = Field(default=None, max_length=80)
    attempts: int = 0
    docx: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    xlsx: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class DailyFigure(SQLModel, table=True):
    """The dashboard's summary (``figures``): counters per local day (the bureau's time zone),
    county, team and kind of matter, kept by the code that changes the facts, in its transaction.

    Each counter has its own day: ``received`` the matter's arrival, for the team it sits with now
    (its latest task); ``concluded`` and the three after it the task's conclusion, for the team that
    concluded it; the ratings the rating's, for the team that concluded the rated round.  "" stands
    for no county or no team (a primary key has no NULLs to match an upsert on).
    """

    __tablename__ = "verification_daily_figure"
    # SQLite: the rows live in the primary key's b-tree, so reading a year of days is one range
    # scan, not an index scan plus a table lookup per row.
    __table_args__ = {"sqlite_with_rowid": False}

    day: date = Field(primary_key=True)
    county_code: str = Field(primary_key=True, max_length=16)
    team_code: str = Field(primary_key=True, max_length=32)
    case_kind: str = Field(primary_key=True, max_length=16, description="a CaseKind")
    received: int = 0
    concluded: int = 0
    on_time: int = 0
    with_outcome: int = 0
    substantiated: int = 0
    rated: int = 0
    satisfied: int = 0
    basically_satisfied: int = 0
    unsatisfied: int = 0


class OpenFigure(SQLModel, table=True):
    """The dashboard's open tasks (``open_figures``): how many per county of the matter, team, kind
    and worst overdue step reached (``Task.overdue_rank``), kept wherever one of those changes."""

    __tablename__ = "verification_open_figure"
    __table_args__ = {"sqlite_with_rowid": False}

    county_code: str = Field(primary_key=True, max_length=16)
    team_code: str = Field(primary_key=True, max_length=32)
    case_kind: str = Field(primary_key=True, max_length=16, description="a CaseKind")
    overdue_rank: int = Field(primary_key=True)
    open: int = 0
