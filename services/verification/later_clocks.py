"""The clocks that start when a task concludes: each rectification item (整改) until it is checked,
and the B-class follow-up reply of a suggestion (正在解决或列入计划解决) until it is given.

They are task clocks like the others (``TaskClock``), so the overdue ladder reminds and chases
them and the ledger shows them until they stop.  Names: ``rectification:<item id>`` and
``b_follow_up``; periods and rules from ``shared/data/deadlines.json`` (later clocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.models import (
    FOLLOW_UP_CLASSIFICATION,
    ClockStatus,
    Finding,
    Rectification,
    RectificationStatus,
    Task,
    TaskClock,
)
from shared.db import new_row
from shared.deadlines import DeadlineBook
from shared.events import ClockSet
from shared.ladder import LadderPolicy
from shared.slice_rows import add_later
from shared.states import CaseKind

RECTIFICATION = "rectification"
B_FOLLOW_UP = "b_follow_up"


@dataclass(frozen=True)
class LaterClocks:
    """What starting a later clock needs: the deadline rules and the ladder's policy."""

    deadlines: DeadlineBook
    policy: LadderPolicy


def rectification_clock_name(item_id: str) -> str:
    return f"{RECTIFICATION}:{item_id}"


def add_clock(session: AsyncSession, policy: LadderPolicy, task: Task, clock_set: ClockSet) -> None:
    """A clock of the task, from its deadline, with its ladder steps scheduled."""
    clock = new_row(
        TaskClock,
        task_id=task.id,
        case_id=task.case_id,
        team_code=task.team_code,
        **clock_set.model_dump(),
        original_due_at=clock_set.due_at,
    )
    policy.schedule(clock, set())
    add_later(session, clock)


async def start_after_conclusion(
    session: AsyncSession, later: LaterClocks, *, task: Task, finding: Finding, at: datetime
) -> None:
    """Call after the task's own clocks stopped: starts a clock per open rectification item of the
    task that has none, and the B-class follow-up clock of a B-class reply."""
    existing = set(await session.exec(select(TaskClock.name).where(TaskClock.task_id == task.id)))
    label, _period, rule, source = later.deadlines.later[RECTIFICATION]
    items = await session.exec(
        select(Rectification).where(
            Rectification.task_id == task.id, Rectification.status == RectificationStatus.OPEN
        )
    )
    for item in items:
        name = rectification_clock_name(item.id)
        if name in existing:
            continue
        clock_set = ClockSet(
            name=name, label=f"{label}：{item.item[:20]}", rule=rule, source=source, due_at=item.due_date
        )
        add_clock(session, later.policy, task, clock_set)
    if (
        task.case_kind == CaseKind.SUGGESTION
        and not finding.follow_up
        and finding.classification == FOLLOW_UP_CLASSIFICATION
        and B_FOLLOW_UP not in existing
    ):
        follow = later.deadlines.later_clock(B_FOLLOW_UP, calendar=later.policy.calendar, start=at)
        add_clock(session, later.policy, task, follow)


def default_rectification_due(later: LaterClocks, *, start: datetime) -> datetime:
    return later.deadlines.later_period(RECTIFICATION).due(later.policy.calendar, start)


async def stop_rectification_clock(session: AsyncSession, *, item: Rectification, at: datetime) -> None:
    """The item was checked (done or not): its clock stops, and with it its reminders."""
    clock = (
        await session.exec(
            select(TaskClock).where(
                TaskClock.task_id == item.task_id,
                TaskClock.name == rectification_clock_name(item.id),
                TaskClock.status == ClockStatus.RUNNING,
            )
        )
    ).first()
    if clock is None:
        return
    clock.status = ClockStatus.STOPPED
    clock.stopped_at = at
    clock.next_step = None
    clock.next_step_at = None
    session.add(clock)
