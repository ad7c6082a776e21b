"""The overdue ladder, for any table of clocks: reminder, due-today reminder, 催办, 督办, 通报.

A clock table has the columns ``id``, ``case_id``, ``status`` (``running`` while it runs),
``due_at``, ``next_step`` and ``next_step_at``, with an index on (status, next_step_at); its step
table is unique per (clock, step) and has a ``clock_id`` and a ``step`` column.  Each clock walks
its ladder once: a step is a row of the step table, so it happens exactly once however many
scheduler instances run and however often they restart.  On PostgreSQL due clocks are claimed
with FOR UPDATE SKIP LOCKED so instances share the work; after downtime every step that fell due
meanwhile is taken, in order.  What a step does (an event, an audit entry, a notification) is the
owner's ``on_step`` callback, run in the same transaction as the step row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.audit import hold_chain
from shared.logging import get_logger
from shared.workcalendar import WorkCalendar
from shared.worker import BackgroundWorker

log = get_logger(__name__)

# A round is one transaction over at most a batch of clocks, a few statements each: it ends in
# well under a second, so one this late is waiting on a stuck database and is better retried.
STEP_TIMEOUT_SECONDS = 60.0

RUNNING = "running"
STOPPED = "stopped"
REMINDER = "reminder"
DUE_TODAY = "due_today"
CHASE = "chase"
ESCALATION = "escalation"
REBUKE = "rebuke"
# The rungs in the order a clock climbs them.
STANDARD_STEPS: tuple[str, ...] = (REMINDER, DUE_TODAY, CHASE, ESCALATION, REBUKE)

C = TypeVar("C", bound=SQLModel)


@dataclass(frozen=True)
class LadderPolicy:
    """When each step of a clock falls due, from its deadline and the working-day calendar."""

    calendar: WorkCalendar
    reminder_working_days_before: int = 3
    rebuke_after_working_days: int = 5
    step_hour: int = 9
    steps: tuple[str, ...] = STANDARD_STEPS

    def _at(self, day: date) -> datetime:
        return datetime.combine(day, time(self.step_hour), tzinfo=self.calendar.tz)

    def step_time(self, step: str, due_at: datetime) -> datetime:
        due_day = self.calendar.local_date(due_at)
        if step == REMINDER:
            day = due_day
            for _ in range(self.reminder_working_days_before):
                day = self.calendar.previous_working_day(day)
            return self._at(day)
        if step == DUE_TODAY:
            return self._at(self.calendar.on_or_after(due_day))
        if step in (CHASE, ESCALATION):
            return self._at(self.calendar.next_working_day(due_day))
        day = due_day
        for _ in range(self.rebuke_after_working_days + 1):
            day = self.calendar.next_working_day(day)
        return self._at(day)

    def schedule(self, clock: Any, done: set[str]) -> None:
        """Point ``clock`` at its first step not yet taken (or at nothing once the ladder is done)."""
        for step in self.steps:
            if step not in done:
                clock.next_step = step
                clock.next_step_at = self.step_time(step, clock.due_at)
                return
        clock.next_step = None
        clock.next_step_at = None

    def working_days_left(self, now: datetime, due_at: datetime) -> int:
        return self.calendar.working_days_between(now, due_at)


OnStep = Callable[[AsyncSession, C, str, datetime], Awaitable[None]]


@dataclass(frozen=True)
class Ladder(Generic[C]):
    """One owner's clocks: the tables, the policy, how a step row is made and what a step does."""

    name: str
    clock_table: type[C]
    step_table: type[SQLModel]
    policy: LadderPolicy
    new_step: Callable[[C, str], SQLModel]
    on_step: OnStep[C]


async def steps_taken(session: AsyncSession, step_table: type[SQLModel], clock_id: int) -> set[str]:
    table: Any = step_table
    rows = await session.exec(select(table.step).where(table.clock_id == clock_id))
    return set(rows)


async def fire_due_steps(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    ladder: Ladder[C],
    now: datetime,
    lock_rows: bool,
    batch: int = 100,
) -> int:
    """Take the next due step of at most ``batch`` clocks due by ``now``, in one transaction.

    Returns how many steps were taken: none means nothing is due; any means more may be due
    at once, since a clock whose next step is also past due comes back in the next round.  So
    a scheduler that was down takes every missed step, in ladder order.
    """
    table: Any = ladder.clock_table
    async with session_factory() as session, session.begin():
        query = (
            select(ladder.clock_table)
            .where(table.status == RUNNING, col(table.next_step_at) <= now)
            .order_by(col(table.next_step_at))
            .limit(batch)
        )
        if lock_rows:
            # Nothing due is the usual round: it takes no lock at all.
            probe = (
                select(col(table.id)).where(table.status == RUNNING, col(table.next_step_at) <= now).limit(1)
            )
            if (await session.exec(probe)).first() is None:
                return 0
            # The audit chain before the clocks: the order every appender that stops clocks keeps.
            await hold_chain(session)
            query = query.with_for_update(skip_locked=True)
        clocks = list(await session.exec(query))
        for clock in clocks:
            await _take_step(session, ladder, clock, now)
    return len(clocks)


async def _take_step(session: AsyncSession, ladder: Ladder[C], clock: C, now: datetime) -> None:
    row: Any = clock
    assert row.id is not None and row.next_step is not None and row.next_step_at is not None
    step = str(row.next_step)
    done = await steps_taken(session, ladder.step_table, row.id)
    if step not in done:
        try:
            async with session.begin_nested():
                session.add(ladder.new_step(clock, step))
        except IntegrityError:
            # Another scheduler took this step first: once is the rule, so ours is dropped.
            done.add(step)
        else:
            done.add(step)
            await ladder.on_step(session, clock, step, now)
            log.info("ladder step taken", ladder=ladder.name, step=step)
    ladder.policy.schedule(clock, done)
    session.add(clock)


class LadderScheduler(Generic[C]):
    """Runs ``fire_due_steps`` for one ladder as a background worker, against the service's clock."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        ladder: Ladder[C],
        now: Callable[[], datetime],
        interval_seconds: float,
        lock_rows: bool,
        name: str = "ladder-scheduler",
    ) -> None:
        self.session_factory = session_factory
        self.ladder = ladder
        self.now = now
        self.lock_rows = lock_rows
        self.worker = BackgroundWorker(
            name=name,
            step=self.step,
            idle_seconds=interval_seconds,
            step_timeout=STEP_TIMEOUT_SECONDS,
        )

    @property
    def policy(self) -> LadderPolicy:
        return self.ladder.policy

    async def step(self) -> bool:
        """One bounded round; True when it took steps, so that more may be due at once."""
        return await self._round(self.now()) > 0

    async def tick(self) -> int:
        """Every step due now, round after round; returns how many were taken."""
        now = self.now()
        taken = 0
        while taken_now := await self._round(now):
            taken += taken_now
        return taken

    async def _round(self, now: datetime) -> int:
        return await fire_due_steps(
            session_factory=self.session_factory, ladder=self.ladder, now=now, lock_rows=self.lock_rows
        )
