"""The dashboard's open tasks (``verification_open_figure``): kept, rebuilt and read.

Counting the open tasks and the worst overdue step of each at read time cost a subquery per open
task (5,000 at 100,000 matters, 50,000 at a million); the summary holds a row per county, team,
kind and step.  A task's worst step is kept on the task (``Task.overdue_rank``), so every change
knows the row it leaves and the row it joins without a query:

- a task opens (an assignment) or closes (concluded, withdrawn, superseded, returned);
- a ladder step is taken (the rank can only rise; from the ladder's ``LadderStepReached``, in a
  transaction of its own) or a clock with steps stops (the rank is recounted from the task's other
  running clocks; a task without steps needs no recount);
- the matter's snapshot arrives after its task: the task moves from no county to the matter's.

The differences go through ``summaries.record`` (added at the outermost commit, forgotten with a
rolled-back savepoint).  ``stats._count_open`` stays as the reference a test compares with, and
``rebuild`` is its SQL grouped into the summary.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, func, update
from sqlalchemy import select as sa_select
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification import stats, summaries
from services.verification.models import ACTIVE_TASK_STATUSES, MatterSnapshot, OpenFigure, Task
from shared.db import built_once, table_of
from shared.matter_locks import serialise_matters
from shared.slice_rows import lookup

OPEN = table_of(OpenFigure)
SUMMARY = summaries.Summary(OPEN, ("county_code", "team_code", "case_kind", "overdue_rank"), ("open",))


def rank_of(step: str) -> int:
    """A step's rank among the overdue steps (``stats.OVERDUE_STEPS``); 0 for the reminders before."""
    return stats.OVERDUE_STEPS.index(step) + 1 if step in stats.OVERDUE_STEPS else 0


def is_open(task: Task) -> bool:
    return task.status in ACTIVE_TASK_STATUSES


def _count(session: AsyncSession, task: Task, *, county: str | None, rank: int, count: int) -> None:
    summaries.record(session, {(county or "", task.team_code, task.case_kind, rank): [count]}, SUMMARY)


async def county_of(session: AsyncSession, case_id: str) -> str | None:
    matter = await lookup(session, MatterSnapshot, case_id)
    return matter.county_code if matter is not None else None


async def task_opened(session: AsyncSession, *, task: Task, county: str | None) -> None:
    _count(session, task, county=county, rank=task.overdue_rank, count=1)


async def status_changed(session: AsyncSession, *, task: Task, was: str) -> None:
    """After ``task.status`` changed from ``was``: counted in or out of the open tasks."""
    if is_open(task) == (was in ACTIVE_TASK_STATUSES):
        return
    county = await county_of(session, task.case_id)
    _count(session, task, county=county, rank=task.overdue_rank, count=1 if is_open(task) else -1)


async def _set_rank(session: AsyncSession, task: Task, rank: int) -> None:
    if rank == task.overdue_rank:
        return
    if is_open(task):
        county = await county_of(session, task.case_id)
        _count(session, task, county=county, rank=task.overdue_rank, count=-1)
        _count(session, task, county=county, rank=rank, count=1)
    task.overdue_rank = rank
    session.add(task)


async def step_taken(session: AsyncSession, *, case_id: str, task_id: str, step: str) -> None:
    """A clock of the task took ``step``: its worst step may rise.

    From the ladder's own event, in a transaction of its own that locks the task: the round that
    took the step holds the audit chain and then the clocks, and a conclusion holds the task and
    then the chain, so the round itself must not wait for the task.
    """
    rank = rank_of(step)
    if not rank:
        return
    # The matter's lock first, as a reassignment's slice takes it before it reads the task: the
    # step then counts on the task as it stands after the slice (superseded, not counted), or the
    # slice reads the task with the step's rank.
    await serialise_matters(session, [case_id])
    task = (await session.exec(select(Task).where(Task.id == task_id).with_for_update())).first()
    if task is not None and rank > task.overdue_rank:
        await _set_rank(session, task, rank)


@built_once
def _worst_running_query() -> Any:
    return sa_select(func.coalesce(stats.worst_running_step(bindparam("task_id")), 0))


async def clocks_stopped(session: AsyncSession, *, task: Task) -> None:
    """Clocks of the task stopped (flushed or not): its worst step is recounted from the others,
    unless it has none to lose."""
    if not task.overdue_rank or not is_open(task):
        return
    await session.flush()
    # Read as a step taken at the same moment left it (``step_taken`` holds the same lock).
    await session.refresh(task, with_for_update=True)
    connection = await session.connection()
    rank = (await connection.execute(_worst_running_query(), {"task_id": task.id})).scalar_one()
    await _set_rank(session, task, int(rank))


def matter_arrived(session: AsyncSession, *, county: str | None, tasks: list[Task]) -> None:
    """The matter's snapshot arrived after its tasks: its open ones move to the matter's county."""
    if not county:
        return
    for task in tasks:
        if is_open(task):
            _count(session, task, county=None, rank=task.overdue_rank, count=-1)
            _count(session, task, county=county, rank=task.overdue_rank, count=1)


# --- Rebuilding and reading ----------------------------------------------------------------------


def rebuild(connection: Connection) -> int:
    """Each task's worst step recounted, and the summary replaced by what the base tables say
    (``stats._count_open``'s SQL); returns the number of summary rows."""
    task = stats.TASK
    with_steps = sa_select(stats.STEP.c.task_id)
    connection.execute(update(task).values(overdue_rank=0).where(task.c.overdue_rank != 0))
    connection.execute(
        update(task)
        .values(overdue_rank=func.coalesce(stats.worst_running_step(task.c.id), 0))
        .where(task.c.id.in_(with_steps))
    )
    county = stats.county_of_task_matter()
    grouped = (
        sa_select(county, task.c.team_code, task.c.case_kind, task.c.overdue_rank, func.count())
        .where(task.c.status.in_(ACTIVE_TASK_STATUSES))
        .group_by(county, task.c.team_code, task.c.case_kind, task.c.overdue_rank)
    )
    rows = [
        {"county_code": c or "", "team_code": t, "case_kind": k, "overdue_rank": r, "open": n}
        for c, t, k, r, n in connection.execute(grouped)
    ]
    connection.execute(OPEN.delete())
    if rows:
        connection.execute(OPEN.insert(), rows)
    return len(rows)


async def count_open_from_summary(session: AsyncSession, groups: Any, *, county: str | None) -> None:
    """``stats._count_open``'s figures, from the summary."""
    query = sa_select(OPEN.c.county_code, OPEN.c.team_code, OPEN.c.overdue_rank, func.sum(OPEN.c.open))
    if county:
        query = query.where(OPEN.c.county_code == county)
    query = query.group_by(OPEN.c.county_code, OPEN.c.team_code, OPEN.c.overdue_rank)
    for county_code, team, rank, count in await stats.rows_of(session, query):
        if not count:
            continue  # a row the moves left at zero: the reference has no group for it
        entry = groups.of(stats.code_of(groups.by, county_code or None, team or None))
        entry["open"] += count
        if rank:
            entry["overdue"][stats.OVERDUE_STEPS[rank - 1]] += count
