"""Intake follows each matter's progress so operators see its status and repeats are judged right.

The handlers only pass the event's facts on to ``progress.py``.
"""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake import progress
from services.intake.context import IntakeContext
from shared.bus import Subscription, batched_writes
from shared.events import (
    AnswerDelivered,
    CaseAssigned,
    CaseClosed,
    CaseConcluded,
    CaseReopened,
    RatingRecorded,
)


@batched_writes
async def on_case_assigned(*, session: AsyncSession, event: CaseAssigned) -> None:
    await progress.record_assignment(
        session=session, case_kind=event.case_kind, case_id=event.case_id, team_code=event.team_code
    )


async def on_case_concluded(*, session: AsyncSession, event: CaseConcluded) -> None:
    await progress.record_conclusion(session=session, case_id=event.case_id)


async def on_answer_delivered(*, session: AsyncSession, event: AnswerDelivered) -> None:
    await progress.record_answer_delivered(
        session=session, case_id=event.case_id, delivered_at=event.delivered_at
    )


async def on_rating_recorded(*, session: AsyncSession, event: RatingRecorded) -> None:
    await progress.record_rating(session=session, case_id=event.case_id, rating=event.rating)


async def on_case_reopened(*, session: AsyncSession, event: CaseReopened) -> None:
    await progress.record_reopening(session=session, case_id=event.case_id)


async def on_case_closed(*, session: AsyncSession, event: CaseClosed) -> None:
    await progress.record_closure(session=session, case_id=event.case_id)


def subscriptions(ctx: IntakeContext) -> list[Subscription]:
    """Intake's durable consumers; the handlers need nothing of ``ctx`` today."""
    return [
        Subscription(
            durable="intake-progress",
            handlers={
                CaseAssigned: on_case_assigned,
                CaseConcluded: on_case_concluded,
                AnswerDelivered: on_answer_delivered,
                RatingRecorded: on_rating_recorded,
                CaseReopened: on_case_reopened,
                CaseClosed: on_case_closed,
            },
        )
    ]
