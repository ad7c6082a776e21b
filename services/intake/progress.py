"""Each matter's progress, as the other services report it, so operators see where it stands
and repeats are judged on the complainant's last rating.

Called from the event handlers in ``consumers.py``, inside the consumer's transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Update, bindparam, case
from sqlmodel import update
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.models import CaseStatus, Complaint, Suggestion
from shared.db import built_once, table_of
from shared.slice_rows import loaded_row
from shared.states import CaseKind


async def _matter(session: AsyncSession, case_id: str) -> Complaint | Suggestion | None:
    matter: Complaint | Suggestion | None = await session.get(Complaint, case_id)
    if matter is None:
        matter = await session.get(Suggestion, case_id)
    # A reclassified matter has left this track; late news about it changes nothing.
    return None if matter is None or matter.status == CaseStatus.RECLASSIFIED else matter


async def record_assignment(*, session: AsyncSession, case_kind: str, case_id: str, team_code: str) -> None:
    # Every matter is assigned at least once: one UPDATE instead of loading the whole record.
    model: type[Complaint] | type[Suggestion] = Complaint if case_kind == CaseKind.COMPLAINT else Suggestion
    loaded = loaded_row(session, model, case_id)
    if loaded is not None:
        # An earlier event of the slice loaded it (and the slice flushed it before this event):
        # the Core UPDATE below leaves loaded rows alone, so read this one afresh afterwards.
        session.expire(loaded)
    await session.exec(_assignment_update(model), params={"case_id": case_id, "team_code": team_code})


@built_once
def _assignment_update(model: type[Complaint] | type[Suggestion]) -> Update:
    # A Core statement on the table: the ORM's version costs several times the CPU, trying to
    # evaluate the CASE against the loaded rows.
    table = table_of(model)
    return (
        update(table)
        .where(table.c.id == bindparam("case_id"), table.c.status != CaseStatus.RECLASSIFIED)
        .values(
            assigned_team_code=bindparam("team_code"),
            status=case(
                # ``.value``: SQLAlchemy gives a bare enum member here no type (NullType), a str a String.
                (table.c.status.in_((CaseStatus.RECEIVED, CaseStatus.REOPENED)), CaseStatus.ROUTED.value),
                else_=table.c.status,
            ),
        )
    )


async def record_conclusion(*, session: AsyncSession, case_id: str) -> None:
    matter = await _matter(session, case_id)
    if matter is not None and matter.status not in (CaseStatus.ANSWERED, CaseStatus.CLOSED):
        matter.status = CaseStatus.CONCLUDED
        session.add(matter)


async def record_answer_delivered(*, session: AsyncSession, case_id: str, delivered_at: datetime) -> None:
    matter = await _matter(session, case_id)
    if matter is None or matter.status in (CaseStatus.REOPENED, CaseStatus.CLOSED):
        # A late delivery report must not undo a reopening or a closure that came after it.
        return
    matter.status = CaseStatus.ANSWERED
    if isinstance(matter, Complaint):
        matter.answered_at = delivered_at
    session.add(matter)


async def record_rating(*, session: AsyncSession, case_id: str, rating: str) -> None:
    complaint = await session.get(Complaint, case_id)
    if complaint is not None:
        complaint.last_rating = rating
        session.add(complaint)


async def record_reopening(*, session: AsyncSession, case_id: str) -> None:
    matter = await _matter(session, case_id)
    if matter is not None:
        matter.status = CaseStatus.REOPENED
        session.add(matter)


async def record_closure(*, session: AsyncSession, case_id: str) -> None:
    matter = await _matter(session, case_id)
    if matter is not None:
        matter.status = CaseStatus.CLOSED
        session.add(matter)
