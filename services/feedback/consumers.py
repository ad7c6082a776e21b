"""Feedback follows every step of a matter, in stream order, through one durable consumer."""

from __future__ import annotations

from functools import partial

from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import feedback_clocks, notifications, projection
from services.feedback.context import FeedbackContext
from services.feedback.models import CaseView
from shared.bus import Subscription, batched_writes
from shared.events import (
    AnswerDelivered,
    CaseAssigned,
    CaseClosed,
    CaseConcluded,
    CaseReopened,
    ComplaintReceived,
    DeadlineExtended,
    EarlyWarningRaised,
    FindingSentBack,
    LadderStepReached,
    MatterReclassified,
    RatingRecorded,
    ReviewStarted,
    SuggestionReceived,
    SuggestionReceivedV2,
    TaskClaimed,
)


@batched_writes
async def on_complaint_received(*, session: AsyncSession, event: ComplaintReceived) -> None:
    await projection.open_complaint(session=session, event=event)


@batched_writes
async def on_suggestion_received(*, session: AsyncSession, event: SuggestionReceived) -> None:
    await projection.open_suggestion(session=session, event=event)


@batched_writes
async def on_case_assigned(*, session: AsyncSession, event: CaseAssigned, ctx: FeedbackContext) -> None:
    await projection.assign(session=session, event=event)
    if event.needs_supervisor:
        await notifications.needs_supervisor(session=session, event=event, calendar=ctx.calendar)


async def on_task_claimed(*, session: AsyncSession, event: TaskClaimed, ctx: FeedbackContext) -> None:
    await projection.start_verifying(session=session, event=event)
    await feedback_clocks.on_task_claimed(session=session, ctx=ctx, event=event)


async def on_review_started(*, session: AsyncSession, event: ReviewStarted) -> None:
    await projection.start_review(session=session, event=event)


async def on_finding_sent_back(*, session: AsyncSession, event: FindingSentBack) -> None:
    await projection.send_back(session=session, event=event)


async def on_matter_reclassified(*, session: AsyncSession, event: MatterReclassified) -> None:
    await projection.reclassify(session=session, event=event)


async def on_case_concluded(*, session: AsyncSession, event: CaseConcluded, ctx: FeedbackContext) -> None:
    await projection.conclude(session=session, event=event, ctx=ctx)
    await feedback_clocks.on_answer_drafted(session=session, ctx=ctx, event=event)
    await notifications.close_items(
        session=session,
        case_id=event.case_id,
        kinds=notifications.LADDER_ITEM_KINDS,
        by=event.actor or "verification",
        at=event.occurred_at,
    )


async def on_ladder_step(*, session: AsyncSession, event: LadderStepReached, ctx: FeedbackContext) -> None:
    await notifications.ladder_step(session=session, ctx=ctx, event=event)
    await feedback_clocks.on_ladder_step(session=session, ctx=ctx, event=event)


async def on_early_warning(*, session: AsyncSession, event: EarlyWarningRaised, ctx: FeedbackContext) -> None:
    await notifications.early_warning(session=session, event=event, calendar=ctx.calendar)


async def on_deadline_extended(
    *, session: AsyncSession, event: DeadlineExtended, ctx: FeedbackContext
) -> None:
    await projection.extend_deadline(session=session, event=event, ctx=ctx)


def subscriptions(ctx: FeedbackContext) -> list[Subscription]:
    return [
        Subscription(
            durable="feedback-progress",
            handlers={
                ComplaintReceived: on_complaint_received,
                SuggestionReceived: on_suggestion_received,
                SuggestionReceivedV2: on_suggestion_received,
                CaseAssigned: partial(on_case_assigned, ctx=ctx),
                TaskClaimed: partial(on_task_claimed, ctx=ctx),
                AnswerDelivered: partial(feedback_clocks.on_answer_delivered, ctx=ctx),
                RatingRecorded: feedback_clocks.on_matter_moved_on,
                CaseReopened: feedback_clocks.on_matter_moved_on,
                CaseClosed: feedback_clocks.on_matter_moved_on,
                ReviewStarted: on_review_started,
                FindingSentBack: on_finding_sent_back,
                CaseConcluded: partial(on_case_concluded, ctx=ctx),
                DeadlineExtended: partial(on_deadline_extended, ctx=ctx),
                MatterReclassified: on_matter_reclassified,
                LadderStepReached: partial(on_ladder_step, ctx=ctx),
                EarlyWarningRaised: partial(on_early_warning, ctx=ctx),
            },
            prefetch_by_case=(CaseView,),
        )
    ]
