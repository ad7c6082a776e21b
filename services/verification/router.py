"""Verification's HTTP API: the team's task board, claims, findings, review, returns."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Query
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification import service
from services.verification.models import Finding, MatterSnapshot, Task
from services.verification.schemas import (
    OUTCOME_LABELS,
    ClockRead,
    FindingIn,
    FindingRead,
    MatterRead,
    ReturnIn,
    ReviewIn,
    TaskDetail,
    TaskEventRead,
    TaskRead,
)
from shared.app import current_correlation_id, get_session
from shared.auth import Principal, Role, require_roles

router = APIRouter(prefix="/api/v1")
Session = Annotated[AsyncSession, Depends(get_session)]
InspectorOrSupervisor = Annotated[Principal, Depends(require_roles(Role.INSPECTOR, Role.SUPERVISOR))]
Inspector = Annotated[Principal, Depends(require_roles(Role.INSPECTOR))]


def task_read(task: Task, matter: MatterSnapshot | None = None) -> TaskRead:
    return TaskRead(
        id=task.id,
        case_id=task.case_id,
        case_kind=task.case_kind,
        tracking_code=matter.tracking_code if matter else None,
        title=matter.title if matter else None,
        team_code=task.team_code,
        team_name=task.team_name,
        assignment_kind=task.assignment_kind,
        participants=task.participants,
        reasons=task.reasons,
        review_required=task.review_required,
        review_team_code=task.review_team_code,
        key_clue=task.key_clue,
        round=task.round,
        status=task.status,
        claimed_by=task.claimed_by,
        claimed_at=task.claimed_at,
        due_at=task.due_at,
        clocks=[ClockRead.model_validate(c) for c in task.clocks],
        created_at=task.created_at,
        concluded_at=task.concluded_at,
    )


def finding_read(finding: Finding) -> FindingRead:
    return FindingRead(
        **finding.model_dump(exclude={"per_allegation"}),
        outcome_label=OUTCOME_LABELS.get(finding.outcome, finding.outcome),
    )


@router.get("/tasks", response_model=list[TaskRead], tags=["tasks"])
async def list_tasks(
    session: Session,
    principal: InspectorOrSupervisor,
    case_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[TaskRead]:
    if case_id:
        structlog.contextvars.bind_contextvars(case_id=case_id)
    tasks = await service.list_tasks(
        session=session, principal=principal, case_id=case_id, status=status, limit=limit, offset=offset
    )
    result = []
    for task in tasks:
        result.append(task_read(task, await session.get(MatterSnapshot, task.case_id)))
    return result


@router.get("/tasks/{task_id}", response_model=TaskDetail, tags=["tasks"])
async def get_task(task_id: str, session: Session, principal: InspectorOrSupervisor) -> TaskDetail:
    task = await service.visible_task(session=session, task_id=task_id, principal=principal)
    structlog.contextvars.bind_contextvars(case_id=task.case_id)
    matter = await session.get(MatterSnapshot, task.case_id)
    return TaskDetail(
        task=task_read(task, matter),
        matter=MatterRead.model_validate(matter, from_attributes=True) if matter else None,
        findings=[finding_read(f) for f in await service.findings(session=session, task_id=task.id)],
        history=[
            TaskEventRead.model_validate(h, from_attributes=True)
            for h in await service.history(session=session, task_id=task.id)
        ],
    )


@router.post("/tasks/{task_id}/claim", response_model=TaskRead, tags=["tasks"])
async def claim_task(task_id: str, session: Session, principal: Inspector) -> TaskRead:
    async with session.begin():
        task = await service.visible_task(session=session, task_id=task_id, principal=principal, lock=True)
        structlog.contextvars.bind_contextvars(case_id=task.case_id)
        await service.claim(
            session=session, task=task, principal=principal, correlation_id=current_correlation_id()
        )
    return task_read(task)


@router.post("/tasks/{task_id}/release", response_model=TaskRead, tags=["tasks"])
async def release_task(task_id: str, session: Session, principal: Inspector) -> TaskRead:
    async with session.begin():
        task = await service.visible_task(session=session, task_id=task_id, principal=principal, lock=True)
        structlog.contextvars.bind_contextvars(case_id=task.case_id)
        await service.release(session=session, task=task, principal=principal)
    return task_read(task)


@router.post("/tasks/{task_id}/finding", response_model=FindingRead, tags=["tasks"])
async def record_finding(
    task_id: str, body: FindingIn, session: Session, principal: Inspector
) -> FindingRead:
    async with session.begin():
        task = await service.visible_task(session=session, task_id=task_id, principal=principal, lock=True)
        structlog.contextvars.bind_contextvars(case_id=task.case_id)
        finding = await service.record_finding(
            session=session,
            task=task,
            principal=principal,
            finding_in=body,
            correlation_id=current_correlation_id(),
        )
    return finding_read(finding)


@router.post("/tasks/{task_id}/review", response_model=FindingRead, tags=["tasks"])
async def review_task(task_id: str, body: ReviewIn, session: Session, principal: Inspector) -> FindingRead:
    async with session.begin():
        task = await service.visible_task(session=session, task_id=task_id, principal=principal, lock=True)
        structlog.contextvars.bind_contextvars(case_id=task.case_id)
        finding = await service.review(
            session=session,
            task=task,
            principal=principal,
            review_in=body,
            correlation_id=current_correlation_id(),
        )
    return finding_read(finding)


@router.post("/tasks/{task_id}/return", response_model=TaskRead, tags=["tasks"])
async def return_task(task_id: str, body: ReturnIn, session: Session, principal: Inspector) -> TaskRead:
    async with session.begin():
        task = await service.visible_task(session=session, task_id=task_id, principal=principal, lock=True)
        structlog.contextvars.bind_contextvars(case_id=task.case_id)
        await service.return_task(
            session=session,
            task=task,
            principal=principal,
            reason=body.reason,
            correlation_id=current_correlation_id(),
        )
    return task_read(task)
