"""Verification's overdue ladder: reminder, due-today reminder, chase notice (催办), escalation (督办), rebuke (通报).

The mechanism (step times, exactly-once steps, the scheduler) is ``shared.ladder``; this module
says what a step of a task's clock does here: a ``LadderStepReached`` event (feedback tells the
people it names) and an audit entry, in the transaction that takes the step.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.models import LadderStep, OverdueStep, TaskClock
from shared import ladder as shared_ladder
from shared.audit import record_audited
from shared.events import LadderStepReached
from shared.ladder import Ladder, LadderPolicy
from shared.metrics import count_ladder_step

__all__ = ["STEPS", "STEP_LABELS", "STEP_REACHES", "LadderPolicy", "LadderScheduler", "steps_taken"]

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


async def steps_taken(session: AsyncSession, clock_id: int) -> set[str]:
    return await shared_ladder.steps_taken(session, LadderStep, clock_id)


def _new_step(clock: TaskClock, step: str) -> SQLModel:
    assert clock.id is not None and clock.next_step_at is not None
    return LadderStep(
        clock_id=clock.id,
        task_id=clock.task_id,
        case_id=clock.case_id,
        step=step,
        due_at=clock.due_at,
        at=clock.next_step_at,
        notified=STEP_REACHES[step],
    )


async def _on_step(session: AsyncSession, clock: TaskClock, step: str, now: datetime) -> None:
    await record_audited(
        session,
        LadderStepReached(
            case_id=clock.case_id,
            actor="scheduler",
            task_id=clock.task_id,
            clock=clock.name,
            step=OverdueStep(step),
            team_code=clock.team_code,
            due_at=clock.due_at,
        ),
        action=f"ladder_{step}",
        reason=f"{clock.label}：{STEP_LABELS[step]}，送达{STEP_REACHES[step]}",
        detail={"task_id": clock.task_id, "clock": clock.name, "due_at": clock.due_at.isoformat()},
        at=now,
    )
    count_ladder_step(step=step)


def task_ladder(policy: LadderPolicy) -> Ladder[TaskClock]:
    return Ladder(
        name="verification",
        clock_table=TaskClock,
        step_table=LadderStep,
        policy=policy,
        new_step=_new_step,
        on_step=_on_step,
    )


class LadderScheduler(shared_ladder.LadderScheduler[TaskClock]):
    """The scheduler of the tasks' clocks, against the service's clock."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        policy: LadderPolicy,
        now: Callable[[], datetime],
        interval_seconds: float,
        lock_rows: bool,
    ) -> None:
        super().__init__(
            session_factory=session_factory,
            ladder=task_ladder(policy),
            now=now,
            interval_seconds=interval_seconds,
            lock_rows=lock_rows,
        )
