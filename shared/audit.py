"""Append-only audit trail: who changed what, when and why, one hash chain per service.

Every entry of a service's database is a link of one chain: a sequence number (1, 2, 3 ...,
no gaps, unique) and the hash of the entry before it, and its own hash over its sequence
number, that previous hash and its content.  Editing an entry breaks its hash; deleting one
in the middle breaks the link of the entry after it or leaves a gap.  Deleting the newest
entries, or truncating the table, leaves a shorter chain that is intact in itself: the
checkpoints published on NATS (``shared.audit_anchor``) catch that, and the database refuses
UPDATE and DELETE on the table (the triggers of ``platform_0004``).

Appending is cheap on the hot paths (group commit, a consumer's slice): ``audit`` only adds
the row; the rows a flush writes get their numbers and hashes in the flush itself, from the
chain's head, which is read once per transaction and then kept in the session.  Numbering at
the flush, not in ``audit``, means a row the session forgot before it was written (a group
commit drops a failed request's rows) never takes a number.  On PostgreSQL, where several
instances write, the first such flush of a transaction takes a transaction-level advisory
lock before it reads the head, so appends to the chain follow one another; on SQLite every
transaction already holds the database's one write lock (``BEGIN IMMEDIATE``).  The lock is held
until the commit; taking it at the flush rather than at ``audit`` keeps that short (a write group
or a slice flushes once, at its commit).  Two such transactions that also wait for each other's
rows are a deadlock PostgreSQL breaks by failing one, which is retried like any failed write.

Every entry goes through ``audit``: a row added to the session any other way gets no number,
and the ``NOT NULL`` on ``seq`` refuses it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session
from sqlmodel import Column, Field, SQLModel, Text, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import UTCDateTime, batch_insert_sentinel, built_once, new_row, table_of, utcnow
from shared.events import Event
from shared.outbox import record_event
from shared.slice_rows import add_later, before_later_insert

GENESIS = "0" * 64

# pg_advisory_xact_lock's two-key form: its key space is apart from the one-key form that
# other code uses (intake's earlier-complaint lock), so the two can never collide.
CHAIN_LOCK_CLASS = 0x41554454  # "AUDT"
CHAIN_LOCK_ID = 1


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (batch_insert_sentinel(),)

    id: int | None = Field(default=None, primary_key=True)
    # Set when the entry is flushed (see the module docstring); None only until then.
    seq: int | None = Field(default=None, sa_type=sa.BigInteger, nullable=False, unique=True, index=True)
    case_id: str = Field(max_length=64, index=True)
    action: str = Field(max_length=64)
    actor: str = Field(max_length=100)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    prev_hash: str = Field(default="", max_length=64)
    entry_hash: str = Field(default="", max_length=64)


def entry_digest(
    *,
    seq: int,
    prev: str,
    case_id: str,
    action: str,
    actor: str,
    reason: str | None,
    detail: str,
    at: datetime,
) -> str:
    """The hash of one link: its place in the chain, the link before it, and its content."""
    material = json.dumps(
        [seq, prev, case_id, action, actor, reason, detail, at.isoformat()],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


def digest_of(entry: AuditEntry | Row[Any]) -> str:
    """The hash ``entry`` must carry, recomputed from what it holds now."""
    assert entry.seq is not None
    at = entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=utcnow().tzinfo)
    return entry_digest(
        seq=entry.seq,
        prev=entry.prev_hash,
        case_id=entry.case_id,
        action=entry.action,
        actor=entry.actor,
        reason=entry.reason,
        detail=entry.detail,
        at=at,
    )


async def audit(
    session: AsyncSession,
    *,
    case_id: str,
    action: str,
    actor: str,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """Add an entry to the service's chain; it is numbered and hashed when it is flushed."""
    entry = new_row(
        AuditEntry,
        case_id=case_id,
        action=action,
        actor=actor,
        reason=reason,
        detail=json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str),
        at=(at or utcnow()).replace(microsecond=0),
    )
    # In a consumer's slice the entry waits for the slice's insert of its kept rows, which numbers
    # it (``_number_kept_entries``); elsewhere the flush that writes it does.
    if not add_later(session, entry):
        _chain_of(session.sync_session).waiting.append(entry)
    return entry


async def record_audited(
    session: AsyncSession,
    event_: Event,
    *,
    action: str,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """Record ``event_`` and the audit entry of the same act: the event's matter, by the event's actor."""
    record_event(session, event_)
    assert event_.actor is not None, "an audited act names who did it"
    return await audit(
        session,
        case_id=event_.case_id,
        action=action,
        actor=event_.actor,
        reason=reason,
        detail=detail,
        at=at,
    )


@dataclass
class _SessionChain:
    """What the session's transaction knows of the chain: its head, and the entries to number."""

    head: tuple[int, str] | None = None  # (seq, entry_hash); None: read it at the next flush
    waiting: list[AuditEntry] = field(default_factory=list)


_CHAIN = "audit_chain"


def _chain_of(session: Session) -> _SessionChain:
    chain = session.info.get(_CHAIN)
    if chain is None:
        chain = session.info[_CHAIN] = _SessionChain()
    return chain


@sa_event.listens_for(Session, "before_flush")
def _number_new_entries(session: Session, _context: Any, _instances: Any) -> None:
    chain: _SessionChain | None = session.info.get(_CHAIN)
    if chain is None or not chain.waiting:
        return
    # An entry the session no longer holds was undone before it was written.
    pending = session.new
    entries = [entry for entry in chain.waiting if entry in pending]
    chain.waiting.clear()
    if not entries:
        return
    _number(session, chain, entries)


@before_later_insert(AuditEntry)
def _number_kept_entries(session: Session, entries: list[AuditEntry]) -> None:
    """A slice's entries (``shared.slice_rows.add_later``), numbered after those its flush wrote."""
    _number(session, _chain_of(session), entries)


def _number(session: Session, chain: _SessionChain, entries: list[AuditEntry]) -> None:
    if chain.head is None:
        # Core on the session's connection: nothing of the chain is pending in the session
        # when the head is unknown (it is forgotten only at the end of a transaction or of a
        # savepoint, and a savepoint begins with a flush), so the batching guard has nothing
        # to check here.
        chain.head = chain_head(session.connection(), lock=True)
    seq, prev = chain.head
    for entry in entries:
        seq += 1
        # Straight into the row's dict, as ``new_row`` builds it: the insert reads it from there.
        entry.__dict__["seq"] = seq
        entry.__dict__["prev_hash"] = prev
        prev = entry.__dict__["entry_hash"] = digest_of(entry)
    chain.head = (seq, prev)


@sa_event.listens_for(Session, "after_soft_rollback")
def _forget_head(session: Session, _previous: Any) -> None:
    # Entries rolled back (a savepoint's included) are no longer the head; the database knows it.
    session.info.pop(_CHAIN, None)


@sa_event.listens_for(Session, "after_commit")
def _forget_head_after_commit(session: Session) -> None:
    session.info.pop(_CHAIN, None)


def chain_head(connection: Connection, *, lock: bool = False) -> tuple[int, str]:
    """The newest entry's (seq, hash), or (0, GENESIS) for an empty chain.

    ``lock``: on PostgreSQL, first wait for the chain's lock, held until the transaction ends,
    so that no other instance appends between this read and this transaction's commit.
    """
    if lock and connection.dialect.name == "postgresql":
        connection.execute(_lock_statement())
    row = connection.execute(_head_statement()).first()
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


async def hold_chain(session: AsyncSession) -> None:
    """On PostgreSQL, take this transaction's hold on the audit chain now, before any row lock.

    A transaction that appends takes the chain's lock at its first audited flush. One that also
    locks rows another appender updates (the ladder scheduler locks clocks that a finding stops)
    must take the chain first, or the two wait on each other: rows then chain against chain then
    rows, a deadlock PostgreSQL ends by failing one of them.
    """
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        await connection.execute(_lock_statement())


# Read at every transaction that appends (each write group, each slice that audits): built once,
# as a statement built anew costs about as much as running it (``shared.db.built_once``).
@built_once
def _lock_statement() -> sa.Select[Any]:
    return sa.select(sa.func.pg_advisory_xact_lock(CHAIN_LOCK_CLASS, CHAIN_LOCK_ID))


@built_once
def _head_statement() -> sa.Select[Any]:
    table = table_of(AuditEntry)
    return sa.select(table.c.seq, table.c.entry_hash).order_by(table.c.seq.desc()).limit(1)


class CaseTrail(list[AuditEntry]):
    """A matter's entries in chain order, with the service chain's entries next to them.

    ``around`` maps the sequence number of each entry just before or just after one of the
    matter's (and not the matter's own) to that entry: enough to check that every entry of
    the matter is still linked into the service chain on both sides.
    """

    around: dict[int, AuditEntry]

    def __init__(
        self, entries: Iterable[AuditEntry] = (), around: dict[int, AuditEntry] | None = None
    ) -> None:
        super().__init__(entries)
        self.around = around or {}


# Neighbours are fetched in chunks: an IN list stays well under every database's bound.
_NEIGHBOUR_CHUNK = 500


async def trail(session: AsyncSession, case_id: str) -> CaseTrail:
    """The matter's entries in this service, oldest first, with their neighbours in the chain."""
    rows = await session.exec(
        select(AuditEntry).where(AuditEntry.case_id == case_id).order_by(col(AuditEntry.seq))
    )
    entries = list(rows)
    own = {entry.seq for entry in entries}
    wanted = sorted({s + step for s in own if s is not None for step in (-1, 1)} - own - {0})
    around: dict[int, AuditEntry] = {}
    for start in range(0, len(wanted), _NEIGHBOUR_CHUNK):
        chunk = wanted[start : start + _NEIGHBOUR_CHUNK]
        for neighbour in await session.exec(select(AuditEntry).where(col(AuditEntry.seq).in_(chunk))):
            assert neighbour.seq is not None
            around[neighbour.seq] = neighbour
    return CaseTrail(entries, around)


def first_break(entries: Sequence[AuditEntry]) -> str | None:
    """Why ``entries`` are not intact links of their chain, or None when they are.

    ``entries`` are in chain order: a whole chain, or a ``CaseTrail`` (whose neighbours count
    as links too).  Each entry's hash must match its content, and it must link to the entry
    before it in the chain (the genesis for the first); a neighbour after it must link to it.
    """
    around: dict[int, AuditEntry] = getattr(entries, "around", {})
    by_seq = dict(around)
    by_seq.update((entry.seq, entry) for entry in entries if entry.seq is not None)
    for entry in entries:
        if entry.seq is None or entry.seq < 1:
            return f"entry id {entry.id} has no sequence number"
        if digest_of(entry) != entry.entry_hash:
            return f"seq {entry.seq}: its hash does not match its content"
        before = by_seq.get(entry.seq - 1)
        expected_prev = GENESIS if entry.seq == 1 else (before.entry_hash if before else None)
        if expected_prev is None:
            return f"seq {entry.seq}: the entry before it (seq {entry.seq - 1}) is missing"
        if entry.prev_hash != expected_prev:
            return f"seq {entry.seq}: it does not link to the entry before it"
        after = by_seq.get(entry.seq + 1)
        if after is not None and after.prev_hash != entry.entry_hash:
            return f"seq {entry.seq + 1}: it does not link to seq {entry.seq}"
    return None


def verify_chain(entries: Sequence[AuditEntry]) -> bool:
    """Whether ``entries`` (a whole chain, or a matter's ``trail``) are intact; see ``first_break``."""
    return first_break(entries) is None
