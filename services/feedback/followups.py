"""The follow-up call (回访): the operators' list of calls due and what a call came to.

A call's outcome has the effect the complainant's own would have: a rating goes through
``ratings.rate`` (source operator), a review request (复查) through ``ratings.request_review``.
A call nobody answered is counted; after the configured number of tries (deadlines.json,
``later_clocks.follow_up.max_attempts``) the follow-up ends with a note.  The list never shows
the person's contact: the operator calls through intake's identity page, where the read is logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import notifications, ratings
from services.feedback.answers import current_answer
from services.feedback.cases import case_for_update
from services.feedback.clocks import ClockName, running_clock, stop_clocks
from services.feedback.context import FeedbackContext
from services.feedback.models import CaseStatus, CaseView, FeedbackClock, NotificationKind, Source
from shared.audit import audit
from shared.auth import Principal
from shared.db import utcnow
from shared.errors import conflict
from shared.ladder import RUNNING
from shared.pagination import Key, Page
from shared.states import Rating

RATING_OUTCOMES = {
    "satisfied": Rating.SATISFIED,
    "basically_satisfied": Rating.BASICALLY_SATISFIED,
    "unsatisfied": Rating.UNSATISFIED,
}


@dataclass(frozen=True)
class DueCall:
    clock: FeedbackClock
    case: CaseView


@dataclass(frozen=True)
class CallResult:
    case: CaseView
    message: str
    attempts: int
    closed: bool


async def due_calls(*, session: AsyncSession, page: Page) -> list[DueCall]:
    """Every 回访 not yet done, the longest waiting first, a page by keyset (due_at, id), with the total."""
    query = (
        select(FeedbackClock, CaseView)
        .join(CaseView, col(CaseView.case_id) == col(FeedbackClock.case_id))
        .where(FeedbackClock.name == ClockName.FOLLOW_UP, FeedbackClock.status == RUNNING)
    )
    keys = (Key(col(FeedbackClock.due_at)), Key(col(FeedbackClock.id)))
    return [DueCall(clock=clock, case=case) for clock, case in await page.rows(session, query, keys)]


async def _answered_case(session: AsyncSession, case_id: str) -> CaseView:
    """The matter, locked; refused (nothing changes) unless its answer is out and not yet rated."""
    case = await case_for_update(session=session, case_id=case_id)
    answer = await current_answer(session=session, case=case) if case.status == CaseStatus.ANSWERED else None
    if answer is None:
        raise conflict("case_id", "本件尚未答复，不能登记回访结果", "the matter has not been answered")
    return case


async def _finish(session: AsyncSession, *, case: CaseView, note: str, actor: str, at: datetime) -> None:
    await stop_clocks(session, case_id=case.case_id, names=(ClockName.FOLLOW_UP,), at=at, note=note)
    await notifications.close_items(
        session=session, case_id=case.case_id, kinds=(NotificationKind.FOLLOW_UP_DUE,), by=actor, at=at
    )


async def _unreachable(
    session: AsyncSession, *, ctx: FeedbackContext, case: CaseView, actor: str, at: datetime
) -> CallResult:
    clock = await running_clock(session, case_id=case.case_id, name=ClockName.FOLLOW_UP)
    if clock is None:
        raise conflict("case_id", "本件没有待办的回访", "no follow-up call is due for this matter")
    clock.attempts += 1
    session.add(clock)
    closed = clock.attempts >= ctx.follow_up_max_attempts
    await audit(
        session,
        case_id=case.case_id,
        action="follow_up_unreachable",
        actor=actor,
        detail={"attempts": clock.attempts, "max_attempts": ctx.follow_up_max_attempts},
    )
    if closed:
        note = f"回访{clock.attempts}次未接通，回访结束"
        await _finish(session, case=case, note=note, actor=actor, at=at)
        return CallResult(case=case, message=note, attempts=clock.attempts, closed=True)
    message = f"已记录第{clock.attempts}次未接通（共可尝试{ctx.follow_up_max_attempts}次）"
    return CallResult(case=case, message=message, attempts=clock.attempts, closed=False)


async def record_outcome(
    *,
    session: AsyncSession,
    ctx: FeedbackContext,
    case_id: str,
    outcome: str,
    reason: str | None,
    operator: Principal,
    correlation_id: str | None,
) -> CallResult:
    """Record what a 回访 call came to; a matter not (or no longer) awaiting a rating is refused."""
    case = await _answered_case(session, case_id)
    now = utcnow()
    if outcome == "unreachable":
        return await _unreachable(session, ctx=ctx, case=case, actor=operator.username, at=now)
    if outcome == "review":
        assert reason is not None
        case = await ratings.request_review(
            session=session,
            ctx=ctx,
            case=case,
            reason=reason,
            source=Source.OPERATOR,
            actor=operator.username,
            correlation_id=correlation_id,
        )
        message = ratings.review_message(case)
    else:
        case = await ratings.rate(
            session=session,
            ctx=ctx,
            case=case,
            rating=RATING_OUTCOMES[outcome],
            reason=reason,
            source=Source.OPERATOR,
            rater=operator,
            correlation_id=correlation_id,
        )
        message = ratings.rating_message(case)
    await _finish(session, case=case, note="已回访", actor=operator.username, at=now)
    return CallResult(case=case, message=message, attempts=0, closed=True)
