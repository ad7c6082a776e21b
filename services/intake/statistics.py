"""Figures for the supervisors' dashboard that only intake can give: which complaints repeat."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.models import CaseStatus, Complaint
from shared.db import utcnow


async def repeat_statistics(*, session: AsyncSession, weeks: int) -> dict[str, object]:
    """Complaints received and repeat complaints over the last ``weeks``, per county and per team."""
    since = utcnow() - timedelta(weeks=weeks)
    rows = await session.exec(
        select(Complaint.county_code, Complaint.assigned_team_code, Complaint.repeat_of).where(
            Complaint.received_at >= since, Complaint.status != CaseStatus.RECLASSIFIED
        )
    )
    by_county: dict[str, dict[str, int]] = {}
    by_team: dict[str, dict[str, int]] = {}
    for county_code, team_code, repeat_of in rows:
        for table, key in ((by_county, county_code), (by_team, team_code or "unassigned")):
            counts = table.setdefault(key, {"received": 0, "repeats": 0})
            counts["received"] += 1
            counts["repeats"] += 1 if repeat_of else 0
    return {"since": since.isoformat(), "weeks": weeks, "by_county": by_county, "by_team": by_team}
