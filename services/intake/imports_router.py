"""Intake's HTTP API for bulk imports of transferred matters (批量导入)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile, status
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.intake import imports
from services.intake.context import IntakeContext
from services.intake.imports_sheet import report_xlsx, template_xlsx
from services.intake.imports_worker import ImportRunner
from services.intake.models import ImportJob, ImportRow, ImportRowResult
from services.intake.settings import IntakeSettings
from shared.apidocs import attachment, file_route
from shared.deps import Operator, Session, app_state
from shared.pagination import Page, page_headers, paging
from shared.readmodel import read_model

imports_router = APIRouter(prefix="/api/v1", tags=["imports"])
Context = Annotated[IntakeContext, Depends(app_state("intake", IntakeContext))]
Runner = Annotated[ImportRunner, Depends(app_state("imports", ImportRunner))]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
RESULT_LABELS = {
    ImportRowResult.ACCEPTED: "已登记",
    ImportRowResult.REFUSED: "未通过",
    ImportRowResult.DUPLICATE: "重复",
}


class ImportStarted(BaseModel):
    id: str
    status: str
    rows: int


class ImportItem(BaseModel):
    row: int
    result: str
    platform_ticket_no: str | None = None
    tracking_code: str | None = None
    field: str | None = None
    message: str | None = None


class ImportRead(BaseModel):
    id: str
    filename: str
    status: str = Field(description="running, done or failed")
    rows: int
    processed: int
    accepted: int
    refused: int
    duplicates: int
    failure: str | None = None
    created_by: str
    created_at: str
    finished_at: str | None = None
    items: list[ImportItem] = Field(default_factory=list)


def _read(job: ImportJob, items: list[ImportRow]) -> ImportRead:
    return read_model(
        ImportRead,
        job,
        created_at=job.created_at.isoformat(),
        finished_at=job.finished_at.isoformat() if job.finished_at else None,
        items=[read_model(ImportItem, i) for i in items],
    )


def _xlsx(content: bytes, filename: str) -> Response:
    return Response(
        content=content,
        media_type=XLSX,
        headers={"Content-Disposition": attachment(filename, fallback=filename)},
    )


@imports_router.get(
    "/imports/template.xlsx",
    **file_route(XLSX, "The import template: one header row, in Chinese"),
)
async def import_template(principal: Operator) -> Response:
    """The import template: one header row with the column names, in Chinese."""
    return _xlsx(template_xlsx(), "import-template.xlsx")


@imports_router.post("/imports", status_code=status.HTTP_202_ACCEPTED, response_model=ImportStarted)
async def start_import(
    request: Request,
    session: Session,
    ctx: Context,
    runner: Runner,
    principal: Operator,
    file: Annotated[UploadFile, File(description="the transfer list, an .xlsx")],
) -> ImportStarted:
    """Store the file's rows as an import; they are recorded in the background (GET it for progress)."""
    settings: IntakeSettings = request.app.state.settings
    data = await file.read(settings.import_max_bytes + 1)
    async with session.begin():
        job = await imports.start_import(
            session=session,
            ctx=ctx,
            filename=file.filename or "",
            data=data,
            max_bytes=settings.import_max_bytes,
            max_rows=settings.import_max_rows,
            actor=principal,
        )
    runner.wake()
    return ImportStarted(id=job.id, status=job.status, rows=job.rows)


@imports_router.get("/imports", response_model=list[ImportRead], responses=page_headers())
async def list_imports(
    session: Session,
    principal: Operator,
    page: Annotated[Page, Depends(paging(default=20, maximum=100, offset=False))],
) -> list[ImportRead]:
    """The latest imports, without their rows; older ones by the next page's cursor."""
    return [_read(job, []) for job in await imports.recent_imports(session=session, page=page)]


@imports_router.get("/imports/{import_id}", response_model=ImportRead)
async def read_import(
    import_id: str,
    session: Session,
    principal: Operator,
    with_items: Annotated[bool, Query(description="false: the counts only, for polling the progress")] = True,
) -> ImportRead:
    job = await imports.get_import(session=session, import_id=import_id)
    items = list(await imports.import_items(session=session, import_id=job.id)) if with_items else []
    return _read(job, items)


@imports_router.get(
    "/imports/{import_id}/report.xlsx",
    **file_route(XLSX, "The per-row report; every cell text, never a formula"),
)
async def import_report(import_id: str, session: Session, principal: Operator) -> Response:
    """The per-row report as .xlsx; every cell is text, never a formula."""
    job = await imports.get_import(session=session, import_id=import_id)
    items = await imports.import_items(session=session, import_id=job.id)
    rows = [
        (
            i.row,
            RESULT_LABELS.get(ImportRowResult(i.result), i.result),
            i.platform_ticket_no,
            i.tracking_code,
            i.field,
            i.message,
        )
        for i in items
    ]
    return _xlsx(report_xlsx(rows), f"import-report-{job.id}.xlsx")
