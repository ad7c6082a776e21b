"""Verification's logic: tasks from assignments, claims, findings, cross-check review, returns."""

from __future__ import annotations

from fastapi import HTTPException
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.models import Finding, MatterSnapshot, Task, TaskEvent, WithdrawnMatter
from services.verification.schemas import FindingIn, ReviewIn
from shared.audit import audit
from shared.auth import Principal, Role
from shared.db import utcnow
from shared.errors import FieldProblems
from shared.events import (
    CaseAssigned,
    CaseConcluded,
    ComplaintReceived,
    FindingSentBack,
    ReviewStarted,
    SuggestionReceived,
    TaskClaimed,
    TaskReturned,
)
from shared.outbox import record_event

ACTIVE_STATUSES = ("open", "claimed", "in_review")


def _history(session: AsyncSession, task: Task, action: str, actor: str, note: str | None = None) -> None:
    session.add(TaskEvent(task_id=task.id, action=action, actor=actor, note=note))


async def snapshot_complaint(*, session: AsyncSession, event: ComplaintReceived) -> None:
    if await session.get(MatterSnapshot, event.case_id) is not None:
        return
    categories = "、".join(a.category for a in event.allegations)
    session.add(
        MatterSnapshot(
            case_id=event.case_id,
            case_kind="complaint",
            tracking_code=event.tracking_code,
            received_at=event.received_at,
            title=f"{event.accused_unit}：{categories}",
            accused_unit=event.accused_unit,
            county_code=event.county_code,
            officers=[o.model_dump() for o in event.officers],
            allegations=[a.model_dump() for a in event.allegations],
            incident_at=event.incident_at,
            place=event.place,
            text=event.summary,
            anonymous=event.anonymous,
        )
    )


async def snapshot_suggestion(*, session: AsyncSession, event: SuggestionReceived) -> None:
    if await session.get(MatterSnapshot, event.case_id) is not None:
        return
    session.add(
        MatterSnapshot(
            case_id=event.case_id,
            case_kind="suggestion",
            tracking_code=event.tracking_code,
            received_at=event.received_at,
            title=f"{event.session}第{event.number}号：{event.title}",
            text=event.text,
        )
    )


async def withdraw_tasks(*, session: AsyncSession, case_id: str, actor: str, note: str) -> None:
    """The matter left inspection (reclassified): its open tasks end without a finding."""
    if await session.get(WithdrawnMatter, case_id) is None:
        session.add(WithdrawnMatter(case_id=case_id, reason=note))
    for task in await session.exec(
        select(Task).where(Task.case_id == case_id, col(Task.status).in_(ACTIVE_STATUSES))
    ):
        task.status = "withdrawn"
        session.add(task)
        _history(session, task, "withdrawn", actor, f"事项已转类：{note}")


async def task_from_assignment(*, session: AsyncSession, event: CaseAssigned) -> Task | None:
    existing = (await session.exec(select(Task).where(Task.assignment_id == event.assignment_id))).first()
    if existing is not None:
        return None
    if await session.get(WithdrawnMatter, event.case_id) is not None:
        return None
    for older in await session.exec(
        select(Task).where(Task.case_id == event.case_id, col(Task.status).in_(ACTIVE_STATUSES))
    ):
        older.status = "superseded"
        session.add(older)
        _history(session, older, "superseded", event.actor or "routing", "事项已重新分派")
    verification_clock = next(
        (c for c in event.clocks if c.name in ("verification", "deputy_reply")),
        event.clocks[0] if event.clocks else None,
    )
    task = Task(
        case_id=event.case_id,
        case_kind=event.case_kind,
        assignment_id=event.assignment_id,
        team_code=event.team_code,
        team_name=event.team_name,
        assignment_kind=event.kind,
        participants=event.participant_team_codes,
        reasons=event.reasons,
        review_required=event.review_required,
        review_team_code=event.review_team_code,
        key_clue=event.key_clue,
        round=event.round,
        due_at=verification_clock.due_at if verification_clock else None,
        clocks=[c.model_dump(mode="json") for c in event.clocks],
    )
    session.add(task)
    await session.flush()
    _history(session, task, "assigned", event.actor or "routing", "；".join(event.reasons))
    return task


def can_see(principal: Principal, task: Task) -> bool:
    if principal.role == Role.SUPERVISOR:
        return True
    if principal.role != Role.INSPECTOR or not principal.team_code:
        return False
    if principal.team_code == task.team_code or principal.team_code in task.participants:
        return True
    return principal.team_code == task.review_team_code and task.status in ("in_review", "concluded")


async def visible_task(
    *, session: AsyncSession, task_id: str, principal: Principal, lock: bool = False
) -> Task:
    query = select(Task).where(Task.id == task_id)
    if lock:
        query = query.with_for_update()
    task = (await session.exec(query)).first()
    if task is None or not can_see(principal, task):
        raise HTTPException(status_code=404, detail="任务不存在")
    return task


async def list_tasks(
    *,
    session: AsyncSession,
    principal: Principal,
    case_id: str | None,
    status: str | None,
    limit: int,
    offset: int,
) -> list[Task]:
    query = select(Task).order_by(col(Task.due_at), col(Task.created_at)).limit(limit).offset(offset)
    if case_id:
        query = query.where(Task.case_id == case_id)
    if status:
        query = query.where(Task.status == status)
    if principal.role == Role.INSPECTOR:
        team = principal.team_code or ""
        query = query.where(
            or_(
                Task.team_code == team,
                (col(Task.review_team_code) == team) & col(Task.status).in_(("in_review", "concluded")),
            )
        )
    elif principal.role != Role.SUPERVISOR:
        return []
    rows = list(await session.exec(query))
    if principal.role == Role.INSPECTOR:
        # Participation is stored as JSON; filter it here rather than per database dialect.
        rows += [
            t
            for t in await session.exec(select(Task).where(Task.team_code != (principal.team_code or "")))
            if principal.team_code in t.participants
            and (not case_id or t.case_id == case_id)
            and t not in rows
        ]
    return rows


def _conflict(zh: str, en: str) -> FieldProblems:
    return FieldProblems([("status", zh, en)], status_code=409)


async def claim(
    *, session: AsyncSession, task: Task, principal: Principal, correlation_id: str | None
) -> Task:
    if principal.role != Role.INSPECTOR or principal.team_code != task.team_code:
        raise HTTPException(status_code=403, detail="只有承办队的督察民警可以认领")
    if task.status == "claimed" and task.claimed_by == principal.username:
        return task
    if task.status != "open":
        raise _conflict(f"任务当前状态为“{task.status}”，不能认领", f"task is {task.status}; cannot claim")
    task.status = "claimed"
    task.claimed_by = principal.username
    task.claimed_at = utcnow()
    session.add(task)
    _history(session, task, "claimed", principal.username)
    record_event(
        session,
        TaskClaimed(
            case_id=task.case_id,
            correlation_id=correlation_id,
            actor=principal.username,
            task_id=task.id,
            team_code=task.team_code,
        ),
    )
    await audit(
        session,
        case_id=task.case_id,
        action="task_claimed",
        actor=principal.username,
        detail={"task_id": task.id},
    )
    return task


async def release(*, session: AsyncSession, task: Task, principal: Principal) -> Task:
    if task.status != "claimed" or task.claimed_by != principal.username:
        raise _conflict("只能释放本人认领且未提交结论的任务", "only your own claimed task can be released")
    task.status = "open"
    task.claimed_by = None
    task.claimed_at = None
    session.add(task)
    _history(session, task, "released", principal.username)
    await audit(session, case_id=task.case_id, action="task_released", actor=principal.username)
    return task


def _conclude(
    session: AsyncSession,
    task: Task,
    finding: Finding,
    *,
    actor: str,
    correlation_id: str | None,
    reviewed: bool,
) -> None:
    task.status = "concluded"
    task.concluded_at = utcnow()
    session.add(task)
    record_event(
        session,
        CaseConcluded(
            case_id=task.case_id,
            correlation_id=correlation_id,
            actor=actor,
            case_kind=task.case_kind,
            task_id=task.id,
            team_code=task.team_code,
            outcome=finding.outcome,
            summary=finding.summary,
            accountability=finding.accountability,
            classification=finding.classification,
            reviewed=reviewed,
            round=task.round,
        ),
    )


async def record_finding(
    *,
    session: AsyncSession,
    task: Task,
    principal: Principal,
    finding_in: FindingIn,
    correlation_id: str | None,
) -> Finding:
    if task.status != "claimed":
        raise _conflict(
            f"任务当前状态为“{task.status}”，不能提交结论", f"task is {task.status}; cannot record a finding"
        )
    if task.claimed_by != principal.username:
        raise HTTPException(status_code=403, detail="只有认领该任务的督察民警可以提交结论")
    if task.case_kind == "suggestion" and finding_in.classification is None:
        raise FieldProblems(
            [("classification", "代表建议需选择办理类别 A、B、C 或 D", "classification A-D is required")]
        )
    finding = Finding(
        task_id=task.id,
        outcome=finding_in.outcome,
        summary=finding_in.summary.strip(),
        facts=finding_in.facts,
        no_finding_reason=finding_in.no_finding_reason,
        classification=finding_in.classification,
        accountability=list(finding_in.accountability),
        recorded_by=principal.username,
    )
    session.add(finding)
    _history(session, task, "finding_recorded", principal.username, finding_in.outcome)
    if task.review_required and task.review_team_code:
        finding.review_status = "pending"
        task.status = "in_review"
        session.add(task)
        record_event(
            session,
            ReviewStarted(
                case_id=task.case_id,
                correlation_id=correlation_id,
                actor=principal.username,
                task_id=task.id,
                reviewer_team_code=task.review_team_code,
            ),
        )
    else:
        _conclude(
            session, task, finding, actor=principal.username, correlation_id=correlation_id, reviewed=False
        )
    await audit(
        session,
        case_id=task.case_id,
        action="finding_recorded",
        actor=principal.username,
        detail={"task_id": task.id, "outcome": finding.outcome, "review": task.status == "in_review"},
    )
    return finding


async def latest_finding(*, session: AsyncSession, task_id: str) -> Finding | None:
    return (
        await session.exec(
            select(Finding).where(Finding.task_id == task_id).order_by(col(Finding.recorded_at).desc())
        )
    ).first()


async def review(
    *,
    session: AsyncSession,
    task: Task,
    principal: Principal,
    review_in: ReviewIn,
    correlation_id: str | None,
) -> Finding:
    if principal.role != Role.INSPECTOR or principal.team_code != task.review_team_code:
        raise HTTPException(status_code=403, detail="只有指定的复核队可以复核")
    if principal.team_code == task.team_code:
        raise HTTPException(status_code=403, detail="不能复核本队的核查结论")
    if task.status != "in_review":
        raise _conflict("该任务不在复核中", "task is not in review")
    finding = await latest_finding(session=session, task_id=task.id)
    if finding is None:
        raise _conflict("没有待复核的结论", "no finding to review")
    reasons = [r.strip() for r in review_in.reasons if r.strip()]
    finding.reviewed_by = principal.username
    finding.reviewed_at = utcnow()
    finding.review_reasons = reasons
    if review_in.decision == "confirm":
        finding.review_status = "confirmed"
        _history(session, task, "review_confirmed", principal.username, "；".join(reasons) or None)
        _conclude(
            session, task, finding, actor=principal.username, correlation_id=correlation_id, reviewed=True
        )
    else:
        finding.review_status = "sent_back"
        task.status = "claimed"
        session.add(task)
        _history(session, task, "review_sent_back", principal.username, "；".join(reasons))
        record_event(
            session,
            FindingSentBack(
                case_id=task.case_id,
                correlation_id=correlation_id,
                actor=principal.username,
                task_id=task.id,
                reviewer_team_code=principal.team_code or "",
                reasons=reasons,
            ),
        )
    session.add(finding)
    await audit(
        session,
        case_id=task.case_id,
        action=f"review_{review_in.decision}",
        actor=principal.username,
        reason="；".join(reasons) or None,
    )
    return finding


async def return_task(
    *, session: AsyncSession, task: Task, principal: Principal, reason: str, correlation_id: str | None
) -> Task:
    if principal.role != Role.INSPECTOR or principal.team_code != task.team_code:
        raise HTTPException(status_code=403, detail="只有承办队可以退回")
    if task.status not in ("open", "claimed"):
        raise _conflict("只有未提交结论的任务可以退回", "only an open or claimed task can be returned")
    task.status = "returned"
    session.add(task)
    _history(session, task, "returned", principal.username, reason)
    record_event(
        session,
        TaskReturned(
            case_id=task.case_id,
            correlation_id=correlation_id,
            actor=principal.username,
            task_id=task.id,
            assignment_id=task.assignment_id,
            team_code=task.team_code,
            reason=reason,
        ),
    )
    await audit(
        session, case_id=task.case_id, action="task_returned", actor=principal.username, reason=reason
    )
    return task


async def history(*, session: AsyncSession, task_id: str) -> list[TaskEvent]:
    return list(
        await session.exec(select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(col(TaskEvent.id)))
    )


async def findings(*, session: AsyncSession, task_id: str) -> list[Finding]:
    return list(
        await session.exec(
            select(Finding).where(Finding.task_id == task_id).order_by(col(Finding.recorded_at))
        )
    )
