"""Rows kept per matter, following the tables they are made of: the ledger's entries
(``ledger_entries``) and the measures' facts (``measure_facts``).

Without a call at each change: a flush notes the matters whose tasks, clocks, findings, marks,
close-offs, ratings, repeat calls or snapshot it wrote (``_note``), and just before the outermost commit their
rows are made again from the tables (``_refresh``), in the same transaction.  The refresh first
takes each matter's lock (``shared.matter_locks``): two transactions that change one matter at once
then refresh one after the other, and the second sees what the first committed.  A change the
flush does not see (a ladder step, written by the scheduler's round) is named with ``note``.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from typing import Any
from weakref import WeakKeyDictionary
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, inspect, select
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, SessionTransaction
from sqlmodel import col

from services.verification import ledger_entries, measure_facts
from services.verification.measure_rules import load_settings
from services.verification.models import (
    Finding,
    LedgerCloseOff,
    LedgerMark,
    MatterSnapshot,
    RepeatCall,
    RoundRating,
    Task,
    TaskClock,
)
from shared.batchguard import LATER_ROWS
from shared.matter_locks import lock_matters
from shared.slice_rows import prefetched_without_rows

_CASES = "verification_kept_rows_cases"
_TASKS = "verification_kept_rows_tasks"

# The engines of verification's databases whose sessions keep the rows (``follow``): the hooks are
# the Session class's, and other databases in the process (another service's, a test's own) hold no
# such tables.
_FOLLOWED: WeakKeyDictionary[Engine, ZoneInfo] = WeakKeyDictionary()

# The columns whose change can change a matter's kept rows: a new or deleted row always does.
_WATCHED: dict[type[Any], tuple[str, ...]] = {
    Task: ("status", "classification", "case_id", "created_at", "team_code", "concluded_at", "round"),
    TaskClock: ("status", "name", "stopped_at", "due_at"),
    Finding: ("follow_up", "outcome"),
    LedgerMark: (),
    LedgerCloseOff: (),
    RoundRating: ("rating", "at"),
    RepeatCall: ("case_id", "received_at"),
    MatterSnapshot: ("received_at", "county_code", "allegations", "case_kind", "anonymous"),
}


def follow(engine: AsyncEngine, *, tz: ZoneInfo) -> None:
    """Keep the rows in every session on ``engine`` from now on (the service's start-up); ``tz``:
    the bureau's, whose days the measures' sums count by."""
    _FOLLOWED[engine.sync_engine] = tz


def _followed(session: Session) -> ZoneInfo | None:
    """The bureau's time zone when the session's database keeps the rows, else None."""
    bind = session.bind
    return _FOLLOWED.get(bind) if isinstance(bind, Engine) else None


def _changed(row: Any, columns: tuple[str, ...]) -> bool:
    state = inspect(row)
    return any(state.attrs[name].history.has_changes() for name in columns)


def _pending_matters(session: Session) -> tuple[set[str], set[str]]:
    """The matters (and, for findings, the tasks) that the session's unflushed rows change.

    Rows a consumer's slice keeps for later (``shared.slice_rows.add_later``) are seen at the flush before
    their insert, which a slice always makes with its new task or changed clock.
    """
    cases: set[str] = set()
    tasks: set[str] = set()
    later = session.info.get(LATER_ROWS) or {}
    added = chain(session.new, session.deleted, later.get(TaskClock, ()), later.get(Finding, ()))
    changed = (row for row in session.dirty if _changed(row, _WATCHED.get(type(row), ())))
    for row in chain(added, changed):
        if type(row) not in _WATCHED:
            continue
        if isinstance(row, Finding):
            tasks.add(row.task_id)
        else:
            cases.add(row.case_id)
    return cases, tasks


def note(session: Session, case_ids: Iterable[str]) -> None:
    """Refresh these matters' rows at the commit, for a change the flush does not see (a ladder
    step, from its event)."""
    if _followed(session) is not None:
        session.info.setdefault(_CASES, set()).update(case_ids)


@sa_event.listens_for(Session, "before_flush")
def _note(session: Session, _context: Any, _instances: Any) -> None:
    if _followed(session) is None:
        return
    cases, tasks = _pending_matters(session)
    if cases:
        session.info.setdefault(_CASES, set()).update(cases)
    if tasks:
        session.info.setdefault(_TASKS, set()).update(tasks)


@sa_event.listens_for(Session, "before_commit")
def _refresh(session: Session) -> None:
    tz = _followed(session)
    if session.in_nested_transaction() or tz is None:
        return
    if any(_pending_matters(session)):
        session.flush()
    cases: set[str] = session.info.pop(_CASES, set())
    tasks: set[str] = session.info.pop(_TASKS, set())
    if not cases and not tasks:
        return
    connection = session.connection()
    if tasks:
        cases.update(connection.scalars(select(col(Task.case_id)).where(col(Task.id).in_(tasks))))
    ordered = sorted(cases)
    lock_matters(connection, ordered)
    # A matter the slice's prefetch found without tasks has no entries, before or after (a new
    # snapshot, mostly): its tasks come only from an assignment, which waits for the matter's lock.
    ledger_entries.refresh(connection, cases - prefetched_without_rows(session, col(Task.case_id), cases))
    measure_facts.refresh(connection, ordered, load_settings(), tz)


@sa_event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, previous_transaction: SessionTransaction) -> None:
    # A rolled-back savepoint's matters are refreshed all the same (harmless: made from the tables).
    if previous_transaction.parent is None:
        session.info.pop(_CASES, None)
        session.info.pop(_TASKS, None)
