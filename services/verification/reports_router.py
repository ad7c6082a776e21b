"""The 督察工作通报 API: make one now, list them, read one, download its Word and Excel files.

Supervisors see and make every scope; a county's leader only their own county's reports.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import Select, select
from sqlmodel import col

from services.verification import reports
from services.verification.context import VerificationContext
from services.verification.models import Report, ReportStatus
from shared.apidocs import attachment, file_route
from shared.app import runtime_of
from shared.auth import Principal, Role
from shared.deps import Session, SupervisorOrLeader, app_state
from shared.errors import Forbidden, NotFound, conflict
from shared.validation import Line

router = APIRouter(prefix="/api/v1")
Context = Annotated[VerificationContext, Depends(app_state("verification", VerificationContext))]
DOCX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ReportIn(BaseModel):
    period: Literal["month", "year"]
    year: int = Field(ge=2000, le=2100)
    month: int | None = Field(default=None, ge=1, le=12, description="for a month report")
    county: Line | None = Field(default=None, max_length=16, description="a county code; none: the city")


class ReportOut(BaseModel):
    id: str
    scope: str
    scope_name: str
    period: str
    period_label: str
    year: int
    month: int | None
    start: str
    end: str
    generated_at: datetime
    generated_by: str
    scheduled: bool
    status: str
    error: str | None


def _scope_for(principal: Principal, county: str | None) -> str | None:
    """A leader makes and reads their own county's reports only."""
    if principal.role != Role.LEADER:
        return county
    if not principal.county_code:
        raise Forbidden("该账号未关联县（市、区）公安局")
    if county and county != principal.county_code:
        raise Forbidden("只能生成和查看本县（市、区）的督察工作通报")
    return principal.county_code


async def _rows(session: Session, query: Select[Any]) -> list[Any]:
    # Core rows on the session's connection: the metadata columns, never the files.
    connection = await session.connection()
    return list((await connection.execute(query)).all())


def _check_readable(principal: Principal, scope: str) -> None:
    """A leader reads only their own county's reports (not the city's, not another county's)."""
    if principal.role == Role.LEADER and scope != principal.county_code:
        raise Forbidden("只能查看本县（市、区）的督察工作通报")


def _config(request: Request) -> reports.ReportConfig:
    return reports.load_config(request.app.state.settings.report_file)


@router.post("/reports", status_code=201, response_model=ReportOut, tags=["reports"])
async def create_report(
    body: ReportIn, request: Request, ctx: Context, principal: SupervisorOrLeader
) -> dict[str, Any]:
    """Make a monthly or yearly 督察工作通报 now (city or one county); answers when both files are made."""
    county = _scope_for(principal, body.county)
    period = reports.make_period(kind=body.period, year=body.year, month=body.month)
    config = _config(request)
    session_factory = runtime_of(request).session_factory
    row = reports.new_report(
        ctx=ctx, config=config, period=period, county=county, by=principal.username, key=None
    )
    async with session_factory() as session, session.begin():
        session.add(row)
    made = await reports.make_report(
        session_factory=session_factory,
        ctx=ctx,
        config=config,
        report_id=row.id,
        period=period,
        county=county,
    )
    return reports.metadata(made)


@router.get("/reports", response_model=list[ReportOut], tags=["reports"])
async def list_reports(
    session: Session,
    principal: SupervisorOrLeader,
    county: Annotated[Line | None, Query(max_length=16, description="a county code, or 'city'")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> list[dict[str, Any]]:
    """The reports, newest first (without their files)."""
    scope = _scope_for(principal, county) if principal.role == Role.LEADER else county
    query = select(*reports.METADATA_COLUMNS)
    if scope:
        query = query.where(col(Report.scope) == scope)
    query = query.order_by(col(Report.generated_at).desc(), col(Report.id).desc()).offset(offset).limit(limit)
    return [reports.metadata(row) for row in await _rows(session, query)]


async def _readable(session: Session, principal: Principal, report_id: str) -> Report:
    report = await session.get(Report, report_id)
    if report is None:
        raise NotFound("没有这份通报")
    _check_readable(principal, report.scope)
    return report


def _file(report: Report, content: bytes | None, *, suffix: str, media_type: str) -> Response:
    if report.status != ReportStatus.DONE or content is None:
        raise conflict("status", "该通报尚未生成完成或生成失败，请重新生成", "the report has no files")
    period = reports.period_of(report)
    name = f"督察工作通报_{period.label}_{report.scope_name}.{suffix}"
    ascii_name = f"report-{period.key}-{report.scope}.{suffix}"
    return Response(
        content,
        media_type=media_type,
        headers={
            "Content-Disposition": attachment(name, fallback=ascii_name),
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/reports/{report_id}.docx",
    tags=["reports"],
    **file_route(DOCX_MEDIA_TYPE, "The report as a Word document, with its charts"),
)
async def download_docx(report_id: str, session: Session, principal: SupervisorOrLeader) -> Response:
    report = await _readable(session, principal, report_id)
    return _file(report, report.docx, suffix="docx", media_type=DOCX_MEDIA_TYPE)


@router.get(
    "/reports/{report_id}.xlsx",
    tags=["reports"],
    **file_route(XLSX_MEDIA_TYPE, "The report's tables as an Excel workbook"),
)
async def download_xlsx(report_id: str, session: Session, principal: SupervisorOrLeader) -> Response:
    report = await _readable(session, principal, report_id)
    return _file(report, report.xlsx, suffix="xlsx", media_type=XLSX_MEDIA_TYPE)


@router.get("/reports/{report_id}", response_model=ReportOut, tags=["reports"])
async def get_report(report_id: str, session: Session, principal: SupervisorOrLeader) -> dict[str, Any]:
    query = select(*reports.METADATA_COLUMNS).where(col(Report.id) == report_id)
    row = next(iter(await _rows(session, query)), None)
    if row is None:
        raise NotFound("没有这份通报")
    _check_readable(principal, row.scope)
    return reports.metadata(row)
