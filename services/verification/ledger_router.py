"""Verification's HTTP API for supervisors and leaders: the ledger (台账), early warning and statistics."""

from __future__ import annotations

import os
from datetime import date, datetime, time, timedelta
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse

from services.verification import early_warning, ledger, ledger_export
from services.verification.context import VerificationContext
from services.verification.models import LedgerMarkKind, OverdueStep
from services.verification.schemas import (
    LedgerCloseOffIn,
    LedgerMarkIn,
    LedgerMarkRemoveIn,
    LedgerRow,
    ThresholdsIn,
)
from shared.apidocs import attachment, file_download
from shared.deps import Session, Supervisor, SupervisorOrLeader, app_state
from shared.errors import FieldProblems
from shared.pagination import Page, page_headers, paging
from shared.validation import Line

router = APIRouter()
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

Context = Annotated[VerificationContext, Depends(app_state("verification", VerificationContext))]


async def ledger_filters(
    ctx: Context,
    principal: SupervisorOrLeader,
    min_age_days: Annotated[int | None, Query(ge=0, le=3650)] = None,
    county: Annotated[Line | None, Query(max_length=16)] = None,
    team_code: Annotated[Line | None, Query(max_length=32)] = None,
    category: Annotated[Line | None, Query(max_length=64)] = None,
    clock: Annotated[Line | None, Query(max_length=32)] = None,
    step: Annotated[OverdueStep | None, Query()] = None,
    marked: Annotated[LedgerMarkKind | None, Query()] = None,
    case_id: Annotated[Line | None, Query(max_length=64)] = None,
    start: Annotated[date | None, Query(description="received on or after this day (受理日期起)")] = None,
    end: Annotated[date | None, Query(description="received on or before this day (受理日期止)")] = None,
) -> ledger.LedgerQuery:
    """The ledger's filters, the same for the list and its Excel export; a leader's county is forced."""
    if start and end and end < start:
        raise FieldProblems([("end", "受理日期的止日不能早于起日", "end is before start")])
    tz = ctx.calendar.tz
    return ledger.LedgerQuery(
        received_from=datetime.combine(start, time(), tz) if start else None,
        received_before=datetime.combine(end + timedelta(days=1), time(), tz) if end else None,
        min_age_days=ctx.ledger_min_age_days if min_age_days is None else min_age_days,
        county=ledger.scoped_county(principal, county),
        team_code=team_code,
        category=category,
        clock=clock,
        step=step,
        marked=marked,
        case_id=case_id,
    )


Filters = Annotated[ledger.LedgerQuery, Depends(ledger_filters)]
LedgerPage = Annotated[Page, Depends(paging(default=50, maximum=500, offset=False))]


@router.get("/ledger", response_model=list[LedgerRow], tags=["ledger"], responses=page_headers())
async def get_ledger(session: Session, ctx: Context, filters: Filters, page: LedgerPage) -> list[LedgerRow]:
    """The ledger, oldest matters first, a page at a time (``after`` = the previous page's X-Next-Cursor)."""
    return await ledger.ledger_page(session=session, ctx=ctx, filters=filters, page=page)


@router.post("/ledger/{case_id}/marks", status_code=201, tags=["ledger"])
async def mark_ledger(
    case_id: str, body: LedgerMarkIn, session: Session, ctx: Context, principal: Supervisor
) -> dict[str, object]:
    structlog.contextvars.bind_contextvars(case_id=case_id)
    async with session.begin():
        mark = await ledger.mark_ledger(
            session=session, ctx=ctx, case_id=case_id, principal=principal, mark_in=body
        )
    return {"case_id": mark.case_id, "mark": mark.mark, "leader": mark.leader, "marked_by": mark.marked_by}


@router.post("/ledger/{case_id}/marks/remove", tags=["ledger"])
async def remove_ledger_mark(
    case_id: str, body: LedgerMarkRemoveIn, session: Session, principal: Supervisor
) -> dict[str, object]:
    """Remove a mark (督办件, 领导包案) from a matter, with the reason (recorded in the audit trail)."""
    structlog.contextvars.bind_contextvars(case_id=case_id)
    async with session.begin():
        await ledger.remove_mark(session=session, case_id=case_id, principal=principal, remove_in=body)
    return {"case_id": case_id, "mark": body.mark, "removed": True}


@router.post("/ledger/{case_id}/close-off", tags=["ledger"])
async def close_off_ledger(
    case_id: str, body: LedgerCloseOffIn, session: Session, ctx: Context, principal: Supervisor
) -> dict[str, object]:
    """挂账销号: take a matter off the ledger, with the reason; refused while work on it is open."""
    structlog.contextvars.bind_contextvars(case_id=case_id)
    async with session.begin():
        closed = await ledger.close_off(
            session=session, ctx=ctx, case_id=case_id, principal=principal, close_in=body
        )
    return {
        "case_id": closed.case_id,
        "reason": closed.reason,
        "closed_by": closed.closed_by,
        "closed_at": closed.closed_at.isoformat(),
    }


@router.get("/warnings", tags=["early warning"])
async def list_warnings(
    session: Session,
    principal: SupervisorOrLeader,
    county: Annotated[Line | None, Query(max_length=16)] = None,
) -> list[dict[str, object]]:
    """Officers (by badge number) and units that crossed an early-warning threshold, with the matters."""
    return await early_warning.warnings(session=session, county=ledger.scoped_county(principal, county))


@router.get("/warning-thresholds", tags=["early warning"])
async def get_warning_thresholds(session: Session, principal: SupervisorOrLeader) -> list[dict[str, object]]:
    return [t.as_dict() for t in (await early_warning.thresholds(session=session)).values()]


@router.put("/warning-thresholds", tags=["early warning"])
async def put_warning_thresholds(
    body: ThresholdsIn, session: Session, ctx: Context, principal: Supervisor
) -> list[dict[str, object]]:
    """Change the thresholds, with the reason (recorded); a count or window not a positive integer: 422."""
    async with session.begin():
        changed = await early_warning.set_thresholds(
            session=session, principal=principal, thresholds_in=body, now=ctx.clock.now()
        )
    return [t.as_dict() for t in changed.values()]


@router.get(
    "/ledger.xlsx",
    tags=["ledger"],
    response_class=Response,
    responses=file_download(XLSX_MEDIA_TYPE, "The ledger as an Excel workbook"),
)
async def export_ledger(session: Session, ctx: Context, filters: Filters) -> Response:
    """The ledger with the same filters as GET /ledger, all pages, as an Excel workbook to print or send on."""
    path = ledger_export.temporary_path()
    try:
        await ledger_export.write_ledger_workbook(session=session, ctx=ctx, filters=filters, path=path)
    except BaseException:
        os.unlink(path)
        raise
    stamp = ctx.clock.now().astimezone(ctx.calendar.tz).strftime("%Y%m%d")
    return StreamingResponse(
        ledger_export.file_chunks(path),
        media_type=XLSX_MEDIA_TYPE,
        headers={
            "Content-Disposition": attachment(f"督办台账_{stamp}.xlsx", fallback=f"ledger-{stamp}.xlsx"),
            "Cache-Control": "no-store",
        },
    )
