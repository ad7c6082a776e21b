"""Verification learns of matters and assignments from the bus."""

from __future__ import annotations

from functools import partial

from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification import early_warning, figures, matter_rows, open_figures, tasks
from services.verification.context import VerificationContext
from services.verification.models import MatterSnapshot, Task, WithdrawnMatter
from shared.bus import Subscription, batched_writes
from shared.events import (
    AcceptanceNoticeDelivered,
    CaseAssigned,
    ComplaintReceived,
    LadderStepReached,
    MatterReclassified,
    RatingRecorded,
    SuggestionReceived,
    SuggestionReceivedV2,
)


@batched_writes
async def on_complaint_received(
    *, session: AsyncSession, event: ComplaintReceived, ctx: VerificationContext
) -> None:
    if event.linked_repeat:
        await tasks.record_repeat_call(session=session, event=event)
    else:
        await tasks.snapshot_complaint(session=session, event=event, ctx=ctx)


@batched_writes
async def on_suggestion_received(
    *, session: AsyncSession, event: SuggestionReceived, ctx: VerificationContext
) -> None:
    await tasks.snapshot_suggestion(session=session, event=event, ctx=ctx)


@batched_writes
async def on_case_assigned(*, session: AsyncSession, event: CaseAssigned, ctx: VerificationContext) -> None:
    await tasks.task_from_assignment(session=session, event=event, ctx=ctx)


async def on_matter_reclassified(*, session: AsyncSession, event: MatterReclassified) -> None:
    await tasks.withdraw_tasks(
        session=session, case_id=event.case_id, actor=event.actor or "intake", note=event.reason
    )


async def on_complaint_counted(*, session: AsyncSession, event: ComplaintReceived) -> None:
    """Early warning: the complaint counts against its officers and unit (reads other matters)."""
    await early_warning.count_complaint(session=session, event=event)


async def on_rating_recorded(
    *, session: AsyncSession, event: RatingRecorded, ctx: VerificationContext
) -> None:
    await figures.record_rating(session=session, event=event, ctx=ctx)


async def on_ladder_step_reached(*, session: AsyncSession, event: LadderStepReached) -> None:
    """The dashboard's open tasks: the task's worst overdue step; the ledger's filter by step (a
    transaction of its own)."""
    await open_figures.step_taken(
        session=session, case_id=event.case_id, task_id=event.task_id, step=event.step
    )
    matter_rows.note(session.sync_session, [event.case_id])


async def on_acceptance_notice_delivered(*, session: AsyncSession, event: AcceptanceNoticeDelivered) -> None:
    await tasks.stop_acceptance_clocks(session=session, case_id=event.case_id, at=event.delivered_at)


def subscriptions(ctx: VerificationContext) -> list[Subscription]:
    return [
        Subscription(
            durable="verification-matters",
            handlers={
                ComplaintReceived: partial(on_complaint_received, ctx=ctx),
                SuggestionReceived: partial(on_suggestion_received, ctx=ctx),
                SuggestionReceivedV2: partial(on_suggestion_received, ctx=ctx),
            },
            prefetch_by_case=(MatterSnapshot, col(Task.case_id)),
            # A snapshot counts the matter for its latest task's team, and an assignment moves the
            # count when it finds the snapshot: each must see the other's rows if it came first.
            serialise_by_case=True,
        ),
        Subscription(
            durable="verification-assignments",
            handlers={
                CaseAssigned: partial(on_case_assigned, ctx=ctx),
                MatterReclassified: on_matter_reclassified,
                AcceptanceNoticeDelivered: on_acceptance_notice_delivered,
            },
            prefetch_by_case=(WithdrawnMatter, MatterSnapshot, col(Task.case_id)),
            serialise_by_case=True,
        ),
        # Early warning, the ratings behind satisfaction and the overdue steps behind the open tasks:
        # not batched, they read across matters or lock the task.
        Subscription(
            durable="verification-figures",
            handlers={
                ComplaintReceived: on_complaint_counted,
                RatingRecorded: partial(on_rating_recorded, ctx=ctx),
                LadderStepReached: on_ladder_step_reached,
            },
            # The matters' locks before any row: an overdue step upserts the open tasks' figures and
            # its commit refreshes the matter's kept rows under the matter's lock, while a finding
            # takes that lock first and then the same figures (a deadlock on PostgreSQL, CI).
            serialise_by_case=True,
        ),
    ]
