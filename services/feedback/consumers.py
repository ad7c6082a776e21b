"""Feedback follows every step of a matter, in stream order, through one durable consumer."""

from __future__ import annotations

from functools import partial

from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import projection
from services.feedback.context import FeedbackContext
from services.feedback.models import CaseView
from shared.bus import Subscription, batched_writes
from shared.events import (
    CaseAssigned,
    CaseConcluded,
    ComplaintReceived,
    DeadlineExtended,
    FindingSentBack,
    MatterReclassified,
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
async def on_case_assigned(*, session: AsyncSession, event: CaseAssigned) -> None:
    await projection.assign(session=session, event=event)


async def on_task_claimed(*, session: AsyncSession, event: TaskClaimed) -> None:
    await projection.start_verifying(session=session, event=event)


async def on_review_started(*, session: AsyncSession, event: ReviewStarted) -> None:
    await projection.start_review(session=session, event=event)


async def on_finding_sent_back(*, session: AsyncSession, event: FindingSentBack) -> None:
    await projection.send_back(session=session, event=event)


async def on_matter_reclassified(*, session: AsyncSession, event: MatterReclassified) -> None:
    await projection.reclassify(session=session, event=event)


async def on_case_concluded(*, session: AsyncSession, event: CaseConcluded, ctx: FeedbackContext) -> None:
    await projection.conclude(session=session, event=event, ctx=ctx)


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
                CaseAssigned: on_case_assigned,
                TaskClaimed: on_task_claimed,
                ReviewStarted: on_review_started,
                FindingSentBack: on_finding_sent_back,
                CaseConcluded: partial(on_case_concluded, ctx=ctx),
                DeadlineExtended: partial(on_deadline_extended, ctx=ctx),
                MatterReclassified: on_matter_reclassified,
            },
            prefetch_by_case=(CaseView,),
        )
    ]
