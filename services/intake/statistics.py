"""Figures for the supervisors' dashboard that only intake can give: which complaints repeat."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import case, func
from sqlalchemy import select as sa_select
from sqlalchemy.orm import aliased
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.models import CaseStatus, Complaint
from shared.db import utcnow
from shared.planner import without_jit


async def repeat_statistics(*, session: AsyncSession, weeks: int) -> dict[str, object]:
    """Complaints received and repeat complaints over the last ``weeks``, per county and per team.

    A linked repeat (重复件) is a repeat call about an open matter, not a new matter: it counts in
    ``repeats`` and ``repeat_calls`` but not in ``received``, for the team of the matter it repeats.
    Counted in SQL per (county, team): a year at a million complaints is a few hundred thousand rows,
    read from the ``ix_intake_complaint_figures`` index alone (it holds every column counted; on
    PostgreSQL only where vacuum has marked the table's pages all-visible, else each row's page is
    read as well, 40,000 of them for 12 weeks at a million complaints).
    """
    since = utcnow() - timedelta(weeks=weeks)
    linked = col(Complaint.linked_repeat)
    original = aliased(Complaint)
    # The repeated matter's team is looked up for the linked repeats alone (a few in a hundred),
    # by its primary key.  As an outer join, PostgreSQL hashed every complaint ever received to
    # find them: 95,000 pages read per request at a million complaints, three quarters of its time.
    repeated_team = (
        sa_select(col(original.assigned_team_code))
        .where(col(original.id) == Complaint.repeat_of)
        .scalar_subquery()
    )
    team = case(
        (linked, func.coalesce(repeated_team, Complaint.assigned_team_code)),
        else_=col(Complaint.assigned_team_code),
    )
    each = (
        sa_select(
            col(Complaint.county_code).label("county_code"),
            team.label("team_code"),
            case((linked, 0), else_=1).label("received"),
            case((col(Complaint.repeat_of).is_not(None), 1), else_=0).label("repeats"),
            case((linked, 1), else_=0).label("repeat_calls"),
        )
        .where(col(Complaint.received_at) >= since, col(Complaint.status) != CaseStatus.RECLASSIFIED)
        # Planned apart (OFFSET 0 keeps PostgreSQL from merging it into the sums): grouped by the
        # lookup's expression, PostgreSQL judged the groups by the repeated matters' ids (53,000
        # instead of 33) and sorted the period's rows on disk instead of hashing a few groups.
        .offset(0)
        .subquery()
    )
    connection = await session.connection()
    await without_jit(connection)
    rows = await connection.execute(
        sa_select(
            each.c.county_code,
            each.c.team_code,
            func.sum(each.c.received),
            func.sum(each.c.repeats),
            func.sum(each.c.repeat_calls),
        )
        # Team first: grouped by county first, SQLite walked the whole county_code index (every
        # complaint ever received) to skip a sort of the groups, instead of the period's range.
        .group_by(each.c.team_code, each.c.county_code)
    )
    by_county: dict[str, dict[str, int]] = {}
    by_team: dict[str, dict[str, int]] = {}
    for county_code, team_code, received, repeats, repeat_calls in rows:
        for table, key in ((by_county, county_code), (by_team, team_code or "unassigned")):
            counts = table.setdefault(key, {"received": 0, "repeats": 0, "repeat_calls": 0})
            counts["received"] += int(received or 0)
            counts["repeats"] += int(repeats or 0)
            counts["repeat_calls"] += int(repeat_calls or 0)
    return {"since": since.isoformat(), "weeks": weeks, "by_county": by_county, "by_team": by_team}
