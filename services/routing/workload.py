"""The teams' workload: open assignments per team and when each was last given work."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from services.routing.models import Assignment, Team
from shared.db import built_once
from shared.slice_rows import insert_later_rows


class WorkloadNeeded(Exception):
    pass


class _NotFetched(Mapping[str, tuple[int, float]]):
    """Stands in for the workload until a decision actually looks at it."""

    def __getitem__(self, key: str) -> tuple[int, float]:
        raise WorkloadNeeded

    def get(self, key: str, default: Any = None) -> Any:
        raise WorkloadNeeded

    def __iter__(self) -> Iterator[str]:
        raise WorkloadNeeded

    def __len__(self) -> int:
        raise WorkloadNeeded


NOT_FETCHED = _NotFetched()


@built_once
def _open_work_query() -> Select[str, int]:
    return (
        select(Assignment.team_code, func.count()).where(col(Assignment.open)).group_by(Assignment.team_code)
    )


@built_once
def _rotation_query() -> Select[str, datetime] | Select[str, None]:
    return select(Team.code, Team.last_assigned_at)


async def workload(*, session: AsyncSession) -> dict[str, tuple[int, float]]:
    # Counts every team's open work, so the other matters' assignments of the slice must be in,
    # those the slice keeps for its flush too (``add_later``).
    await insert_later_rows(session)
    counts = dict((await session.exec(_open_work_query())).all())
    result: dict[str, tuple[int, float]] = {}
    # Columns, not rows: route() moves last_assigned_at with an UPDATE that leaves loaded Team
    # rows as they were, so a row from the identity map could be stale within the transaction.
    for code, last_assigned_at in await session.exec(_rotation_query()):
        last = last_assigned_at.timestamp() if last_assigned_at else 0.0
        result[code] = (int(counts.get(code, 0)), last)
    return result
