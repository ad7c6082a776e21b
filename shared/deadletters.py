"""Dead letters a person can act on: list a service's parked events, replay them, discard them.

A consumer parks an event it can never handle, or one that used up its deliveries, on
``svdlq.<durable>`` (the ``<stream>_DLQ`` stream, ``shared.bus``), with the reason, the number
of deliveries, the original subject and the original message id in headers.  The parked copy
stays there; what a person decided about it is kept in the service's own database
(``DeadLetterOutcome``, a platform table) and in its audit trail.

Replaying republishes the original payload and headers for the consumer that parked the
event, on its replay subject ``sv.replay.<durable>.<type>.v<version>``
(``shared.bus.replay_subject``), which its filter takes and no other consumer's does.  Not
the original subject: a service's NATS user may publish only the events it owns
(``shared.natsauth``), and a consumer parks events other services published; the other
consumers of the event applied it already anyway.  The replay carries a fresh
``Nats-Msg-Id`` (``<event id>.replay.<dead letter id>``), else the event stream's
deduplication window would drop it; the event id in the payload is unchanged, which is what
the inbox keys on, so a replay of an event applied meanwhile is a no-op.  A replay that fails
again is parked again, as a new dead letter (with the original subject).

The publish happens before the outcome is written and outside any transaction: a replay
whose record failed is shown as still parked, and replaying it again is harmless (the same
message id within the deduplication window, and the inboxes after it).  Every request to NATS
is bounded by ``DeadLetterBox.timeout``; NATS not answering is ``BusUnavailable`` (503).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import nats.errors
import sqlalchemy as sa
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import Column, Field, SQLModel, Text, col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.audit import audit
from shared.bus import (
    DEAD_LETTER_STREAM_SUFFIX,
    HEADER_DEAD_LETTER_CONSUMER,
    HEADER_DEAD_LETTER_REASON,
    HEADER_DEAD_LETTER_TRIES,
    HEADER_ORIGINAL_MSG_ID,
    HEADER_ORIGINAL_SUBJECT,
    replay_subject,
)
from shared.db import UTCDateTime, new_row, utcnow
from shared.errors import DomainError, FieldProblems, NotFound
from shared.events import DEAD_LETTER_PREFIX
from shared.logging import get_logger
from shared.outbox import HEADER_EVENT_TYPE, HEADER_MSG_ID

log = get_logger(__name__)

# A listing reads at most this many parked events per service; a flood beyond it is a fault to
# fix first, and the oldest are the ones shown.
MAX_LISTED = 1000
HEADER_REPLAY_OF = "Sv-Replay-Of"
# Headers the parking added: not part of the original message, so not replayed.
_PARKING_HEADERS = frozenset(
    {
        HEADER_DEAD_LETTER_REASON,
        HEADER_DEAD_LETTER_CONSUMER,
        HEADER_DEAD_LETTER_TRIES,
        HEADER_ORIGINAL_SUBJECT,
        HEADER_ORIGINAL_MSG_ID,
        HEADER_REPLAY_OF,
        HEADER_MSG_ID,
    }
)
# A case id for the audit entry of a dead letter whose payload names none (it was not JSON).
UNKNOWN_CASE = "dead-letters"
_GAVE_UP = re.compile(r"gave up after (\d+) deliveries")


class DeadLetterStatus(StrEnum):
    PARKED = "parked"
    REPLAYED = "replayed"
    DISCARDED = "discarded"


class DeadLetterOutcome(SQLModel, table=True):
    """What a person decided about one parked event: replayed, or discarded with a reason."""

    __tablename__ = "dead_letter_outcome"

    id: int | None = Field(default=None, primary_key=True)
    # The parked copy's sequence in the dead-letter stream: the dead letter's id.
    dlq_seq: int = Field(sa_type=sa.BigInteger, index=True)
    # With the sequence, they tell this parked copy from one of a stream made anew.
    consumer: str = Field(max_length=100)
    event_id: str = Field(max_length=64)
    case_id: str = Field(max_length=64)
    status: str = Field(max_length=16)
    actor: str = Field(max_length=100)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    replay_msg_id: str | None = Field(default=None, max_length=200)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BusUnavailable(DomainError):
    """NATS did not answer in time: the dead letters can be neither read nor replayed now."""

    status_code = 503


@dataclass(frozen=True)
class DeadLetterBox:
    """Where one service's dead letters are: its stream, its durables, and the bound on a request."""

    js: JetStreamContext
    stream: str
    durables: tuple[str, ...]
    timeout: float

    @property
    def dlq_stream(self) -> str:
        return self.stream + DEAD_LETTER_STREAM_SUFFIX


@dataclass(frozen=True)
class DeadLetter:
    id: int
    subject: str
    event_type: str
    case_id: str | None
    event_id: str | None
    consumer: str
    reason: str
    tries: int | None
    parked_at: datetime | None
    status: DeadLetterStatus
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    # What is republished on a replay: the original payload and headers.
    data: bytes
    headers: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subject": self.subject,
            "event_type": self.event_type,
            "case_id": self.case_id,
            "event_id": self.event_id,
            "consumer": self.consumer,
            "reason": self.reason,
            "tries": self.tries,
            "parked_at": self.parked_at.isoformat() if self.parked_at else None,
            "status": self.status.value,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "decision_reason": self.decision_reason,
        }

    @property
    def event_key(self) -> str:
        """The event id as the outcome table keeps it (a column of 64 characters)."""
        return (self.event_id or "")[:64]

    def matches(self, outcome: DeadLetterOutcome) -> bool:
        return outcome.consumer == self.consumer and outcome.event_id == self.event_key


def dead_letter_subject(durable: str) -> str:
    return f"{DEAD_LETTER_PREFIX}.{durable}"


async def _bounded(box: DeadLetterBox, operation: Any) -> Any:
    try:
        return await asyncio.wait_for(operation, timeout=box.timeout)
    except NotFoundError:
        raise
    except (TimeoutError, nats.errors.Error) as exc:
        log.warning("dead letters: NATS did not answer", error=repr(exc))
        raise BusUnavailable("消息总线暂时不可用，请稍后重试") from exc


async def _parked_copies(box: DeadLetterBox) -> list[RawStreamMsg]:
    """The parked copies of the service's durables, oldest first, one bounded request each."""
    found: list[RawStreamMsg] = []
    for durable in box.durables:
        seq = 1
        while len(found) < MAX_LISTED:
            try:
                raw = await _bounded(
                    box,
                    box.js.get_msg(box.dlq_stream, seq=seq, subject=dead_letter_subject(durable), next=True),
                )
            except NotFoundError:  # no further copy (or no dead-letter stream yet)
                break
            found.append(raw)
            seq = int(raw.seq or seq) + 1
    return sorted(found, key=lambda raw: raw.seq or 0)


def _payload_fields(data: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(data)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _tries(headers: dict[str, str], reason: str) -> int | None:
    text = headers.get(HEADER_DEAD_LETTER_TRIES)
    if text and text.isdigit():
        return int(text)
    # Parked before the header existed: the reason of a used-up event says it.
    found = _GAVE_UP.search(reason)
    return int(found.group(1)) if found else None


def _letter(raw: RawStreamMsg, outcomes: Sequence[DeadLetterOutcome]) -> DeadLetter:
    headers = {str(k): str(v) for k, v in (raw.headers or {}).items()}
    data = raw.data or b""
    payload = _payload_fields(data)
    subject = headers.get(HEADER_ORIGINAL_SUBJECT, "")
    reason = headers.get(HEADER_DEAD_LETTER_REASON, "")
    event_id = payload.get("event_id") or headers.get(HEADER_ORIGINAL_MSG_ID)
    letter = DeadLetter(
        id=int(raw.seq or 0),
        subject=subject,
        event_type=headers.get(HEADER_EVENT_TYPE)
        or (subject.split(".")[1] if subject.count(".") >= 1 else ""),
        case_id=str(payload["case_id"]) if payload.get("case_id") else None,
        event_id=str(event_id) if event_id else None,
        consumer=headers.get(HEADER_DEAD_LETTER_CONSUMER)
        or (raw.subject or "").removeprefix(DEAD_LETTER_PREFIX + "."),
        reason=reason,
        tries=_tries(headers, reason),
        parked_at=raw.time,
        status=DeadLetterStatus.PARKED,
        decided_by=None,
        decided_at=None,
        decision_reason=None,
        data=data,
        headers={k: v for k, v in headers.items() if k not in _PARKING_HEADERS},
    )
    decided = [outcome for outcome in outcomes if letter.matches(outcome)]
    if not decided:
        return letter
    last = decided[-1]
    return replace(
        letter,
        status=DeadLetterStatus(last.status),
        decided_by=last.actor,
        decided_at=last.at,
        decision_reason=last.reason,
    )


async def _outcomes_of(
    sessions: async_sessionmaker[AsyncSession], seqs: Sequence[int]
) -> dict[int, list[DeadLetterOutcome]]:
    by_seq: dict[int, list[DeadLetterOutcome]] = {}
    async with sessions() as session:
        for start in range(0, len(seqs), 500):
            rows = await session.exec(
                select(DeadLetterOutcome)
                .where(col(DeadLetterOutcome.dlq_seq).in_(seqs[start : start + 500]))
                .order_by(col(DeadLetterOutcome.id))
            )
            for row in rows:
                by_seq.setdefault(row.dlq_seq, []).append(row)
    return by_seq


async def list_dead_letters(
    *,
    sessions: async_sessionmaker[AsyncSession],
    box: DeadLetterBox,
    status: DeadLetterStatus | None = None,
) -> list[DeadLetter]:
    """The service's parked events, oldest first, each with what was decided about it."""
    copies = await _parked_copies(box)
    outcomes = await _outcomes_of(sessions, [int(raw.seq or 0) for raw in copies])
    letters = [_letter(raw, outcomes.get(int(raw.seq or 0), [])) for raw in copies]
    return [letter for letter in letters if status is None or letter.status == status]


async def _find(
    *, sessions: async_sessionmaker[AsyncSession], box: DeadLetterBox, letter_id: int
) -> DeadLetter:
    try:
        raw = await _bounded(box, box.js.get_msg(box.dlq_stream, seq=letter_id))
    except NotFoundError:
        raw = None
    if raw is None or raw.subject not in {dead_letter_subject(durable) for durable in box.durables}:
        # Another service's dead letter is not this service's to show.
        raise NotFound("未找到该死信")
    outcomes = await _outcomes_of(sessions, [letter_id])
    return _letter(raw, outcomes.get(letter_id, []))


def _require_parked(letter: DeadLetter) -> None:
    if letter.status != DeadLetterStatus.PARKED:
        done = "已重新投递" if letter.status == DeadLetterStatus.REPLAYED else "已丢弃"
        raise FieldProblems(
            [("status", f"该死信{done}，不能再处理", f"the dead letter was {letter.status} already")],
            status_code=409,
        )


async def _record(
    *,
    sessions: async_sessionmaker[AsyncSession],
    letter: DeadLetter,
    status: DeadLetterStatus,
    actor: str,
    reason: str | None = None,
    replay_msg_id: str | None = None,
) -> DeadLetter:
    """The outcome in the service's table and its audit trail, in one transaction."""
    now = utcnow()
    case_id = (letter.case_id or UNKNOWN_CASE)[:64]
    async with sessions() as session, session.begin():
        session.add(
            new_row(
                DeadLetterOutcome,
                dlq_seq=letter.id,
                consumer=letter.consumer,
                event_id=letter.event_key,
                case_id=case_id,
                status=status.value,
                actor=actor,
                reason=reason,
                replay_msg_id=replay_msg_id,
                at=now,
            )
        )
        await audit(
            session,
            case_id=case_id,
            action=f"dead_letter_{status.value}",
            actor=actor,
            reason=reason,
            detail={
                "dead_letter_id": letter.id,
                "consumer": letter.consumer,
                "event_id": letter.event_id,
                "event_type": letter.event_type,
                "subject": letter.subject,
                "parked_reason": letter.reason,
                "replay_msg_id": replay_msg_id,
            },
            at=now,
        )
    return replace(letter, status=status, decided_by=actor, decided_at=now, decision_reason=reason)


async def _replay(
    *, sessions: async_sessionmaker[AsyncSession], box: DeadLetterBox, letter: DeadLetter, actor: str
) -> DeadLetter:
    if not letter.subject:
        raise FieldProblems(
            [("subject", "该死信没有原始主题，无法重新投递", "the dead letter has no original subject")],
            status_code=409,
        )
    msg_id = f"{letter.event_id or letter.id}.replay.{letter.id}"
    headers = {**letter.headers, HEADER_MSG_ID: msg_id, HEADER_REPLAY_OF: str(letter.id)}
    subject = replay_subject(letter.consumer, letter.subject)
    await _bounded(box, box.js.publish(subject, letter.data, headers=headers, timeout=box.timeout))
    log.info("dead letter replayed", dead_letter_id=letter.id, consumer=letter.consumer, subject=subject)
    return await _record(
        sessions=sessions, letter=letter, status=DeadLetterStatus.REPLAYED, actor=actor, replay_msg_id=msg_id
    )


async def replay_dead_letter(
    *, sessions: async_sessionmaker[AsyncSession], box: DeadLetterBox, letter_id: int, actor: str
) -> DeadLetter:
    """Republish one parked event for the consumer that parked it; only a parked one (409 otherwise)."""
    letter = await _find(sessions=sessions, box=box, letter_id=letter_id)
    _require_parked(letter)
    return await _replay(sessions=sessions, box=box, letter=letter, actor=actor)


async def replay_all(
    *, sessions: async_sessionmaker[AsyncSession], box: DeadLetterBox, actor: str
) -> list[DeadLetter]:
    """Replay every parked event of the service, oldest first; stops at the first NATS failure."""
    parked = await list_dead_letters(sessions=sessions, box=box, status=DeadLetterStatus.PARKED)
    return [await _replay(sessions=sessions, box=box, letter=letter, actor=actor) for letter in parked]


async def discard_dead_letter(
    *,
    sessions: async_sessionmaker[AsyncSession],
    box: DeadLetterBox,
    letter_id: int,
    actor: str,
    reason: str,
) -> DeadLetter:
    """Give up on one parked event, with the reason; the parked copy stays for the record."""
    if not reason.strip():
        raise FieldProblems([("reason", "请填写丢弃理由", "a reason is required")])
    letter = await _find(sessions=sessions, box=box, letter_id=letter_id)
    _require_parked(letter)
    log.info("dead letter discarded", dead_letter_id=letter.id, consumer=letter.consumer)
    return await _record(
        sessions=sessions,
        letter=letter,
        status=DeadLetterStatus.DISCARDED,
        actor=actor,
        reason=reason.strip(),
    )


async def count_parked(*, sessions: async_sessionmaker[AsyncSession], box: DeadLetterBox) -> int:
    """How many of the service's parked events await a decision: one request to NATS, one query.

    Counted from the stream's per-subject totals less the decided ones, not by reading every
    parked copy, so that ``/readyz`` stays cheap however many there are.
    """
    info = await _bounded(box, box.js.stream_info(box.dlq_stream, subjects_filter=f"{DEAD_LETTER_PREFIX}.>"))
    subjects = info.state.subjects or {}
    parked = sum(int(subjects.get(dead_letter_subject(durable), 0)) for durable in box.durables)
    if not parked:
        return 0
    async with sessions() as session:
        decided = (
            await session.exec(
                select(func.count(sa.distinct(col(DeadLetterOutcome.dlq_seq)))).where(
                    col(DeadLetterOutcome.consumer).in_(box.durables),
                    DeadLetterOutcome.dlq_seq >= info.state.first_seq,
                )
            )
        ).one()
    return max(parked - int(decided), 0)
