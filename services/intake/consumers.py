"""Intake follows each matter's progress so operators see its status and repeats are judged right."""

from __future__ import annotations

from sqlalchemy import Update, bindparam, case
from sqlmodel import update
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.models import Complaint, Suggestion
from shared.bus import Subscription
from shared.db import built_once, loaded_row, table_of
from shared.events import (
    AnswerDelivered,
    CaseAssigned,
    CaseClosed,
    CaseConcluded,
    CaseReopened,
    RatingRecorded,
)


async def _matter(session: AsyncSession, case_id: str) -> Complaint | Suggestion | None:
    matter: Complaint | Suggestion | None = await session.get(Complaint, case_id)
    if matter is None:
        matter = await session.get(Suggestion, case_id)
    # A reclassified matter has left this track; late news about it changes nothing.
    return None if matter is None or matter.status == "reclassified" else matter


async def on_case_assigned(*, session: AsyncSession, event: CaseAssigned) -> None:
    # Every matter is assigned at least once: one UPDATE instead of loading the whole record.
    model: type[Complaint] | type[Suggestion] = Complaint if event.case_kind == "complaint" else Suggestion
    loaded = loaded_row(session, model, event.case_id)
    if loaded is not None:
        # An earlier event of the slice loaded it (and the slice flushed it before this event):
        # the Core UPDATE below leaves loaded rows alone, so read this one afresh afterwards.
        session.expire(loaded)
    await session.exec(
        _assignment_update(model), params={"case_id": event.case_id, "team_code": event.team_code}
    )


@built_once
def _assignment_update(model: type[Complaint] | type[Suggestion]) -> Update:
    # A Core statement on the table: the ORM's version costs several times the CPU, trying to
    # evaluate the CASE against the loaded rows.
    table = table_of(model)
    return (
        update(table)
        .where(table.c.id == bindparam("case_id"), table.c.status != "reclassified")
        .values(
            assigned_team_code=bindparam("team_code"),
            status=case((table.c.status.in_(("received", "reopened")), "routed"), else_=table.c.status),
        )
    )


async def on_case_concluded(*, session: AsyncSession, event: CaseConcluded) -> None:
    matter = await _matter(session, event.case_id)
    if matter is not None and matter.status not in ("answered", "closed"):
        matter.status = "concluded"
        session.add(matter)


async def on_answer_delivered(*, session: AsyncSession, event: AnswerDelivered) -> None:
    matter = await _matter(session, event.case_id)
    if matter is None or matter.status in ("reopened", "closed"):
        # A late delivery report must not undo a reopening or a closure that came after it.
        return
    matter.status = "answered"
    if isinstance(matter, Complaint):
        matter.answered_at = event.delivered_at
    session.add(matter)


async def on_rating_recorded(*, session: AsyncSession, event: RatingRecorded) -> None:
    complaint = await session.get(Complaint, event.case_id)
    if complaint is not None:
        complaint.last_rating = event.rating
        session.add(complaint)


async def on_case_reopened(*, session: AsyncSession, event: CaseReopened) -> None:
    matter = await _matter(session, event.case_id)
    if matter is not None:
        matter.status = "reopened"
        session.add(matter)


async def on_case_closed(*, session: AsyncSession, event: CaseClosed) -> None:
    matter = await _matter(session, event.case_id)
    if matter is not None:
        matter.status = "closed"
        session.add(matter)


SUBSCRIPTIONS = [
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
        batched_writes=frozenset({CaseAssigned}),
    )
]
