"""Verification's figures for supervisors and leaders: the dashboard and the 12345 measures."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from services.verification import figures, ledger, measures
from services.verification.context import VerificationContext
from services.verification.measures_schemas import MeasuresOut
from shared.deps import Session, SupervisorOrLeader, app_state
from shared.errors import FieldProblems
from shared.validation import Line

router = APIRouter()

Context = Annotated[VerificationContext, Depends(app_state("verification", VerificationContext))]
# A report over more than this is a query over the whole history: refuse it rather than run it.
MAX_PERIOD_DAYS = 3660
# Dates a bureau can mean; beyond them the period's bounds in UTC would leave the calendar.
EARLIEST, LATEST = date(1990, 1, 1), date(2199, 12, 31)


@router.get("/stats", tags=["statistics"])
async def statistics(
    session: Session,
    ctx: Context,
    principal: SupervisorOrLeader,
    weeks: Annotated[int, Query(ge=1, le=104)] = 12,
    by: Annotated[Literal["county", "team"], Query()] = "county",
) -> dict[str, object]:
    """The dashboard's figures per county or per team over the last ``weeks`` weeks."""
    county = ledger.scoped_county(principal, None)
    return await figures.dashboard(session=session, ctx=ctx, weeks=weeks, by=by, county=county)


@router.get("/measures", response_model=MeasuresOut, tags=["statistics"])
async def get_measures(
    session: Session,
    ctx: Context,
    principal: SupervisorOrLeader,
    start: Annotated[date, Query(description="first day, local date")],
    end: Annotated[date, Query(description="last day, local date, inclusive")],
    by: Annotated[Literal["county", "team"], Query()] = "county",
    county: Annotated[Line | None, Query(max_length=16)] = None,
) -> MeasuresOut:
    """The 12345 measures (响应率, 办结率, …) of the matters received from ``start`` to ``end``,
    per county or per team; a leader sees their own county only."""
    if end < start or (end - start).days > MAX_PERIOD_DAYS or not EARLIEST <= start <= end <= LATEST:
        raise FieldProblems(
            [
                (
                    "end",
                    "统计期间无效：结束日期不能早于开始日期，期间不超过十年，日期在1990年至2199年之间",
                    "end must not be before start, the period at most ten years, the dates within 1990 to 2199",
                )
            ]
        )
    report = await measures.measures(
        session=session,
        ctx=ctx,
        start=start,
        end=end,
        by=by,
        county=ledger.scoped_county(principal, county),
    )
    return MeasuresOut.of(report)
