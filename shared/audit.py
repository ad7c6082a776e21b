"""Append-only audit trail: who changed what, when and why, chained by hash.

Each entry stores the SHA-256 of its own content and of the case's previous
entry, so editing or deleting an entry afterwards breaks the chain, which
``verify_chain`` detects.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session
from sqlmodel import Column, Field, SQLModel, Text, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import UTCDateTime, batch_insert_sentinel, new_row, utcnow

GENESIS = "0" * 64


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (batch_insert_sentinel(),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=64, index=True)
    action: str = Field(max_length=64)
    actor: str = Field(max_length=100)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    prev_hash: str = Field(max_length=64)
    entry_hash: str = Field(max_length=64)


def _digest(
    *, case_id: str, action: str, actor: str, reason: str | None, detail: str, at: datetime, prev: str
) -> str:
    material = json.dumps(
        [case_id, action, actor, reason, detail, at.isoformat(), prev],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


async def audit(
    session: AsyncSession,
    *,
    case_id: str,
    action: str,
    actor: str,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
    new_case: bool = False,
) -> AuditEntry:
    """Append an entry to the matter's chain; ``new_case`` says the matter was created in this
    transaction, so its chain starts here and there is nothing to look up."""
    # The head of each chain this transaction extended: a second entry for the same matter (or
    # one written while the first is not flushed yet) chains to it without asking the database.
    # An entry the session no longer holds was undone (a group commit forgets a failed
    # request's rows), so the chain goes on from the one before it.
    written: dict[str, list[AuditEntry]] = session.sync_session.info.setdefault(_HEADS, {})
    chain = written.setdefault(case_id, [])
    while chain and chain[-1] not in session.sync_session:
        chain.pop()
    last = (
        (chain[-1].entry_hash if chain else None)
        or (GENESIS if new_case else None)
        or (
            await session.exec(
                select(AuditEntry.entry_hash)
                .where(AuditEntry.case_id == case_id)
                .order_by(col(AuditEntry.id).desc())
                .limit(1)
            )
        ).first()
    )
    moment = (at or utcnow()).replace(microsecond=0)
    detail_text = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str)
    prev = last or GENESIS
    entry = new_row(
        AuditEntry,
        case_id=case_id,
        action=action,
        actor=actor,
        reason=reason,
        detail=detail_text,
        at=moment,
        prev_hash=prev,
        entry_hash=_digest(
            case_id=case_id,
            action=action,
            actor=actor,
            reason=reason,
            detail=detail_text,
            at=moment,
            prev=prev,
        ),
    )
    session.add(entry)
    chain.append(entry)
    return entry


_HEADS = "audit_chain_heads"


@sa_event.listens_for(Session, "after_soft_rollback")
def _forget_heads(session: Session, _previous: Any) -> None:
    # Entries rolled back (a savepoint included) are no longer heads; the database knows the rest.
    session.info.pop(_HEADS, None)


@sa_event.listens_for(Session, "after_commit")
def _forget_heads_after_commit(session: Session) -> None:
    session.info.pop(_HEADS, None)


async def trail(session: AsyncSession, case_id: str) -> list[AuditEntry]:
    rows = await session.exec(
        select(AuditEntry).where(AuditEntry.case_id == case_id).order_by(col(AuditEntry.id))
    )
    return list(rows)


def verify_chain(entries: list[AuditEntry]) -> bool:
    prev = GENESIS
    for entry in entries:
        at = entry.at
        if entry.prev_hash != prev:
            return False
        expected = _digest(
            case_id=entry.case_id,
            action=entry.action,
            actor=entry.actor,
            reason=entry.reason,
            detail=entry.detail,
            at=at if at.tzinfo else at.replace(tzinfo=utcnow().tzinfo),
            prev=prev,
        )
        if expected != entry.entry_hash:
            return False
        prev = entry.entry_hash
    return True
