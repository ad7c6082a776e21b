"""Earlier complaints of the same complainant: the operator's hint and the repeat check.

The complainant is matched by keyed hashes of the phone and ID number (``ComplainantKey``),
never the plain values.  This runs for every new complaint, inside its group commit: the
statements are built once, and complaints recorded earlier in the same group are found among
the session's pending rows.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.models import CaseStatus, ComplainantKey, Complaint
from services.intake.schemas import EarlierMatter
from shared.db import built_once, table_of
from shared.slice_rows import pending_rows
from shared.states import Rating

# A matter in one of these states is still being worked on: a repeat of it is linked (重复件).
OPEN_STATUSES = frozenset({CaseStatus.RECEIVED, CaseStatus.ROUTED, CaseStatus.CONCLUDED, CaseStatus.REOPENED})


@dataclass(frozen=True)
class PriorComplaint:
    """What the repeat check and the operator's hint need of an earlier complaint."""

    id: str
    tracking_code: str
    received_at: datetime
    accused_unit: str
    county_code: str
    status: str
    last_rating: str | None
    repeat_of: str | None
    linked_repeat: bool


# Complaint's columns of the same names, in the same order.
_PRIOR_FIELDS = tuple(f.name for f in fields(PriorComplaint))


async def one_complainant_at_a_time(*, session: AsyncSession, match_keys: list[str]) -> None:
    """On PostgreSQL, hold the person's keys until commit, so their concurrent complaints queue.

    Two operators recording the same person at the same moment would otherwise each miss the
    other's uncommitted complaint, and neither would be marked a repeat.  SQLite has one
    writer at a time, and its group commit shows a request the earlier ones of its group.
    """
    if not match_keys or session.sync_session.get_bind().dialect.name != "postgresql":
        return
    connection = await session.connection()
    for key in sorted(match_keys):  # one order everywhere, so two requests cannot deadlock
        # The keys are hex HMACs: their first 60 bits are as good a lock id as any.
        await connection.execute(_advisory_lock(), {"lock_id": int(key[:15], 16)})


@built_once
def _advisory_lock() -> sa.Select[Any]:
    return sa.select(func.pg_advisory_xact_lock(sa.bindparam("lock_id", type_=sa.BigInteger)))


@built_once
def _earlier_query(limit: int) -> sa.Select[Any]:
    complaints, keys = table_of(Complaint), table_of(ComplainantKey)
    return (
        sa.select(*(complaints.c[name] for name in _PRIOR_FIELDS))
        .join(keys, keys.c.complaint_id == complaints.c.id)
        .where(keys.c.match_key.in_(sa.bindparam("match_keys", expanding=True)))
        .order_by(complaints.c.received_at.desc())
        .limit(limit)
    )


async def find_earlier(
    *, session: AsyncSession, match_keys: list[str], limit: int = 20
) -> list[PriorComplaint]:
    """The complaints filed by the same person (by keyed hash), newest first.

    Only the columns the repeat check and the operator's hint need: loading whole rows (the
    account, the officers) made this query cost a quarter more (measured with py-spy).
    """
    if not match_keys:
        return []
    # A Core query on the session's connection: the ORM's costs more for the same rows, and the
    # request has nothing pending yet that it would have to flush first.
    connection = await session.connection()
    found = [
        PriorComplaint(*row)
        for row in await connection.execute(_earlier_query(limit), {"match_keys": match_keys})
    ]
    # Complaints recorded earlier in the same group commit are not flushed yet.
    wanted = set(match_keys)
    pending_ids = {k.complaint_id for k in pending_rows(session, ComplainantKey) if k.match_key in wanted}
    if pending_ids:
        found += [
            PriorComplaint(*(getattr(c, name) for name in _PRIOR_FIELDS))
            for c in pending_rows(session, Complaint)
            if c.id in pending_ids
        ]
        found.sort(key=lambda prior: prior.received_at, reverse=True)
    seen: dict[str, PriorComplaint] = {}
    for prior in found[:limit]:
        seen.setdefault(prior.id, prior)
    return list(seen.values())


def repeat_of(
    *, earlier: list[PriorComplaint], accused_unit: str, county_code: str, window_start: datetime
) -> PriorComplaint | None:
    """The newest earlier complaint against the same unit since ``window_start``, if any.

    A linked repeat (重复件) stands for the complaint it was linked to: that one is returned when
    it is among ``earlier`` (``root_of`` finds it otherwise).
    """
    by_id = {prior.id: prior for prior in earlier}
    for candidate in earlier:
        # The same unit by name: another station of the same county bureau is another matter.
        same_unit = candidate.accused_unit.strip() == accused_unit.strip()
        if same_unit and candidate.county_code == county_code and candidate.received_at >= window_start:
            if candidate.linked_repeat and candidate.repeat_of in by_id:
                return by_id[candidate.repeat_of]
            return candidate
    return None


@built_once
def _prior_query() -> sa.Select[Any]:
    complaints = table_of(Complaint)
    return sa.select(*(complaints.c[name] for name in _PRIOR_FIELDS)).where(
        complaints.c.id == sa.bindparam("complaint_id")
    )


async def root_of(*, session: AsyncSession, prior: PriorComplaint | None) -> PriorComplaint | None:
    """The complaint ``prior`` was linked to, when ``prior`` is a linked repeat; else ``prior``."""
    if prior is None or not prior.linked_repeat or prior.repeat_of is None:
        return prior
    connection = await session.connection()
    row = (await connection.execute(_prior_query(), {"complaint_id": prior.repeat_of})).first()
    return PriorComplaint(*row) if row is not None else prior


def is_open(prior: PriorComplaint) -> bool:
    """Still being worked on, and not a matter the complainant rejected (that repeat is a key clue)."""
    return (
        not prior.linked_repeat and prior.status in OPEN_STATUSES and prior.last_rating != Rating.UNSATISFIED
    )


def as_earlier(complaint: PriorComplaint) -> EarlierMatter:
    read = EarlierMatter.model_validate(complaint, from_attributes=True)
    return read.model_copy(update={"open": is_open(complaint)})
