"""Figures for the supervisors' dashboard that only intake can give: which complaints repeat."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, func
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.models import CaseStatus, Complaint
from shared.db import utcnow


async def repeat_statistics(*, session: AsyncSession, weeks: int) -> dict[str, object]:
    """Complaints received and repeat complaints over the last ``weeks``, per county and per team.

    A linked repeat (重复件) is a repeat call about an open matter, not a new matter: it counts in
    ``repeats`` and ``repeat_calls`` but not in ``received``, for the team of the matter it repeats.
    """
    since = utcnow() - timedelta(weeks=weeks)
    original = aliased(Complaint)
    rows = await session.exec(
        select(
            Complaint.county_code,
            func.coalesce(original.assigned_team_code, Complaint.assigned_team_code),
            Complaint.repeat_of,
            Complaint.linked_repeat,
        )
        .outerjoin(original, and_(col(Complaint.linked_repeat), col(original.id) == Complaint.repeat_of))
        .where(Complaint.received_at >= since, Complaint.status != CaseStatus.RECLASSIFIED)
    )
    by_county: dict[str, dict[str, int]] = {}
    by_team: dict[str, dict[str, int]] = {}
    for county_code, team_code, repeat_of, linked_repeat in rows:
        for table, key in ((by_county, county_code), (by_team, team_code or "unassigned")):
            counts = table.setdefault(key, {"received": 0, "repeats": 0, "repeat_calls": 0})
            counts["received"] += 0 if linked_repeat else 1
            counts["repeats"] += 1 if repeat_of else 0
            counts["repeat_calls"] += 1 if linked_repeat else 0
    return {"since": since.isoformat(), "weeks": weeks, "by_county": by_county, "by_team": by_team}
