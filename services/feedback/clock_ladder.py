"""The ladder of feedback's own clocks: each step reaches the people the clock names, once.

Answer approval: the supervisors (``approval_due``) at every step.  The follow-up call (回访):
the operators (``follow_up_due``) when it starts and at every step.  The notification's
``dedupe_key`` is ``clock:<clock id>:<step>``, so a step taken twice notifies once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import notifications
from services.feedback.cases import local_date
from services.feedback.clocks import STEP_LABELS, ClockName, clock_policy
from services.feedback.context import FeedbackContext
from services.feedback.models import CaseView, FeedbackClock, FeedbackClockStep, NotificationKind
from shared.audit import audit
from shared.ladder import CHASE, DUE_TODAY, ESCALATION, REMINDER, Ladder, LadderScheduler

# Who each clock reaches, what kind of item it is and where it is handled.
CLOCK_NOTICES: dict[str, tuple[NotificationKind, str, str]] = {
    ClockName.ANSWER_APPROVAL: (
        NotificationKind.APPROVAL_DUE,
        notifications.SUPERVISORS,
        "verification:/approvals",
    ),
    ClockName.FOLLOW_UP: (NotificationKind.FOLLOW_UP_DUE, notifications.OPERATORS, "feedback:/follow-ups"),
}


def step_title(*, clock: FeedbackClock, step: str, tracking_code: str, due_text: str) -> str:
    """``【逾期催办】ZK… 回访（2026年11月20日到期）``: the tracking code, never the complainant."""
    if step == DUE_TODAY:
        state = f"今日（{due_text}）到期"
    elif step in (CHASE, ESCALATION):
        state = f"已逾期（{due_text}到期）"
    else:
        state = f"待办理，{due_text}到期"
    return f"【{STEP_LABELS.get(step, '提醒')}】{tracking_code} {clock.label}{state}"


def _new_step(clock: FeedbackClock, step: str) -> SQLModel:
    assert clock.id is not None and clock.next_step_at is not None
    return FeedbackClockStep(
        clock_id=clock.id, case_id=clock.case_id, step=step, due_at=clock.due_at, at=clock.next_step_at
    )


def feedback_ladder(ctx: FeedbackContext) -> Ladder[FeedbackClock]:
    async def on_step(session: AsyncSession, clock: FeedbackClock, step: str, now: datetime) -> None:
        case = await session.get(CaseView, clock.case_id)
        tracking_code = case.tracking_code if case is not None else ""
        kind, audience, link = CLOCK_NOTICES[clock.name]
        await notifications.notify(
            session=session,
            kind=kind,
            audiences=[audience],
            dedupe_key=f"clock:{clock.id}:{step}",
            case_id=clock.case_id,
            title=step_title(
                clock=clock, step=step, tracking_code=tracking_code, due_text=local_date(clock.due_at, ctx)
            ),
            link=link,
            due_at=clock.due_at,
            at=now,
            calendar=ctx.calendar,
            tracking_code=tracking_code or None,
            county_code=case.county_code if case is not None else None,
            team_code=case.team_code if case is not None else None,
            # The first rung is the inbox item; a message (SMS, e-mail) goes out from the due day on.
            send_message=step != REMINDER,
        )
        await audit(
            session,
            case_id=clock.case_id,
            action=f"clock_{step}",
            actor="scheduler",
            reason=f"{clock.label}：{STEP_LABELS[step]}",
            detail={"clock": clock.name, "due_at": clock.due_at.isoformat()},
            at=now,
        )

    return Ladder(
        name="feedback",
        clock_table=FeedbackClock,
        step_table=FeedbackClockStep,
        policy=clock_policy(ctx),
        new_step=_new_step,
        on_step=on_step,
    )


def clock_scheduler(
    *,
    ctx: FeedbackContext,
    session_factory: async_sessionmaker[AsyncSession],
    now: Callable[[], datetime],
    interval_seconds: float,
    lock_rows: bool,
) -> LadderScheduler[FeedbackClock]:
    return LadderScheduler(
        session_factory=session_factory,
        ladder=feedback_ladder(ctx),
        now=now,
        interval_seconds=interval_seconds,
        lock_rows=lock_rows,
        name="feedback-clocks",
    )
