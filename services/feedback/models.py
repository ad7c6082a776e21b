"""Feedback's tables: a public-safe projection of each matter, its timeline, answers, deliveries and ratings.

Nothing here holds a complainant's name, phone, e-mail or address: a delivery
asks intake for the contact at the moment it sends and keeps only the outcome.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, LargeBinary, UniqueConstraint, text
from sqlmodel import Column, Field, SQLModel, Text

from shared.db import UTCDateTime, batch_insert_sentinel, new_id, utcnow


class CaseStatus(StrEnum):
    """The public status of a matter, as the query shows it."""

    RECEIVED = "received"
    ROUTED = "routed"
    VERIFYING = "verifying"
    REVIEWING = "reviewing"
    CONCLUDED = "concluded"
    ANSWERED = "answered"
    CLOSED = "closed"
    REOPENED = "reopened"


class Stage(StrEnum):
    """The stage a timeline entry marks."""

    RECEIVED = "received"
    ROUTED = "routed"
    VERIFYING = "verifying"
    REVIEWING = "reviewing"
    CONCLUDED = "concluded"
    EXTENDED = "extended"
    ANSWERED = "answered"
    DELIVERED = "delivered"
    RATED = "rated"
    FOLLOW_UP = "follow_up"
    REVIEW = "review"
    REOPENED = "reopened"
    CLOSED = "closed"
    # A repeat call (重复来电) linked to this matter (重复件).
    REPEAT_CALL = "repeat_call"


class AnswerStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"
    DELIVERED = "delivered"


class DeliveryKind(StrEnum):
    ANSWER = "answer"
    NOTICE = "notice"
    # A message to a member of staff (a ladder step, an early warning): ``Delivery.recipient`` says who.
    STAFF = "staff"


class DeliveryMode(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Channel(StrEnum):
    """How something reached the person; ``none``: only the public query (or the deputy's download)."""

    SMS = "sms"
    EMAIL = "email"
    PHONE = "phone"
    LETTER = "letter"
    NONE = "none"


class Source(StrEnum):
    """Who gave a rating or asked for a review."""

    PUBLIC = "public"
    OPERATOR = "operator"
    DEPUTY = "deputy"


# Deliveries a person may still have to act on: not sent, not cancelled.
UNSENT = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)


class CaseView(SQLModel, table=True):
    __tablename__ = "feedback_case"
    __table_args__ = (
        Index("ix_feedback_case_deputy", "deputy_name", "deputy_delegation"),
        Index("ix_feedback_case_deputy_account", "deputy_account"),
    )

    case_id: str = Field(primary_key=True, max_length=64)
    case_kind: str = Field(max_length=16)
    tracking_code: str = Field(max_length=32, unique=True, index=True)
    query_secret_hash: str | None = Field(default=None, max_length=64)
    status: str = Field(default=CaseStatus.RECEIVED, max_length=16)
    received_at: datetime = Field(sa_type=UTCDateTime)
    anonymous: bool = False
    accused_unit: str | None = Field(default=None, max_length=200)
    county_code: str | None = Field(default=None, max_length=16, description="the accused unit's county")
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    title: str | None = Field(default=None, max_length=300)
    session: str | None = Field(default=None, max_length=200)
    number: str | None = Field(default=None, max_length=32)
    suggestion_kind: str | None = Field(default=None, max_length=32)
    deputy_name: str | None = Field(default=None, max_length=64)
    deputy_delegation: str | None = Field(default=None, max_length=128)
    # The deputy's account (username): whose suggestion it is. None for a suggestion recorded
    # before accounts were linked, or for a deputy who had no account then.
    deputy_account: str | None = Field(default=None, max_length=64)
    lead_unit: str | None = Field(default=None, max_length=200)
    team_code: str | None = Field(default=None, max_length=32)
    team_name: str | None = Field(default=None, max_length=100)
    teams_so_far: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    clocks: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    round: int = 1
    reopen_count: int = 0
    outcome: str | None = Field(default=None, max_length=32)
    classification: str | None = Field(default=None, max_length=1)
    awaiting_follow_up: bool = Field(
        default=False, description="a B-class reply was accepted; the ledger waits for the follow-up reply"
    )
    closed_note: str | None = Field(default=None, max_length=300)
    # A linked repeat (重复件): the open matter it repeats, whose status, timeline and answer it shows.
    repeat_of: str | None = Field(default=None, max_length=64, index=True)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TimelineEntry(SQLModel, table=True):
    __tablename__ = "feedback_timeline"
    __table_args__ = (batch_insert_sentinel(),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=64, index=True)
    stage: str = Field(max_length=16)
    label: str = Field(max_length=200, description="public wording: no names, no internal notes")
    at: datetime = Field(sa_type=UTCDateTime)


class Answer(SQLModel, table=True):
    """The answer to a complainant, or the reply to a deputy: drafted, approved, then published.

    ``status`` is ``pending_approval`` until a supervisor approves it and
    ``delivered`` from then on (it is on the public query at once); whether it
    reached the person is tracked by its ``Delivery`` rows.
    """

    __tablename__ = "feedback_answer"
    # The approvals list (by status, oldest first), a page by keyset (created_at, id).
    __table_args__ = (Index("ix_feedback_answer_status_created", "status", "created_at", "id"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    case_id: str = Field(max_length=64, index=True)
    round: int = 1
    source_event_id: str = Field(max_length=64, unique=True)
    follow_up: bool = Field(default=False, description="the follow-up reply of a B-class suggestion")
    status: str = Field(default=AnswerStatus.PENDING_APPROVAL, max_length=20, description="AnswerStatus")
    text: str = Field(sa_column=Column(Text, nullable=False))
    outcome: str = Field(max_length=32)
    classification: str | None = Field(default=None, max_length=1)
    channel: str | None = Field(
        default=None, max_length=16, description="how it first reached the person; none: public query only"
    )
    approved_by: str | None = Field(default=None, max_length=64)
    approved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(
        default=None, sa_type=UTCDateTime, description="published on the public query (approval)"
    )
    served_at: datetime | None = Field(
        default=None,
        sa_type=UTCDateTime,
        description="reached the person (first successful delivery, or publication when nobody can be "
        "sent to); the 30 days for a review request run from here",
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Delivery(SQLModel, table=True):
    """One message to one complainant (an answer, or a notice such as an extension), sent or recorded.

    Automatic deliveries (SMS, e-mail) are retried by the delivery worker from
    this table, so a restart resumes them; ``idempotency_key`` is the same on
    every attempt, so a retried POST to the gateway is not a second SMS.
    """

    __tablename__ = "feedback_delivery"
    __table_args__ = (
        Index("ix_feedback_delivery_due", "status", "next_attempt_at"),
        # The lists' keysets: 消息记录 (sent, newest first) and 送达处理 (latest changed first).
        Index("ix_feedback_delivery_status_sent", "status", "sent_at", "id"),
        Index("ix_feedback_delivery_updated", "updated_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    case_id: str = Field(max_length=64, index=True)
    answer_id: str | None = Field(default=None, max_length=64, index=True)
    kind: str = Field(max_length=16, description="DeliveryKind")
    mode: str = Field(max_length=16, description="DeliveryMode: auto (SMS or e-mail by the worker), manual")
    channel: str | None = Field(default=None, max_length=16, description="Channel")
    status: str = Field(default=DeliveryStatus.PENDING, max_length=16, description="DeliveryStatus")
    subject: str | None = Field(default=None, max_length=200)
    text: str = Field(sa_column=Column(Text, nullable=False))
    idempotency_key: str = Field(max_length=100, unique=True)
    attempts: int = Field(default=0, description="automatic attempts since creation or the last manual retry")
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=300, description="never quotes the contact")
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    recorded_by: str | None = Field(default=None, max_length=64)
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    correlation_id: str | None = Field(default=None, max_length=64)
    recipient: str | None = Field(
        default=None,
        max_length=64,
        description="the staff audience of a staff message (leader:<county>, role:supervisor); None: the complainant",
    )
    sent_to_masked: str | None = Field(
        default=None, max_length=64, description="the phone or e-mail it went to, masked (138****0001)"
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Letter(SQLModel, table=True):
    """The reply letter to a deputy as issued: fixed at approval so settings changed later do not alter it."""

    __tablename__ = "feedback_letter"

    answer_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(max_length=64, index=True)
    title: str = Field(max_length=300)
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RatingRow(SQLModel, table=True):
    __tablename__ = "feedback_rating"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=64, index=True)
    answer_id: str | None = Field(default=None, max_length=64, index=True)
    round: int
    rating: str = Field(max_length=24)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    source: str = Field(max_length=16)
    recorded_by: str | None = Field(default=None, max_length=64)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ReviewRequest(SQLModel, table=True):
    """A request for review (复查) of a written answer; its reason is internal, never shown publicly."""

    __tablename__ = "feedback_review_request"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=64, index=True)
    answer_id: str = Field(max_length=64)
    round: int
    reason: str = Field(sa_column=Column(Text, nullable=False))
    source: str = Field(max_length=16, description="Source")
    recorded_by: str | None = Field(default=None, max_length=64)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AttemptCounter(SQLModel, table=True):
    """Failed public-query attempts of one client address or one tracking code, for every instance.

    A leaky counter kept as one moment: ``free_at`` is when the failures counted so far will have
    drained (``services/feedback/ratelimit.py`` explains the arithmetic). ``key`` is a keyed hash,
    so the table holds no address and no tracking code.
    """

    __tablename__ = "feedback_attempt_counter"

    key: str = Field(primary_key=True, max_length=64)
    free_at: float = Field(index=True, description="seconds since the epoch; a row past it counts nothing")


class NotificationKind(StrEnum):
    """What a notification (通知) or 待办 item is about: the acceptance contract's ``kind``."""

    REMINDER = "reminder"
    CHASE = "chase"
    ESCALATION = "escalation"
    REBUKE = "rebuke"
    ACCEPTANCE_NOTICE = "acceptance_notice"
    APPROVAL_DUE = "approval_due"
    FOLLOW_UP_DUE = "follow_up_due"
    RECTIFICATION_DUE = "rectification_due"
    DELIVERY_FAILED = "delivery_failed"
    EARLY_WARNING = "early_warning"
    NEEDS_SUPERVISOR = "needs_supervisor"


class Notification(SQLModel, table=True):
    """One notification (通知) or 待办 item, addressed to an audience (``notifications`` explains them).

    Created once per ``(dedupe_key, audience)``: a redelivered event finds it there.  Never names a
    complainant: the title carries the tracking code, the step and the deadline.

    ``read_deadline`` (one working day after sending, fixed when it is created) and
    ``first_read_at`` (anyone's first reading) make the 通知送达 figures one aggregate over the
    ``stats`` index, which holds every column they read.
    """

    __tablename__ = "feedback_notification"
    __table_args__ = (
        UniqueConstraint("dedupe_key", "audience", name="uq_feedback_notification_dedupe"),
        Index("ix_feedback_notification_audience", "audience", "created_at"),
        # The 待办 list: an audience's open items, newest first, without reading the handled ones.
        Index(
            "ix_feedback_notification_open",
            "audience",
            "created_at",
            "id",
            sqlite_where=text("handled_at IS NULL"),
            postgresql_where=text("handled_at IS NULL"),
        ),
        Index(
            "ix_feedback_notification_stats",
            "created_at",
            "county_code",
            "team_code",
            "kind",
            "read_deadline",
            "first_read_at",
        ),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    kind: str = Field(max_length=32, description="NotificationKind")
    audience: str = Field(max_length=64)
    dedupe_key: str = Field(max_length=200)
    case_id: str | None = Field(default=None, max_length=64, index=True)
    tracking_code: str | None = Field(default=None, max_length=32)
    county_code: str | None = Field(default=None, max_length=16)
    team_code: str | None = Field(default=None, max_length=32)
    title: str = Field(max_length=300)
    link: str | None = Field(default=None, max_length=300)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    handled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    handled_by: str | None = Field(default=None, max_length=64)
    read_deadline: datetime = Field(sa_type=UTCDateTime, description="unread after this: counted as unread")
    first_read_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class NotificationRead(SQLModel, table=True):
    """Who read a notification, and when: one row per person."""

    __tablename__ = "feedback_notification_read"
    __table_args__ = (UniqueConstraint("notification_id", "username", name="uq_feedback_notification_read"),)

    id: int | None = Field(default=None, primary_key=True)
    notification_id: str = Field(max_length=64)
    username: str = Field(max_length=64)
    read_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class NotificationDay(SQLModel, table=True):
    """A local day (the bureau's time zone) whose notifications the 通知送达 figures read from the
    summary (``NotificationFigure``), not from the notifications (``notification_summary``).

    Written with the day's figure rows in one transaction, once every notification of the day is
    past its read deadline (and the margin); deleted with them when a notification arrives late
    for the day.  A day without a row is counted from the notifications themselves.
    """

    __tablename__ = "feedback_notification_day"
    __table_args__ = {"sqlite_with_rowid": False}

    day: date = Field(primary_key=True)
    # Where the day started and ended when it was summarised: a day cut in another time zone (the
    # bureau's TIMEZONE changed, or differed where the back-fill ran) is read from the notifications.
    starts_at: datetime = Field(sa_type=UTCDateTime)
    ends_at: datetime = Field(sa_type=UTCDateTime)
    notifications: int = Field(description="notifications sent that day, when summarised")
    last_deadline: datetime | None = Field(
        default=None, sa_type=UTCDateTime, description="the latest read deadline of the day's notifications"
    )
    summarised_at: datetime = Field(sa_type=UTCDateTime)


class NotificationFigure(SQLModel, table=True):
    """The 通知送达 figures of a summarised day (``NotificationDay``): per county, team and kind,
    the notifications sent and those not read by their deadline.  "" stands for no county or no
    team (the figures count the two as one group)."""

    __tablename__ = "feedback_notification_figure"
    # SQLite: the rows live in the primary key's b-tree, so reading 90 days is one range scan.
    __table_args__ = {"sqlite_with_rowid": False}

    day: date = Field(primary_key=True)
    county_code: str = Field(primary_key=True, max_length=16)
    team_code: str = Field(primary_key=True, max_length=32)
    kind: str = Field(primary_key=True, max_length=32, description="NotificationKind")
    sent: int
    late: int = Field(description="not read by the read deadline")


class FeedbackClock(SQLModel, table=True):
    """One of feedback's own deadlines (answer approval, the follow-up call 回访) with its ladder.

    ``subject_id`` is what the clock is about (the answer), so each starts once per answer; the
    scheduler (``shared.ladder``) finds due steps through the (status, next_step_at) index.
    """

    __tablename__ = "feedback_clock"
    __table_args__ = (
        Index("ix_feedback_clock_due", "status", "next_step_at"),
        Index("uq_feedback_clock_name_subject", "name", "subject_id", unique=True),
        # The clocks and 回访 lists: running ones, soonest due first, a page by keyset (due_at, id).
        Index("ix_feedback_clock_status_due", "status", "due_at", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=64, index=True)
    name: str = Field(max_length=32, description="answer_approval or follow_up")
    subject_id: str = Field(max_length=64, description="the answer the clock is about")
    label: str = Field(max_length=64)
    rule: str = Field(sa_column=Column(Text, nullable=False))
    source: str = Field(sa_column=Column(Text, nullable=False))
    started_at: datetime = Field(sa_type=UTCDateTime)
    due_at: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(default="running", max_length=16, description="running or stopped")
    stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    stop_note: str | None = Field(default=None, max_length=200)
    next_step: str | None = Field(default=None, max_length=16)
    next_step_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = Field(default=0, description="follow-up calls that did not get through")


class FeedbackClockStep(SQLModel, table=True):
    """A step of a feedback clock's ladder that happened; unique per clock so it happens once."""

    __tablename__ = "feedback_clock_step"
    __table_args__ = (Index("uq_feedback_clock_step", "clock_id", "step", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    clock_id: int = Field(foreign_key="feedback_clock.id")
    case_id: str = Field(max_length=64)
    step: str = Field(max_length=16)
    due_at: datetime = Field(sa_type=UTCDateTime)
    at: datetime = Field(sa_type=UTCDateTime)
