"""What is on the ledger (督办台账), kept as rows: ``verification_ledger_entry``.

Whether a task puts its matter on the ledger (``task_conditions``) takes four correlated checks
per task.  Asked at read time, a page and its total evaluated every candidate task (5,400 at
100,000 matters, 55,000 at a million) for every request.  Instead each task that qualifies has an
entry, with the matter's date and county, and the entry that is the matter's row on the unfiltered
ledger (an open task first, else the newest) is marked ``leading``.  A page is then an index range.

The entries follow the rows they are made of, without a call at each change (``matter_rows``):
the matters a transaction changed have their entries made again from the tables at its commit.
``rebuild`` makes every entry again from the tables (the migration's back-fill, and a repair).

An entry also holds what the ledger's other filters name (``categories``, ``clocks``, ``steps``),
as tokens a LIKE matches (``holds``): probing the matter's allegations, the task's clocks or its
ladder steps for each entry took 120-280 ms a page at a million matters.  A ladder step is written
by the scheduler's round, which holds the audit chain; taking matters' locks after it would invert
the writers' order, so the step reaches the entries from its own event (``matter_rows.note``, called by
``consumers.on_ladder_step_reached``, in a transaction of its own): until that event is handled, a
filter by step does not yet see the step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Delete,
    Select,
    and_,
    bindparam,
    exists,
    false,
    or_,
    select,
    tuple_,
    union,
)
from sqlalchemy.orm import aliased
from sqlmodel import Field, Index, SQLModel, col

from services.verification.models import (
    ACTIVE_TASK_STATUSES,
    FOLLOW_UP_CLASSIFICATION,
    ClockStatus,
    Finding,
    LadderStep,
    LedgerCloseOff,
    LedgerMark,
    MatterSnapshot,
    Task,
    TaskClock,
    TaskStatus,
)
from shared.db import UTCDateTime, built_once, table_of
from shared.db_statistics import analyse_if_never

_CASES = "verification_ledger_cases"
_TASKS = "verification_ledger_tasks"
REFRESH_BATCH = 500


class LedgerEntry(SQLModel, table=True):
    """A task that puts its matter on the ledger, with what a page filters and orders by."""

    __tablename__ = "verification_ledger_entry"
    __table_args__ = (
        # The unfiltered ledger and its matter filters walk the leading entries in page order.
        Index("ix_verification_ledger_entry_leading", "leading", "received_at", "case_id"),
        Index("ix_verification_ledger_entry_county", "leading", "county_code", "received_at", "case_id"),
        Index("ix_verification_ledger_entry_team", "team_code", "received_at", "case_id"),
        Index("ix_verification_ledger_entry_case", "case_id"),
    )

    task_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(max_length=64)
    received_at: datetime = Field(sa_type=UTCDateTime)
    county_code: str | None = Field(default=None, max_length=16)
    team_code: str = Field(max_length=32)
    active: bool
    created_at: datetime = Field(sa_type=UTCDateTime)
    leading: bool
    # The matter's only entry: no other of its tasks can be its row under a filter on the task.
    alone: bool
    # What the filters by category, clock and step match (``tokens``): the matter's categories, the
    # task's clocks' names (with each prefix a rectification item's name has), the steps it took.
    categories: str = Field(default="", max_length=400)
    clocks: str = Field(default="", max_length=400)
    steps: str = Field(default="", max_length=100)


ENTRY = table_of(LedgerEntry)
VALUE_SEPARATOR = "|"


def tokens(values: Iterable[str]) -> str:
    """Values as one column that ``holds`` matches: ``|a|b|``, sorted; empty for none.  A value
    holding the separator cannot be asked for (``holds``) and is left out."""
    kept = sorted({value for value in values if value and VALUE_SEPARATOR not in value})
    return f"{VALUE_SEPARATOR}{VALUE_SEPARATOR.join(kept)}{VALUE_SEPARATOR}" if kept else ""


def like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def holds(column: Any, value: str) -> ColumnElement[bool]:
    """``column`` (made by ``tokens``) holds ``value``."""
    if not value or VALUE_SEPARATOR in value:
        return false()
    matched: ColumnElement[bool] = column.like(
        f"%{VALUE_SEPARATOR}{like_escaped(value)}{VALUE_SEPARATOR}%", escape="\\"
    )
    return matched


def clock_tokens(name: str) -> list[str]:
    """A clock's name and each of its prefixes ending before a colon: the ledger's filter by clock
    names a rectification item's clocks (``rectification:<item>``) by their common prefix."""
    parts = name.split(":")
    return [":".join(parts[:end]) for end in range(1, len(parts) + 1)]


def task_conditions(task: Any) -> list[ColumnElement[bool]]:
    """What puts one task (``task``: the table or an alias of it) on the ledger.

    Open tasks; concluded ones whose work goes on (a clock running, a B-class reply waiting for its
    follow-up); concluded matters a supervisor marked (督办件, 领导包案), unless closed off (销号)
    after the task began and after the latest mark: new work brings a matter back.
    """
    running = exists().where(col(TaskClock.task_id) == task.id, col(TaskClock.status) == ClockStatus.RUNNING)
    followed = exists().where(col(Finding.task_id) == task.id, col(Finding.follow_up).is_(True))
    b_waiting = and_(task.classification == FOLLOW_UP_CLASSIFICATION, ~followed)
    marked = exists().where(col(LedgerMark.case_id) == task.case_id)
    # Correlated explicitly: left to itself, the nested EXISTS would read ``task`` as a table of its own.
    later_mark = (
        exists()
        .where(
            col(LedgerMark.case_id) == task.case_id, col(LedgerMark.marked_at) > col(LedgerCloseOff.closed_at)
        )
        .correlate_except(LedgerMark)
    )
    closed = exists().where(
        col(LedgerCloseOff.case_id) == task.case_id,
        col(LedgerCloseOff.closed_at) >= task.created_at,
        ~later_mark,
    )
    concluded = task.status == TaskStatus.CONCLUDED
    return [
        or_(task.status.in_(ACTIVE_TASK_STATUSES), and_(concluded, or_(running, b_waiting, marked))),
        ~and_(concluded, ~running, ~b_waiting, closed),
    ]


def comes_before(other: tuple[Any, Any, Any], this: tuple[Any, Any, Any]) -> ColumnElement[bool]:
    """The order of a matter's candidate rows, each given as (open, created at, task id): open
    before concluded, then the newer, the id breaking a tie (``_rank`` is the same in Python)."""
    other_open, other_created, other_id = other
    this_open, this_created, this_id = this
    newer = tuple_(other_created, other_id) > tuple_(this_created, this_id)
    return or_(and_(other_open, ~this_open), and_(other_open == this_open, newer))


@built_once
def _qualifying_tasks(
    *, of_cases: bool
) -> Select[str, str, datetime, str | None, str, str, datetime, list[dict[str, Any]]]:
    """The tasks on the ledger, with their matters' date and county: of the matters in the bound
    ``case_ids``, or of every matter."""
    query = (
        select(
            col(Task.id),
            col(Task.case_id),
            col(MatterSnapshot.received_at),
            col(MatterSnapshot.county_code),
            col(Task.team_code),
            col(Task.status),
            col(Task.created_at),
            col(MatterSnapshot.allegations),
        )
        .join(MatterSnapshot, col(MatterSnapshot.case_id) == col(Task.case_id))
        .where(*task_conditions(Task))
    )
    if of_cases:
        return query.where(col(Task.case_id).in_(bindparam("case_ids", expanding=True)))
    return query.where(col(Task.id).in_(_candidates()))


def _candidates() -> Any:
    """The tasks that may be on the ledger, each part read from an index: alone, the conditions
    are checked on every task ever made (minutes at a million matters)."""
    active, running, follow_up, marked = aliased(Task), aliased(TaskClock), aliased(Task), aliased(Task)
    return union(
        select(col(active.id)).where(col(active.status).in_(ACTIVE_TASK_STATUSES)),
        select(col(running.task_id)).where(col(running.status) == ClockStatus.RUNNING),
        select(col(follow_up.id)).where(
            col(follow_up.classification) == FOLLOW_UP_CLASSIFICATION,
            col(follow_up.status) == TaskStatus.CONCLUDED,
        ),
        select(col(marked.id)).join(LedgerMark, col(LedgerMark.case_id) == marked.case_id),
    )


@built_once
def _clock_names() -> Select[str, str]:
    return select(col(TaskClock.task_id), col(TaskClock.name)).where(
        col(TaskClock.task_id).in_(bindparam("task_ids", expanding=True))
    )


@built_once
def _steps_taken() -> Select[str, str]:
    return select(col(LadderStep.task_id), col(LadderStep.step)).where(
        col(LadderStep.task_id).in_(bindparam("task_ids", expanding=True))
    )


def _values_of(connection: Connection, query: Select[str, str], task_ids: list[str]) -> dict[str, set[str]]:
    """Each task's values from ``query`` (task id, value), read a batch of tasks at a time."""
    found: dict[str, set[str]] = defaultdict(set)
    for start in range(0, len(task_ids), REFRESH_BATCH):
        for task_id, value in connection.execute(
            query, {"task_ids": task_ids[start : start + REFRESH_BATCH]}
        ):
            found[task_id].add(value)
    return found


@built_once
def _delete_of_cases() -> Delete:
    return ENTRY.delete().where(ENTRY.c.case_id.in_(bindparam("case_ids", expanding=True)))


def entries_of(connection: Connection, case_ids: Sequence[str] | None) -> list[dict[str, Any]]:
    """The entries the tables make for these matters (every matter: None), each marked leading or not."""
    if case_ids is None:
        found = connection.execute(_qualifying_tasks(of_cases=False))
    else:
        found = connection.execute(_qualifying_tasks(of_cases=True), {"case_ids": list(case_ids)})
    entries: dict[str, dict[str, Any]] = {}
    rows = []
    for task_id, case_id, received_at, county, team, status, created_at, allegations in found:
        categories = (allegation.get("category") for allegation in allegations)
        row = {
            "task_id": task_id,
            "case_id": case_id,
            "received_at": received_at,
            "county_code": county,
            "team_code": team,
            "active": status in ACTIVE_TASK_STATUSES,
            "created_at": created_at,
            "leading": False,
            "alone": True,
            "categories": tokens(category for category in categories if isinstance(category, str)),
        }
        rows.append(row)
        kept = entries.get(case_id)
        if kept is not None:
            kept["alone"] = row["alone"] = False
        if kept is None or _rank(row) > _rank(kept):
            entries[case_id] = row
    for row in entries.values():
        row["leading"] = True
    task_ids = [row["task_id"] for row in rows]
    clocks = _values_of(connection, _clock_names(), task_ids)
    steps = _values_of(connection, _steps_taken(), task_ids)
    for row in rows:
        row["clocks"] = tokens(part for name in clocks[row["task_id"]] for part in clock_tokens(name))
        row["steps"] = tokens(steps[row["task_id"]])
    return rows


def _rank(row: dict[str, Any]) -> tuple[bool, datetime, str]:
    return (row["active"], row["created_at"], row["task_id"])


def refresh(connection: Connection, case_ids: Iterable[str]) -> None:
    """Make the entries of these matters again from the tables (the caller holds their locks)."""
    ordered = sorted(set(case_ids))
    for start in range(0, len(ordered), REFRESH_BATCH):
        batch = ordered[start : start + REFRESH_BATCH]
        rows = entries_of(connection, batch)
        connection.execute(_delete_of_cases(), {"case_ids": batch})
        if rows:
            connection.execute(ENTRY.insert(), rows)


def rebuild(connection: Connection) -> int:
    """Every entry made again from the tables; the number of entries."""
    analyse_if_never(connection)
    rows = entries_of(connection, None)
    connection.execute(ENTRY.delete())
    if rows:
        connection.execute(ENTRY.insert(), rows)
    return len(rows)
