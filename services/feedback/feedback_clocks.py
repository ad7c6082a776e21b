"""What starts and stops feedback's clocks and the acceptance notice, event by event (the consumers' side).

- ``TaskClaimed``: the named complainant is told the complaint was accepted (告知受理);
- ``LadderStepReached`` of verification's ``acceptance_notice`` clock: the same, at the latest;
- ``CaseConcluded``: the drafted answer waits for a supervisor, on the answer-approval clock;
- ``AnswerDelivered`` (feedback's own): the answer reached a named complainant, the 回访 clock starts;
- ``RatingRecorded``, ``CaseReopened``, ``CaseClosed``: the matter moved on, no call is due any more.
"""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import acceptance, notifications
from services.feedback.cases import known_case
from services.feedback.clocks import ClockName, answer_served, start_clock, stop_clocks
from services.feedback.context import FeedbackContext
from services.feedback.models import Answer, AnswerStatus, NotificationKind
from shared.events import (
    AnswerDelivered,
    CaseClosed,
    CaseConcluded,
    CaseReopened,
    LadderStepReached,
    RatingRecorded,
    TaskClaimed,
)

ACCEPTANCE_CLOCK = "acceptance_notice"


async def on_task_claimed(*, session: AsyncSession, ctx: FeedbackContext, event: TaskClaimed) -> None:
    case = await known_case(session, event.case_id)
    await acceptance.queue_notice(
        session=session, ctx=ctx, case=case, why="核查任务已认领", correlation_id=event.correlation_id
    )


async def on_ladder_step(*, session: AsyncSession, ctx: FeedbackContext, event: LadderStepReached) -> None:
    if event.clock != ACCEPTANCE_CLOCK:
        return
    case = await known_case(session, event.case_id)
    await acceptance.queue_notice(
        session=session, ctx=ctx, case=case, why="告知受理期限临近", correlation_id=event.correlation_id
    )


async def on_answer_drafted(*, session: AsyncSession, ctx: FeedbackContext, event: CaseConcluded) -> None:
    """The draft ``projection.conclude`` added for this conclusion, if any, goes on the approval clock."""
    answer = (await session.exec(select(Answer).where(Answer.source_event_id == event.event_id))).first()
    if answer is None or answer.status != AnswerStatus.PENDING_APPROVAL:
        return
    await start_clock(
        session,
        ctx=ctx,
        case_id=answer.case_id,
        name=ClockName.ANSWER_APPROVAL,
        subject_id=answer.id,
        start=event.occurred_at,
    )


async def on_answer_delivered(*, session: AsyncSession, ctx: FeedbackContext, event: AnswerDelivered) -> None:
    if event.channel == "none":
        return  # nobody to call: an anonymous complainant, a deputy's letter
    case = await known_case(session, event.case_id)
    await answer_served(session, ctx=ctx, case=case, answer_id=event.answer_id, at=event.delivered_at)


async def on_matter_moved_on(
    *, session: AsyncSession, event: RatingRecorded | CaseReopened | CaseClosed
) -> None:
    actor = event.actor or "feedback"
    stopped = await stop_clocks(
        session,
        case_id=event.case_id,
        names=(ClockName.FOLLOW_UP,),
        at=event.occurred_at,
        note="已评价或已结案",
    )
    if stopped:
        await notifications.close_items(
            session=session,
            case_id=event.case_id,
            kinds=(NotificationKind.FOLLOW_UP_DUE,),
            by=actor,
            at=event.occurred_at,
        )
