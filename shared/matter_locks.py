"""One matter's writers, one after another, across a service's instances on PostgreSQL.

Two transactions that each read what the other is writing about the same matter can both miss it:
verification's snapshot of a complaint counts it as received by the team of the matter's latest
task while the assignment that makes that task, handled by another consumer at the same moment,
looks for the snapshot to move the count.  At READ COMMITTED each sees the matter without the
other's rows, and the count stays with no team.  A transaction-scoped advisory lock per matter,
taken before such reads (a consumer's slice, before its prefetch) or before rows made from the
matter's other rows are written (the ledger's entries, at commit), makes the second wait for the
first to commit and then read what it wrote.

Locks are taken in key order, all of a transaction's at once, so two transactions that lock
several matters never wait for each other in a circle over these locks; the lock is re-entrant
within a transaction.  On SQLite every write transaction holds the database's one write lock
(``BEGIN IMMEDIATE``) from its start, so this does nothing there.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import LOCK_EACH, lock_key


def _keys(case_ids: Iterable[str]) -> list[int]:
    return sorted({lock_key(f"matter:{case_id}") for case_id in case_ids})


def lock_matters(connection: Connection, case_ids: Iterable[str]) -> None:
    """On PostgreSQL, wait for and take the lock of each matter, in key order (a sync connection:
    a session's commit hook)."""
    keys = _keys(case_ids)
    if keys and connection.dialect.name == "postgresql":
        connection.execute(LOCK_EACH, {"keys": keys})


def is_postgresql(session: AsyncSession) -> bool:
    """Whether the locks mean anything on this session's database (a caller that would read
    something only to lock it asks first)."""
    return bool(session.sync_session.get_bind().dialect.name == "postgresql")


async def serialise_matters(session: AsyncSession, case_ids: Iterable[str]) -> None:
    """``lock_matters`` on the session's connection."""
    if not is_postgresql(session):
        return
    connection = await session.connection()
    await connection.run_sync(lock_matters, case_ids)
