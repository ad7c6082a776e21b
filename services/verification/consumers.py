"""Verification learns of matters and assignments from the bus."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification import service
from shared.bus import Subscription
from shared.events import CaseAssigned, ComplaintReceived, MatterReclassified, SuggestionReceived


async def on_complaint_received(*, session: AsyncSession, event: ComplaintReceived) -> None:
    await service.snapshot_complaint(session=session, event=event)


async def on_suggestion_received(*, session: AsyncSession, event: SuggestionReceived) -> None:
    await service.snapshot_suggestion(session=session, event=event)


async def on_case_assigned(*, session: AsyncSession, event: CaseAssigned) -> None:
    await service.task_from_assignment(session=session, event=event)


async def on_matter_reclassified(*, session: AsyncSession, event: MatterReclassified) -> None:
    await service.withdraw_tasks(
        session=session, case_id=event.case_id, actor=event.actor or "intake", note=event.reason
    )


SUBSCRIPTIONS = [
    Subscription(
        durable="verification-matters",
        handlers={ComplaintReceived: on_complaint_received, SuggestionReceived: on_suggestion_received},
    ),
    Subscription(
        durable="verification-assignments",
        handlers={CaseAssigned: on_case_assigned, MatterReclassified: on_matter_reclassified},
    ),
]
