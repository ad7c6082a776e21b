"""Every event that crosses the bus, defined once.

Events are facts, named in the past tense, and versioned: a consumer decodes
by (type, version), so a v2 can be published beside v1 while consumers move
over.  None of them carries a complainant's name, phone or ID number; a
service that needs to reach the complainant asks intake over HTTP.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field

from shared.db import utcnow

SUBJECT_PREFIX = "sv"
DEAD_LETTER_PREFIX = "svdlq"
# The replays of one consumer's dead letters: ``sv.replay.<durable>.<type>.v<version>``
# (``shared.bus.replay_subject``), in the event stream, taken by that consumer alone.
REPLAY_PREFIX = f"{SUBJECT_PREFIX}.replay"

CaseKind = Literal["complaint", "suggestion"]
AssignmentKind = Literal["county", "city", "joint", "cross"]
Outcome = Literal[
    "substantiated",
    "mostly_substantiated",
    "partly_substantiated",
    "unsubstantiated",
    "unverifiable",
    "no_finding",
]
Rating = Literal["satisfied", "basically_satisfied", "unsatisfied"]


class Event(BaseModel):
    """Envelope fields shared by every event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    version: ClassVar[int] = 1
    # The one service that publishes this event: its NATS user alone may publish the subject
    # (shared.natsauth), and a consumer parks a copy whose producer header names another.
    owner: ClassVar[str]

    event_id: str = Field(default_factory=lambda: str(uuid4()))
    occurred_at: datetime = Field(default_factory=utcnow)
    case_id: str
    correlation_id: str | None = None
    actor: str | None = Field(default=None, description="username or service that caused it")

    @classmethod
    def subject(cls) -> str:
        return f"{SUBJECT_PREFIX}.{cls.event_type}.v{cls.version}"

    @classmethod
    def subject_filter(cls) -> str:
        return f"{SUBJECT_PREFIX}.{cls.event_type}.*"


class OfficerRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str | None = None
    badge_no: str | None = None
    leadership: bool = False


class AllegationRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    category: str
    serious: bool = False


class ComplaintReceived(Event):
    event_type: ClassVar[str] = "ComplaintReceived"
    owner: ClassVar[str] = "intake"

    tracking_code: str
    query_secret_hash: str
    channel: str
    received_at: datetime
    anonymous: bool
    accused_unit: str
    accused_unit_code: str | None = None
    county_code: str
    accused_is_inspection_team: bool = False
    officers: list[OfficerRef] = Field(default_factory=list)
    allegations: list[AllegationRef]
    incident_at: datetime | None = None
    place: str | None = None
    summary: str = Field(description="the complainant's account; identity details are kept out by intake")
    injury_or_death: bool = False
    repeat_of: str | None = None
    # A repeat call about ``repeat_of`` while it is still open (重复件): linked to it, never routed
    # or worked on its own; its caller gets the answer of ``repeat_of``.
    linked_repeat: bool = False
    repeat_after_rejection: bool = False
    supervisor_flag: bool = False


class SuggestionReceived(Event):
    event_type: ClassVar[str] = "SuggestionReceived"
    owner: ClassVar[str] = "intake"

    tracking_code: str
    query_secret_hash: str | None = None
    kind: Literal["npc_suggestion", "cppcc_proposal"]
    session: str
    number: str
    title: str
    text: str
    deputy_name: str
    deputy_delegation: str
    co_signers: list[str] = Field(default_factory=list)
    lead_unit: str
    co_units: list[str] = Field(default_factory=list)
    received_at: datetime
    complex_matter: bool = False


class SuggestionReceivedV2(SuggestionReceived):
    """v2: the deputy's account, by which the suggestion is theirs (names repeat in a delegation).

    A subclass, so a handler of v1 reads it unchanged; consumers subscribe to both versions,
    and a v1 still in the stream (recorded before) is read as having no account.
    """

    version: ClassVar[int] = 2

    deputy_account: str | None = Field(
        default=None, description="the deputy's username; None when the deputy had no account"
    )


def deputy_account_of(event: SuggestionReceived) -> str | None:
    return event.deputy_account if isinstance(event, SuggestionReceivedV2) else None


class MatterReclassified(Event):
    """An operator found a matter filed as the wrong kind: it leaves its current track.

    Refiled as the other kind it continues under ``new_case_id``; found to be a
    citizen's suggestion rather than a complaint about police conduct, it leaves
    inspection altogether and is passed to ``forwarded_to``.
    """

    event_type: ClassVar[str] = "MatterReclassified"
    owner: ClassVar[str] = "intake"

    from_kind: CaseKind
    to_kind: Literal["complaint", "suggestion", "citizen_suggestion"]
    new_case_id: str | None = None
    forwarded_to: str | None = None
    reason: str


class ClockSet(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    label: str
    due_at: datetime
    rule: str
    source: str


class CaseAssigned(Event):
    event_type: ClassVar[str] = "CaseAssigned"
    owner: ClassVar[str] = "routing"

    case_kind: CaseKind
    assignment_id: str
    team_code: str
    team_name: str
    kind: AssignmentKind
    rule: str
    reasons: list[str]
    participant_team_codes: list[str] = Field(default_factory=list)
    review_required: bool = False
    review_team_code: str | None = None
    key_clue: bool = False
    previous_team_codes: list[str] = Field(default_factory=list)
    clocks: list[ClockSet] = Field(default_factory=list)
    round: int = 1
    # No rule placed it with confidence (a return that routing could not place, a recusal with no
    # team left): a supervisor must look at it.
    needs_supervisor: bool = False


class TaskClaimed(Event):
    event_type: ClassVar[str] = "TaskClaimed"
    owner: ClassVar[str] = "verification"

    task_id: str
    team_code: str


class TaskReturned(Event):
    """A team sends back (退回) a task it should not have; routing decides again."""

    event_type: ClassVar[str] = "TaskReturned"
    owner: ClassVar[str] = "verification"

    task_id: str
    assignment_id: str
    team_code: str
    reason: str


class ReviewStarted(Event):
    event_type: ClassVar[str] = "ReviewStarted"
    owner: ClassVar[str] = "verification"

    task_id: str
    reviewer_team_code: str


class FindingSentBack(Event):
    event_type: ClassVar[str] = "FindingSentBack"
    owner: ClassVar[str] = "verification"

    task_id: str
    reviewer_team_code: str
    reasons: list[str]


class CaseConcluded(Event):
    event_type: ClassVar[str] = "CaseConcluded"
    owner: ClassVar[str] = "verification"

    case_kind: CaseKind
    task_id: str
    team_code: str
    outcome: Outcome
    summary: str = Field(description="the finding in plain words, fit to tell the complainant")
    accountability: list[str] = Field(default_factory=list)
    classification: Literal["A", "B", "C", "D"] | None = None
    reviewed: bool = False
    round: int = 1
    follow_up: bool = Field(default=False, description="a follow-up reply that closes a B-class suggestion")


class DeadlineExtended(Event):
    event_type: ClassVar[str] = "DeadlineExtended"
    owner: ClassVar[str] = "verification"

    task_id: str
    clock: str
    new_due_at: datetime
    reason: str


class LadderStepReached(Event):
    """A step of the overdue ladder (reminder, chase, escalation, rebuke) happened for one clock."""

    event_type: ClassVar[str] = "LadderStepReached"
    owner: ClassVar[str] = "verification"

    task_id: str
    clock: str
    step: Literal["reminder", "due_today", "chase", "escalation", "rebuke"]
    team_code: str
    due_at: datetime


class AcceptanceNoticeDelivered(Event):
    """A named complainant was told the complaint was accepted (告知受理): the acceptance clock stops."""

    event_type: ClassVar[str] = "AcceptanceNoticeDelivered"
    owner: ClassVar[str] = "feedback"

    channel: Literal["sms", "email", "phone", "letter"]
    delivered_at: datetime


class EarlyWarningRaised(Event):
    """An officer (by badge number) or a unit crossed an early-warning threshold (预警).

    ``case_id`` is the matter that crossed it; ``case_ids`` every matter behind the warning.
    """

    event_type: ClassVar[str] = "EarlyWarningRaised"
    owner: ClassVar[str] = "verification"

    subject_kind: Literal["officer", "unit"]
    subject_key: str = Field(description="the badge number, or the unit's name")
    county_code: str | None = None
    measure: Literal["complaints", "substantiated"]
    count: int
    threshold: int
    window_months: int
    case_ids: list[str]


class AnswerDelivered(Event):
    event_type: ClassVar[str] = "AnswerDelivered"
    owner: ClassVar[str] = "feedback"

    answer_id: str
    channel: Literal["sms", "email", "phone", "letter", "none"]
    delivered_at: datetime


class RatingRecorded(Event):
    event_type: ClassVar[str] = "RatingRecorded"
    owner: ClassVar[str] = "feedback"

    rating: Rating
    reason: str | None = None
    source: Literal["operator", "public", "deputy"]
    round: int = 1


class CaseReopened(Event):
    """Not satisfied, or a review (复查) was asked: routing decides again, one level up."""

    event_type: ClassVar[str] = "CaseReopened"
    owner: ClassVar[str] = "feedback"

    case_kind: CaseKind
    reason: str
    previous_team_codes: list[str]
    round: int


class CaseClosed(Event):
    event_type: ClassVar[str] = "CaseClosed"
    owner: ClassVar[str] = "feedback"

    note: str


ALL_EVENTS: tuple[type[Event], ...] = (
    ComplaintReceived,
    SuggestionReceived,
    SuggestionReceivedV2,
    MatterReclassified,
    CaseAssigned,
    TaskClaimed,
    TaskReturned,
    ReviewStarted,
    FindingSentBack,
    CaseConcluded,
    DeadlineExtended,
    LadderStepReached,
    EarlyWarningRaised,
    AcceptanceNoticeDelivered,
    AnswerDelivered,
    RatingRecorded,
    CaseReopened,
    CaseClosed,
)
EVENT_TYPES: dict[tuple[str, int], type[Event]] = {(e.event_type, e.version): e for e in ALL_EVENTS}


class UnknownEventError(ValueError):
    pass


def decode_event(event_type: str, version: int, data: bytes | str | dict[str, Any]) -> Event:
    try:
        model = EVENT_TYPES[(event_type, version)]
    except KeyError:
        raise UnknownEventError(f"unknown event {event_type} v{version}") from None
    if isinstance(data, dict):
        return model.model_validate(data)
    return model.model_validate_json(data)
