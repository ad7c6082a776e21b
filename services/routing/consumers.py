"""Routing's event handlers: a new matter is routed; a returned or reopened one is routed again."""

from __future__ import annotations

from functools import partial

from sqlmodel.ext.asyncio.session import AsyncSession

from services.routing import assignments
from services.routing.context import RoutingContext
from services.routing.models import RoutedCase
from shared.bus import Subscription, batched_writes
from shared.events import (
    CaseClosed,
    CaseConcluded,
    CaseReopened,
    ComplaintReceived,
    MatterReclassified,
    SuggestionReceived,
    SuggestionReceivedV2,
    TaskReturned,
)


@batched_writes
async def on_complaint_received(
    *, session: AsyncSession, event: ComplaintReceived, ctx: RoutingContext
) -> None:
    await assignments.receive_complaint(session=session, ctx=ctx, event=event)


@batched_writes
async def on_suggestion_received(
    *, session: AsyncSession, event: SuggestionReceived, ctx: RoutingContext
) -> None:
    await assignments.receive_suggestion(session=session, ctx=ctx, event=event)


async def on_task_returned(*, session: AsyncSession, event: TaskReturned, ctx: RoutingContext) -> None:
    await assignments.return_task(session=session, ctx=ctx, event=event)


async def on_case_reopened(*, session: AsyncSession, event: CaseReopened, ctx: RoutingContext) -> None:
    await assignments.reopen_case(session=session, ctx=ctx, event=event)


async def on_case_concluded(*, session: AsyncSession, event: CaseConcluded, ctx: RoutingContext) -> None:
    await assignments.close_assignments(session=session, case_id=event.case_id)


async def on_case_closed(*, session: AsyncSession, event: CaseClosed, ctx: RoutingContext) -> None:
    await assignments.close_case(session=session, case_id=event.case_id)


async def on_matter_reclassified(
    *, session: AsyncSession, event: MatterReclassified, ctx: RoutingContext
) -> None:
    # The matter leaves this track (refiled under a new case id, or passed outside): closed here.
    await assignments.close_case(session=session, case_id=event.case_id)


def subscriptions(ctx: RoutingContext) -> list[Subscription]:
    return [
        Subscription(
            durable="routing-intake",
            handlers={
                ComplaintReceived: partial(on_complaint_received, ctx=ctx),
                SuggestionReceived: partial(on_suggestion_received, ctx=ctx),
                SuggestionReceivedV2: partial(on_suggestion_received, ctx=ctx),
                MatterReclassified: partial(on_matter_reclassified, ctx=ctx),
            },
            prefetch_by_case=(RoutedCase,),
        ),
        Subscription(
            durable="routing-progress",
            handlers={
                TaskReturned: partial(on_task_returned, ctx=ctx),
                CaseReopened: partial(on_case_reopened, ctx=ctx),
                CaseConcluded: partial(on_case_concluded, ctx=ctx),
                CaseClosed: partial(on_case_closed, ctx=ctx),
            },
        ),
    ]
