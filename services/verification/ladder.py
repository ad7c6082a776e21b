"""The overdue ladder: reminder, due-today reminder, chase notice (催办), escalation (督办), rebuke (通报).

Each clock walks the ladder once: a step is a row unique per (clock, step), so
it happens exactly once however many scheduler instances run and however often
they restart.  The scheduler finds due steps through an index on
(status, next_step_at); on PostgreSQL it claims them with FOR UPDATE SKIP
LOCKED so instances share the work, and after downtime it fires every step
that fell due meanwhile, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.models import ClockStatus, LadderStep, OverdueStep, TaskClock
from shared.audit import audit
from shared.events import LadderStepReached
from shared.logging import get_logger
from shared.metrics import count_ladder_step
from shared.outbox import record_event
from shared.workcalendar import WorkCalendar
from shared.worker import BackgroundWorker

log = get_logger(__name__)

# A round is one transaction over at most a batch of clocks, a few statements each: it ends in
# well under a second, so one this late is waiting on a stuck database and is better retried.
STEP_TIMEOUT_SECONDS = 60.0

STEPS = tuple(OverdueStep)
STEP_LABELS: dict[str, str] = {
    OverdueStep.REMINDER: "到期前提醒",
    OverdueStep.DUE_TODAY: "当日到期提醒",
    OverdueStep.CHASE: "催办通知",
    OverdueStep.ESCALATION: "督办",
    OverdueStep.REBUKE: "书面通报",
}
STEP_REACHES: dict[str, str] = {
    OverdueStep.REMINDER: "承办队",
    OverdueStep.DUE_TODAY: "承办队",
    OverdueStep.CHASE: "承办队及其所在单位分管领导",
    OverdueStep.ESCALATION: "市局督察支队（督办）",
    OverdueStep.REBUKE: "承办单位主要负责人（书面通报）",
}


@dataclass(frozen=True)
class LadderPolicy:
    calendar: WorkCalendar
    reminder_working_days_before: int = 3
    rebuke_after_working_days: int = 5
    step_hour: int = 9

    def _at(self, day: date) -> datetime:
        return datetime.combine(day, time(self.step_hour), tzinfo=self.calendar.tz)

    def step_time(self, step: str, due_at: datetime) -> datetime:
        due_day = self.calendar.local_date(due_at)
        if step == OverdueStep.REMINDER:
            day = due_day
            for _ in range(self.reminder_working_days_before):
                day = self.calendar.previous_working_day(day)
            return self._at(day)
        if step == OverdueStep.DUE_TODAY:
            return self._at(self.calendar.on_or_after(due_day))
        if step in (OverdueStep.CHASE, OverdueStep.ESCALATION):
            return self._at(self.calendar.next_working_day(due_day))
        day = due_day
        for _ in range(self.rebuke_after_working_days + 1):
            day = self.calendar.next_working_day(day)
        return self._at(day)

    def schedule(self, clock: TaskClock, done: set[str]) -> None:
        """Point ``clock`` at its first step not yet taken (or at nothing once the ladder is done)."""
        for step in STEPS:
            if step not in done:
                clock.next_step = step
                clock.next_step_at = self.step_time(step, clock.due_at)
                return
        clock.next_step = None
        clock.next_step_at = None

    def working_days_left(self, now: datetime, due_at: datetime) -> int:
        return self.calendar.working_days_between(now, due_at)


async def steps_taken(session: AsyncSession, clock_id: int) -> set[str]:
    rows = await session.exec(select(LadderStep.step).where(LadderStep.clock_id == clock_id))
    return set(rows)


async def fire_due_steps(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    policy: LadderPolicy,
    now: datetime,
    lock_rows: bool,
    batch: int = 100,
) -> int:
    """Take the next due step of at most ``batch`` clocks due by ``now``, in one transaction.

    Returns how many steps were taken: none means nothing is due; any means more may be due
    at once, since a clock whose next step is also past due comes back in the next round.  So
    a scheduler that was down takes every missed step, in ladder order.
    """
    async with session_factory() as session, session.begin():
        query = (
            select(TaskClock)
            .where(TaskClock.status == ClockStatus.RUNNING, col(TaskClock.next_step_at) <= now)
            .order_by(col(TaskClock.next_step_at))
            .limit(batch)
        )
        if lock_rows:
            query = query.with_for_update(skip_locked=True)
        clocks = list(await session.exec(query))
        for clock in clocks:
            await _take_step(session, policy, clock, now)
    return len(clocks)


async def _take_step(session: AsyncSession, policy: LadderPolicy, clock: TaskClock, now: datetime) -> None:
    assert clock.id is not None and clock.next_step is not None and clock.next_step_at is not None
    step = clock.next_step
    done = await steps_taken(session, clock.id)
    if step not in done:
        try:
            async with session.begin_nested():
                session.add(
                    LadderStep(
                        clock_id=clock.id,
                        task_id=clock.task_id,
                        case_id=clock.case_id,
                        step=step,
                        due_at=clock.due_at,
                        at=clock.next_step_at,
                        notified=STEP_REACHES[step],
                    )
                )
        except IntegrityError:
            # Another scheduler took this step first: once is the rule, so ours is dropped.
            done.add(step)
        else:
            done.add(step)
            record_event(
                session,
                LadderStepReached(
                    case_id=clock.case_id,
                    actor="scheduler",
                    task_id=clock.task_id,
                    clock=clock.name,
                    step=step,
                    team_code=clock.team_code,
                    due_at=clock.due_at,
                ),
            )
            await audit(
                session,
                case_id=clock.case_id,
                action=f"ladder_{step}",
                actor="scheduler",
                reason=f"{clock.label}：{STEP_LABELS[step]}，送达{STEP_REACHES[step]}",
                detail={"task_id": clock.task_id, "clock": clock.name, "due_at": clock.due_at.isoformat()},
                at=now,
            )
            log.info("ladder step taken", clock=clock.name, step=step)
            count_ladder_step(step=step)
    policy.schedule(clock, done)
    session.add(clock)


class LadderScheduler:
    """Runs ``fire_due_steps`` as a background worker, against the service's clock."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        policy: LadderPolicy,
        now: Callable[[], datetime],
        interval_seconds: float,
        lock_rows: bool,
    ) -> None:
        self.session_factory = session_factory
        self.policy = policy
        self.now = now
        self.lock_rows = lock_rows
        self.worker = BackgroundWorker(
            name="ladder-scheduler",
            step=self.step,
            idle_seconds=interval_seconds,
            step_timeout=STEP_TIMEOUT_SECONDS,
        )

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
            session_factory=self.session_factory, policy=self.policy, now=now, lock_rows=self.lock_rows
        )
