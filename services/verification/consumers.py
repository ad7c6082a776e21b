"""Verification learns of matters and assignments from the bus."""

from __future__ import annotations

from functools import partial

from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification import tasks
from services.verification.context import VerificationContext
from services.verification.models import MatterSnapshot, WithdrawnMatter
from shared.bus import Subscription, batched_writes
from shared.events import (
    CaseAssigned,
    ComplaintReceived,
    MatterReclassified,
    SuggestionReceived,
    SuggestionReceivedV2,
)


@batched_writes
async def on_complaint_received(*, session: AsyncSession, event: ComplaintReceived) -> None:
    await tasks.snapshot_complaint(session=session, event=event)


@batched_writes
async def on_suggestion_received(*, session: AsyncSession, event: SuggestionReceived) -> None:
    await tasks.snapshot_suggestion(session=session, event=event)


@batched_writes
async def on_case_assigned(*, session: AsyncSession, event: CaseAssigned, ctx: VerificationContext) -> None:
    await tasks.task_from_assignment(session=session, event=event, ctx=ctx)


async def on_matter_reclassified(*, session: AsyncSession, event: MatterReclassified) -> None:
    await tasks.withdraw_tasks(
        session=session, case_id=event.case_id, actor=event.actor or "intake", note=event.reason
    )


def subscriptions(ctx: VerificationContext) -> list[Subscription]:
    return [
        Subscription(
            durable="verification-matters",
            handlers={
                ComplaintReceived: on_complaint_received,
                SuggestionReceived: on_suggestion_received,
                SuggestionReceivedV2: on_suggestion_received,
            },
            prefetch_by_case=(MatterSnapshot,),
        ),
        Subscription(
            durable="verification-assignments",
            handlers={
                CaseAssigned: partial(on_case_assigned, ctx=ctx),
                MatterReclassified: on_matter_reclassified,
            },
            prefetch_by_case=(WithdrawnMatter,),
        ),
    ]
