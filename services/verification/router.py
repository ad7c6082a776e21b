"""Verification's HTTP API: the team's task board, claims, findings, review, returns."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import IO, Annotated, Literal
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification import evidence, extensions, findings, ledger, rectifications, tasks
from services.verification.context import VerificationContext
from services.verification.later_clocks import LaterClocks
from services.verification.ledger_router import router as ledger_router
from services.verification.models import (
    ExtensionStatus,
    Finding,
    MatterSnapshot,
    Task,
)
from services.verification.schemas import (
    OUTCOME_LABELS,
    ClockState,
    CoViewIn,
    CoViewRead,
    EvidenceRead,
    ExtensionDecisionIn,
    ExtensionIn,
    ExtensionRead,
    FindingIn,
    FindingRead,
    FollowUpIn,
    MatterRead,
    RectificationCheckIn,
    RectificationRead,
    RepeatCallRead,
    RequireReviewIn,
    ReturnIn,
    ReviewIn,
    TaskDetail,
    TaskEventRead,
    TaskRead,
)
from services.verification.stats_router import router as stats_router
from shared.apidocs import file_download
from shared.app import current_correlation_id
from shared.auth import Principal
from shared.deadlines import DEFAULT_DEADLINES_FILE, load_deadlines
from shared.deps import Inspector, InspectorOrSupervisor, Session, Supervisor, app_state
from shared.pagination import Page, page_headers, paging, whole
from shared.validation import Line, Text

router = APIRouter(prefix="/api/v1")
# Evidence is always served as opaque bytes, whatever type its uploader claimed (see evidence_file).
EVIDENCE_MEDIA_TYPE = "application/octet-stream"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

Context = Annotated[VerificationContext, Depends(app_state("verification", VerificationContext))]


async def _later_clocks(request: Request) -> LaterClocks:
    ctx: VerificationContext = request.app.state.verification
    path = request.app.state.settings.deadlines_file or DEFAULT_DEADLINES_FILE
    return LaterClocks(deadlines=load_deadlines(path), policy=ctx.policy)


# The clocks a conclusion starts (rectification items, a B-class follow-up): rules and ladder policy.
Later = Annotated[LaterClocks, Depends(_later_clocks)]


def task_read(task: Task, matter: MatterSnapshot | None = None) -> TaskRead:
    read = TaskRead.model_validate(task, from_attributes=True)
    if matter is None:
        return read
    return read.model_copy(update={"tracking_code": matter.tracking_code, "title": matter.title})


def finding_read(finding: Finding) -> FindingRead:
    return FindingRead(
        **finding.model_dump(),
        outcome_label=OUTCOME_LABELS.get(finding.outcome, finding.outcome),
    )


async def _locked_task(session: AsyncSession, task_id: str, principal: Principal) -> Task:
    """The task, locked for this transaction, with its case bound to every log line that follows."""
    task = await tasks.visible_task(session=session, task_id=task_id, principal=principal, lock=True)
    structlog.contextvars.bind_contextvars(case_id=task.case_id)
    return task


@router.get("/tasks", response_model=list[TaskRead], tags=["tasks"], responses=page_headers())
async def list_tasks(
    session: Session,
    ctx: Context,
    principal: InspectorOrSupervisor,
    page: Annotated[Page, Depends(paging(default=100, maximum=500))],
    case_id: Annotated[Line | None, Query(max_length=64)] = None,
    status: Annotated[Line | None, Query(max_length=16)] = None,
    scope: Annotated[
        tasks.TaskScope | None,
        Query(description="the board's tab: active (在办), review (待本队复核), done (已办结); absent: all"),
    ] = None,
    include: Annotated[
        Literal["clocks"] | None, Query(description="clocks: each row's clock_states, as /tasks/{id}/clocks")
    ] = None,
) -> list[TaskRead]:
    if case_id:
        structlog.contextvars.bind_contextvars(case_id=case_id)
    found = await tasks.list_tasks(
        session=session, principal=principal, case_id=case_id, status=status, page=page, scope=scope
    )
    matters = await tasks.matters_of(session=session, case_ids=[t.case_id for t in found])
    rows = [task_read(task, matters.get(task.case_id)) for task in found]
    if include != "clocks":
        return rows
    # The page's clocks in one batch, not a request per task.
    states = await ledger.clock_states_of(session=session, ctx=ctx, task_ids=[t.id for t in found])
    return [row.model_copy(update={"clock_states": states.get(row.id, [])}) for row in rows]


@router.get("/tasks/{task_id}", response_model=TaskDetail, tags=["tasks"])
async def get_task(task_id: str, session: Session, principal: InspectorOrSupervisor) -> TaskDetail:
    task = await tasks.visible_task(session=session, task_id=task_id, principal=principal)
    structlog.contextvars.bind_contextvars(case_id=task.case_id)
    matter = await tasks.matter_of(session=session, case_id=task.case_id)
    return TaskDetail(
        task=task_read(task, matter),
        matter=MatterRead.model_validate(matter, from_attributes=True) if matter else None,
        findings=[finding_read(f) for f in await findings.findings(session=session, task_id=task.id)],
        history=[
            TaskEventRead.model_validate(h, from_attributes=True)
            for h in await tasks.history(session=session, task_id=task.id)
        ],
        repeat_calls=[
            RepeatCallRead.model_validate(r, from_attributes=True)
            for r in await tasks.repeat_calls(session=session, case_id=task.case_id)
        ],
    )


@router.post("/tasks/{task_id}/claim", response_model=TaskRead, tags=["tasks"])
async def claim_task(task_id: str, session: Session, principal: Inspector) -> TaskRead:
    async with session.begin():
        task = await _locked_task(session, task_id, principal)
        await tasks.claim(
            session=session, task=task, principal=principal, correlation_id=current_correlation_id()
        )
    return task_read(task)


@router.post("/tasks/{task_id}/release", response_model=TaskRead, tags=["tasks"])
async def release_task(task_id: str, session: Session, principal: Inspector) -> TaskRead:
    async with session.begin():
        task = await _locked_task(session, task_id, principal)
        await tasks.release(session=session, task=task, principal=principal)
    return task_read(task)


@router.post("/tasks/{task_id}/finding", response_model=FindingRead, tags=["tasks"])
async def record_finding(
    task_id: str, body: FindingIn, session: Session, principal: Inspector, later: Later
) -> FindingRead:
    async with session.begin():
        task = await _locked_task(session, task_id, principal)
        finding = await findings.record_finding(
            session=session,
            task=task,
            principal=principal,
            finding_in=body,
            correlation_id=current_correlation_id(),
            later=later,
        )
    return finding_read(finding)


@router.post("/tasks/{task_id}/review", response_model=FindingRead, tags=["tasks"])
async def review_task(
    task_id: str, body: ReviewIn, session: Session, ctx: Context, principal: Inspector, later: Later
) -> FindingRead:
    async with session.begin():
        task = await _locked_task(session, task_id, principal)
        finding = await findings.review(
            session=session,
            task=task,
            principal=principal,
            review_in=body,
            organisation=ctx.organisation,
            correlation_id=current_correlation_id(),
            later=later,
        )
    return finding_read(finding)


@router.post("/tasks/{task_id}/return", response_model=TaskRead, tags=["tasks"])
async def return_task(task_id: str, body: ReturnIn, session: Session, principal: Inspector) -> TaskRead:
    async with session.begin():
        task = await _locked_task(session, task_id, principal)
        await tasks.return_task(
            session=session,
            task=task,
            principal=principal,
            reason=body.reason,
            correlation_id=current_correlation_id(),
        )
    return task_read(task)


@router.get(
    "/tasks/{task_id}/clocks", response_model=list[ClockState], tags=["deadlines"], responses=page_headers()
)
async def task_clocks(
    task_id: str, session: Session, ctx: Context, principal: InspectorOrSupervisor, response: Response
) -> list[ClockState]:
    task = await tasks.visible_task(session=session, task_id=task_id, principal=principal)
    structlog.contextvars.bind_contextvars(case_id=task.case_id)
    return whole(response, await ledger.clock_states(session=session, ctx=ctx, task_id=task.id))


@router.post("/tasks/{task_id}/follow-up", response_model=FindingRead, tags=["tasks"])
async def follow_up(
    task_id: str, body: FollowUpIn, session: Session, principal: Inspector, later: Later
) -> FindingRead:
    async with session.begin():
        task = await _locked_task(session, task_id, principal)
        finding = await findings.record_follow_up(
            session=session,
            task=task,
            principal=principal,
            follow_up_in=body,
            correlation_id=current_correlation_id(),
            later=later,
        )
    return finding_read(finding)


@router.post("/tasks/{task_id}/extensions", response_model=ExtensionRead, status_code=201, tags=["deadlines"])
async def request_extension(
    task_id: str, body: ExtensionIn, session: Session, ctx: Context, principal: Inspector
) -> ExtensionRead:
    async with session.begin():
        task = await _locked_task(session, task_id, principal)
        extension = await extensions.request_extension(
            session=session, ctx=ctx, task=task, principal=principal, extension_in=body
        )
    return ExtensionRead.model_validate(extension, from_attributes=True)


@router.get("/extensions", response_model=list[ExtensionRead], tags=["deadlines"], responses=page_headers())
async def list_extensions(
    session: Session,
    principal: InspectorOrSupervisor,
    page: Annotated[Page, Depends(paging(default=500, maximum=500, offset=False))],
    status: Annotated[ExtensionStatus | None, Query()] = None,
    task_id: Annotated[Line | None, Query(max_length=64)] = None,
) -> list[ExtensionRead]:
    rows = await extensions.list_extensions(
        session=session, principal=principal, status=status, task_id=task_id, page=page
    )
    return [ExtensionRead.model_validate(r, from_attributes=True) for r in rows]


@router.post("/extensions/{extension_id}/decision", response_model=ExtensionRead, tags=["deadlines"])
async def decide_extension(
    extension_id: str, body: ExtensionDecisionIn, session: Session, ctx: Context, principal: Supervisor
) -> ExtensionRead:
    async with session.begin():
        extension = await extensions.get_extension(session=session, extension_id=extension_id)
        structlog.contextvars.bind_contextvars(case_id=extension.case_id)
        extension = await extensions.decide_extension(
            session=session,
            ctx=ctx,
            extension=extension,
            principal=principal,
            decision=body,
            correlation_id=current_correlation_id(),
        )
    return ExtensionRead.model_validate(extension, from_attributes=True)


EVIDENCE_KINDS = Literal["recording", "document", "interview", "photo", "other"]


@router.post("/tasks/{task_id}/evidence", response_model=EvidenceRead, status_code=201, tags=["evidence"])
async def add_evidence(
    task_id: str,
    session: Session,
    ctx: Context,
    principal: Inspector,
    kind: Annotated[EVIDENCE_KINDS, Form()],
    description: Annotated[Text, Form(min_length=2, max_length=2000)],
    reference: Annotated[Line | None, Form(max_length=300)] = None,
    file: Annotated[UploadFile | None, File()] = None,
) -> EvidenceRead:
    stored: evidence.StoredUpload | None = None
    if file is not None:
        # The file goes to the evidence store before the task is locked: no row lock, no open
        # transaction, while it travels over the network.
        async with session.begin():
            task = await tasks.visible_task(session=session, task_id=task_id, principal=principal)
            evidence.check_may_add(task=task, principal=principal)
        stored = await evidence.store_upload(ctx=ctx, task=task, upload=file)
    try:
        async with session.begin():
            task = await _locked_task(session, task_id, principal)
            added = await evidence.add_evidence(
                session=session,
                task=task,
                principal=principal,
                kind=kind,
                description=description,
                reference=reference,
                stored=stored,
            )
    except BaseException:
        if stored is not None:
            await evidence.discard_upload(ctx=ctx, stored=stored)
        raise
    return EvidenceRead.model_validate(added, from_attributes=True)


@router.get(
    "/tasks/{task_id}/evidence",
    response_model=list[EvidenceRead],
    tags=["evidence"],
    responses=page_headers(),
)
async def list_evidence(
    task_id: str, session: Session, principal: InspectorOrSupervisor, response: Response
) -> list[EvidenceRead]:
    task = await tasks.visible_task(session=session, task_id=task_id, principal=principal)
    rows = await evidence.list_evidence(session=session, task_id=task.id)
    return whole(response, [EvidenceRead.model_validate(r, from_attributes=True) for r in rows])


@router.get(
    "/evidence/{evidence_id}/file",
    tags=["evidence"],
    response_class=StreamingResponse,
    responses=file_download(EVIDENCE_MEDIA_TYPE, "The evidence file, as uploaded"),
)
async def evidence_file(
    evidence_id: str, session: Session, ctx: Context, principal: InspectorOrSupervisor
) -> StreamingResponse:
    # The transaction ends before the download from the store: no connection held meanwhile.
    async with session.begin():
        stored = await evidence.evidence_to_download(
            session=session, evidence_id=evidence_id, principal=principal
        )
    content = await evidence.open_evidence_file(ctx=ctx, evidence=stored)
    filename = stored.filename or "evidence"
    disposition = (
        f'attachment; filename="{filename}"'
        if quote(filename) == filename
        else f"attachment; filename*=utf-8''{quote(filename)}"
    )
    # The uploader chose the content type: served as it came, a crafted "text/html" file would
    # run in this origin.  Always a download, never sniffed, and sandboxed if opened anyway.
    return StreamingResponse(
        _file_chunks(content),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": disposition,
            "Content-Length": str(os.fstat(content.fileno()).st_size),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
    )


async def _file_chunks(content: IO[bytes]) -> AsyncIterator[bytes]:
    """The open file in pieces, closed at the end or when the client goes away."""
    try:
        while chunk := await asyncio.to_thread(content.read, 1024 * 1024):
            yield chunk
    finally:
        content.close()


@router.get(
    "/tasks/{task_id}/rectifications",
    response_model=list[RectificationRead],
    tags=["rectification"],
    responses=page_headers(),
)
async def list_rectifications(
    task_id: str, session: Session, principal: InspectorOrSupervisor, response: Response
) -> list[RectificationRead]:
    task = await tasks.visible_task(session=session, task_id=task_id, principal=principal)
    rows = await rectifications.rectifications(session=session, task_id=task.id)
    return whole(response, [RectificationRead.model_validate(r, from_attributes=True) for r in rows])


@router.post("/rectifications/{item_id}/check", response_model=RectificationRead, tags=["rectification"])
async def check_rectification(
    item_id: str, body: RectificationCheckIn, session: Session, ctx: Context, principal: InspectorOrSupervisor
) -> RectificationRead:
    async with session.begin():
        item = await rectifications.rectification_to_check(
            session=session, item_id=item_id, principal=principal, organisation=ctx.organisation
        )
        structlog.contextvars.bind_contextvars(case_id=item.case_id)
        item = await rectifications.check_rectification(
            session=session, ctx=ctx, item=item, principal=principal, check=body
        )
    return RectificationRead.model_validate(item, from_attributes=True)


@router.post("/tasks/{task_id}/co-views", response_model=CoViewRead, status_code=201, tags=["tasks"])
async def give_co_view(
    task_id: str, body: CoViewIn, session: Session, ctx: Context, principal: Inspector
) -> CoViewRead:
    async with session.begin():
        task = await _locked_task(session, task_id, principal)
        view = await findings.give_co_view(
            session=session, ctx=ctx, task=task, principal=principal, view_in=body
        )
    return CoViewRead.model_validate(view, from_attributes=True)


@router.get(
    "/tasks/{task_id}/co-views", response_model=list[CoViewRead], tags=["tasks"], responses=page_headers()
)
async def list_co_views(
    task_id: str, session: Session, principal: InspectorOrSupervisor, response: Response
) -> list[CoViewRead]:
    task = await tasks.visible_task(session=session, task_id=task_id, principal=principal)
    rows = await findings.co_views(session=session, task_id=task.id)
    return whole(response, [CoViewRead.model_validate(r, from_attributes=True) for r in rows])


@router.post("/tasks/{task_id}/require-review", response_model=TaskRead, tags=["tasks"])
async def require_review(
    task_id: str, body: RequireReviewIn, session: Session, ctx: Context, principal: Supervisor
) -> TaskRead:
    async with session.begin():
        task = await _locked_task(session, task_id, principal)
        await findings.require_review(
            session=session, ctx=ctx, task=task, principal=principal, review_in=body
        )
    return task_read(task)


# The ledger, early warning and statistics: their own module, included here under the same prefix.
router.include_router(ledger_router)
router.include_router(stats_router)
