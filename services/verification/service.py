"""Verification's logic: tasks from assignments, claims, findings, cross-check review, returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from fastapi import HTTPException, UploadFile
from sqlalchemy import String, bindparam, cast
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from services.verification.ladder import STEPS, LadderPolicy, steps_taken
from services.verification.models import (
    CoHandlingView,
    Evidence,
    Extension,
    Finding,
    LedgerMark,
    MatterSnapshot,
    Rectification,
    Task,
    TaskClock,
    TaskEvent,
    WithdrawnMatter,
)
from services.verification.schemas import (
    ClockState,
    CoViewIn,
    ExtensionDecisionIn,
    ExtensionIn,
    FindingIn,
    FollowUpIn,
    LedgerMarkIn,
    LedgerRow,
    RectificationCheckIn,
    RequireReviewIn,
    ReviewIn,
)
from shared.audit import audit
from shared.auth import Principal, Role
from shared.clock import Clock
from shared.db import built_once, lookup, new_row, utcnow
from shared.errors import FieldProblems
from shared.events import (
    CaseAssigned,
    CaseConcluded,
    ComplaintReceived,
    DeadlineExtended,
    FindingSentBack,
    ReviewStarted,
    SuggestionReceived,
    TaskClaimed,
    TaskReturned,
)
from shared.outbox import record_event
from shared.reference import Organisation
from shared.workcalendar import WorkCalendar

ACTIVE_STATUSES = ("open", "claimed", "in_review")


@dataclass
class VerificationContext:
    calendar: WorkCalendar
    policy: LadderPolicy
    clock: Clock
    organisation: Organisation
    extension_max_days: int
    extension_max_count: int
    ledger_min_age_days: int
    evidence_dir: Path
    evidence_max_bytes: int


async def stop_clocks(
    session: AsyncSession, task: Task, *, names: tuple[str, ...] | None = None, at: datetime
) -> None:
    query = select(TaskClock).where(TaskClock.task_id == task.id, TaskClock.status == "running")
    for clock in await session.exec(query):
        if names is None or clock.name in names:
            clock.status = "stopped"
            clock.stopped_at = at
            clock.next_step = None
            clock.next_step_at = None
            session.add(clock)


def _history(session: AsyncSession, task: Task, action: str, actor: str, note: str | None = None) -> None:
    session.add(new_row(TaskEvent, task_id=task.id, action=action, actor=actor, note=note))


async def snapshot_complaint(*, session: AsyncSession, event: ComplaintReceived) -> None:
    if await lookup(session, MatterSnapshot, event.case_id) is not None:
        return
    categories = "、".join(a.category for a in event.allegations)
    session.add(
        new_row(
            MatterSnapshot,
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
    if await lookup(session, MatterSnapshot, event.case_id) is not None:
        return
    session.add(
        new_row(
            MatterSnapshot,
            case_id=event.case_id,
            case_kind="suggestion",
            tracking_code=event.tracking_code,
            received_at=event.received_at,
            title=f"{event.session}第{event.number}号：{event.title}",
            text=event.text,
        )
    )


async def withdraw_tasks(
    *, session: AsyncSession, case_id: str, actor: str, note: str, at: datetime | None = None
) -> None:
    """The matter left inspection (reclassified): its open tasks end without a finding."""
    if await session.get(WithdrawnMatter, case_id) is None:
        session.add(WithdrawnMatter(case_id=case_id, reason=note))
    for task in await session.exec(
        select(Task).where(Task.case_id == case_id, col(Task.status).in_(ACTIVE_STATUSES))
    ):
        task.status = "withdrawn"
        session.add(task)
        await stop_clocks(session, task, at=at or utcnow())
        _history(session, task, "withdrawn", actor, f"事项已转类：{note}")


@built_once
def _tasks_of_case_query() -> SelectOfScalar[Task]:
    return select(Task).where(Task.case_id == bindparam("case_id"))


async def task_from_assignment(
    *, session: AsyncSession, event: CaseAssigned, ctx: VerificationContext
) -> Task | None:
    # A matter has a handful of tasks, one per assignment: one query answers both questions.
    tasks_of_case = list(await session.exec(_tasks_of_case_query(), params={"case_id": event.case_id}))
    if any(t.assignment_id == event.assignment_id for t in tasks_of_case):
        return None
    if await lookup(session, WithdrawnMatter, event.case_id) is not None:
        return None
    for older in (t for t in tasks_of_case if t.status in ACTIVE_STATUSES):
        older.status = "superseded"
        session.add(older)
        await stop_clocks(session, older, at=event.occurred_at)
        _history(session, older, "superseded", event.actor or "routing", "事项已重新分派")
    verification_clock = next(
        (c for c in event.clocks if c.name in ("verification", "deputy_reply", "rehandle")),
        event.clocks[0] if event.clocks else None,
    )
    task = new_row(
        Task,
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
    for clock_set in event.clocks:
        clock = new_row(
            TaskClock,
            task_id=task.id,
            case_id=task.case_id,
            team_code=task.team_code,
            name=clock_set.name,
            label=clock_set.label,
            rule=clock_set.rule,
            source=clock_set.source,
            due_at=clock_set.due_at,
            original_due_at=clock_set.due_at,
        )
        ctx.policy.schedule(clock, set())
        session.add(clock)
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
                # Participants are a JSON list of team codes; as text it contains "<code>" with quotes,
                # which matches one whole code on SQLite and PostgreSQL alike.
                cast(col(Task.participants), String).contains(f'"{team}"'),
            )
        )
    elif principal.role != Role.SUPERVISOR:
        return []
    return list(await session.exec(query))


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
    # Claiming is the team taking the matter on and telling the complainant so (告知受理).
    await stop_clocks(session, task, names=("acceptance_notice",), at=task.claimed_at)
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


async def _conclude(
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
    task.classification = finding.classification
    session.add(task)
    await stop_clocks(session, task, at=task.concluded_at)
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
            follow_up=finding.follow_up,
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
    known_evidence = set(await session.exec(select(Evidence.id).where(Evidence.task_id == task.id)))
    unknown = [e for e in finding_in.evidence_ids if e not in known_evidence]
    if unknown:
        raise FieldProblems(
            [("evidence_ids", f"证据不属于本任务：{'、'.join(unknown)}", "evidence not on this task")]
        )
    matter = await session.get(MatterSnapshot, task.case_id)
    alleged = {str(a.get("category")) for a in (matter.allegations if matter else [])}
    strays = [a.category for a in finding_in.allegations if alleged and a.category not in alleged]
    if strays:
        raise FieldProblems(
            [
                (
                    "allegations",
                    f"投诉中没有这些类别：{'、'.join(strays)}",
                    f"not among the complaint's allegations: {strays}",
                )
            ]
        )
    finding = Finding(
        task_id=task.id,
        outcome=finding_in.outcome,
        summary=finding_in.summary.strip(),
        facts=finding_in.facts,
        no_finding_reason=finding_in.no_finding_reason,
        classification=finding_in.classification,
        accountability=list(finding_in.accountability),
        per_allegation=[a.model_dump() for a in finding_in.allegations],
        per_officer=[o.model_dump() for o in finding_in.officers],
        evidence_ids=list(finding_in.evidence_ids),
        recorded_by=principal.username,
    )
    session.add(finding)
    for item in finding_in.rectifications:
        session.add(
            Rectification(
                task_id=task.id,
                case_id=task.case_id,
                item=item.item.strip(),
                owner=item.owner.strip(),
                due_date=item.due_date,
                added_by=principal.username,
            )
        )
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
        await _conclude(
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
        await _conclude(
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
    await stop_clocks(session, task, at=utcnow())
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


async def record_follow_up(
    *,
    session: AsyncSession,
    task: Task,
    principal: Principal,
    follow_up_in: FollowUpIn,
    correlation_id: str | None,
) -> Finding:
    """A B-class suggestion stays on the ledger until this follow-up reply closes it."""
    if principal.role != Role.INSPECTOR or principal.team_code != task.team_code:
        raise HTTPException(status_code=403, detail="只有承办队可以提交后续答复")
    if task.case_kind != "suggestion" or task.status != "concluded" or task.classification != "B":
        raise _conflict("只有已按B类答复的建议可以提交后续答复", "only a B-class reply can be followed up")
    finding = Finding(
        task_id=task.id,
        outcome="no_finding",
        summary=follow_up_in.summary.strip(),
        no_finding_reason="后续答复",
        classification=follow_up_in.classification,
        recorded_by=principal.username,
        follow_up=True,
    )
    session.add(finding)
    _history(session, task, "follow_up_reply", principal.username, follow_up_in.classification)
    await _conclude(
        session, task, finding, actor=principal.username, correlation_id=correlation_id, reviewed=False
    )
    await audit(session, case_id=task.case_id, action="follow_up_reply", actor=principal.username)
    return finding


def _is_team_member(principal: Principal, task: Task) -> bool:
    return principal.role == Role.INSPECTOR and principal.team_code == task.team_code


async def request_extension(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    task: Task,
    principal: Principal,
    extension_in: ExtensionIn,
) -> Extension:
    if not _is_team_member(principal, task):
        raise HTTPException(status_code=403, detail="只有承办队可以申请延期")
    if task.status not in ACTIVE_STATUSES:
        raise _conflict("已办结的任务不能申请延期", "the task is no longer open")
    clock = (
        await session.exec(
            select(TaskClock).where(TaskClock.task_id == task.id, TaskClock.name == extension_in.clock)
        )
    ).first()
    if clock is None or clock.status != "running":
        raise FieldProblems(
            [("clock", f"该任务没有进行中的期限“{extension_in.clock}”", "no running clock of that name")]
        )
    now = ctx.clock.now()
    if now >= clock.due_at:
        raise FieldProblems(
            [("clock", "延期须在期限届满前申请", "an extension must be asked for before the deadline")]
        )
    if extension_in.days > ctx.extension_max_days:
        raise FieldProblems(
            [("days", f"延期最长{ctx.extension_max_days}日", f"at most {ctx.extension_max_days} days")]
        )
    earlier = list(
        await session.exec(
            select(Extension).where(Extension.task_id == task.id, Extension.clock == clock.name)
        )
    )
    if any(e.status == "pending" for e in earlier):
        raise _conflict("已有待审批的延期申请", "an extension request is already pending")
    if sum(e.status == "approved" for e in earlier) >= ctx.extension_max_count:
        raise _conflict(f"每个期限最多延期{ctx.extension_max_count}次", "no further extension is allowed")
    extension = Extension(
        task_id=task.id,
        case_id=task.case_id,
        clock=clock.name,
        days=extension_in.days,
        reason=extension_in.reason.strip(),
        requested_by=principal.username,
        requested_at=now,
    )
    session.add(extension)
    _history(
        session, task, "extension_requested", principal.username, f"{extension.days}日：{extension.reason}"
    )
    await audit(
        session,
        case_id=task.case_id,
        action="extension_requested",
        actor=principal.username,
        reason=extension.reason,
    )
    return extension


async def decide_extension(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    extension: Extension,
    principal: Principal,
    decision: ExtensionDecisionIn,
    correlation_id: str | None,
) -> Extension:
    if extension.status != "pending":
        raise _conflict("该延期申请已处理", "the request was already decided")
    task = await session.get(Task, extension.task_id)
    clock = (
        await session.exec(
            select(TaskClock).where(TaskClock.task_id == extension.task_id, TaskClock.name == extension.clock)
        )
    ).first()
    assert task is not None and clock is not None
    now = ctx.clock.now()
    extension.decided_by = principal.username
    extension.decided_at = now
    extension.decision_note = (decision.note or "").strip() or None
    if not decision.approve:
        extension.status = "refused"
        session.add(extension)
        _history(session, task, "extension_refused", principal.username, extension.decision_note)
        await audit(
            session,
            case_id=task.case_id,
            action="extension_refused",
            actor=principal.username,
            reason=extension.decision_note,
        )
        return extension
    if clock.status != "running":
        raise _conflict("该期限已停止计时，无需延期", "the clock has stopped")
    # Counted in natural days from the old deadline; a last day on a rest day moves on (民法典 art. 203).
    new_due = ctx.calendar.add_calendar_days(clock.due_at, extension.days)
    extension.status = "approved"
    extension.new_due_at = new_due
    clock.due_at = new_due
    clock.extended = True
    assert clock.id is not None
    ctx.policy.schedule(clock, await steps_taken(session, clock.id))
    if clock.name in ("verification", "deputy_reply", "rehandle"):
        task.due_at = new_due
    session.add_all([extension, clock, task])
    _history(session, task, "extension_approved", principal.username, f"期限延至{new_due.isoformat()}")
    record_event(
        session,
        DeadlineExtended(
            case_id=task.case_id,
            correlation_id=correlation_id,
            actor=principal.username,
            task_id=task.id,
            clock=clock.name,
            new_due_at=new_due,
            reason=extension.reason,
        ),
    )
    await audit(
        session,
        case_id=task.case_id,
        action="extension_approved",
        actor=principal.username,
        reason=extension.reason,
        detail={"clock": clock.name, "new_due_at": new_due.isoformat(), "days": extension.days},
    )
    return extension


async def add_evidence(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    task: Task,
    principal: Principal,
    kind: str,
    description: str,
    reference: str | None,
    upload: UploadFile | None,
) -> Evidence:
    if not _is_team_member(principal, task) and principal.team_code not in task.participants:
        raise HTTPException(status_code=403, detail="只有承办队或参与核查的队可以登记证据")
    if task.status not in ACTIVE_STATUSES:
        raise _conflict("已办结的任务不能再登记证据", "the task is no longer open")
    evidence = Evidence(
        task_id=task.id,
        kind=kind,
        description=description.strip(),
        reference=reference,
        added_by=principal.username,
    )
    if upload is not None:
        digest = hashlib.sha256()
        ctx.evidence_dir.mkdir(parents=True, exist_ok=True)
        partial = ctx.evidence_dir / f"upload-{evidence.id}.part"
        size = 0
        with partial.open("wb") as out:
            while chunk := await upload.read(1024 * 1024):
                size += len(chunk)
                if size > ctx.evidence_max_bytes:
                    out.close()
                    partial.unlink(missing_ok=True)
                    raise FieldProblems(
                        [
                            (
                                "file",
                                f"文件过大：最大{ctx.evidence_max_bytes // (1024 * 1024)}MB",
                                "file too large",
                            )
                        ],
                        status_code=413,
                    )
                digest.update(chunk)
                out.write(chunk)
        evidence.sha256 = digest.hexdigest()
        # Stored by content: the same file uploaded twice is kept once, and its name proves its content.
        partial.replace(ctx.evidence_dir / evidence.sha256)
        evidence.filename = (upload.filename or "upload")[:255]
        evidence.content_type = (upload.content_type or "application/octet-stream")[:100]
        evidence.size_bytes = size
    session.add(evidence)
    _history(session, task, "evidence_added", principal.username, f"{kind}：{evidence.description[:50]}")
    await audit(
        session,
        case_id=task.case_id,
        action="evidence_added",
        actor=principal.username,
        detail={"evidence_id": evidence.id, "sha256": evidence.sha256, "kind": kind},
    )
    return evidence


async def check_rectification(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    item: Rectification,
    principal: Principal,
    check: RectificationCheckIn,
) -> Rectification:
    if item.status != "open":
        raise _conflict("该整改事项已检查", "this item was already checked")
    item.status = "done" if check.done else "not_done"
    item.checked_by = principal.username
    item.checked_at = ctx.clock.now()
    item.check_note = check.note.strip()
    session.add(item)
    await audit(
        session,
        case_id=item.case_id,
        action=f"rectification_{item.status}",
        actor=principal.username,
        reason=item.check_note,
    )
    return item


async def give_co_view(
    *, session: AsyncSession, ctx: VerificationContext, task: Task, principal: Principal, view_in: CoViewIn
) -> CoHandlingView:
    if principal.role != Role.INSPECTOR or principal.team_code not in task.participants:
        raise HTTPException(status_code=403, detail="只有协办单位可以提出协办意见")
    if task.status not in ACTIVE_STATUSES:
        raise _conflict("主办单位已办结，不能再提出意见", "the lead team has concluded")
    team = principal.team_code or ""
    already = (
        await session.exec(
            select(CoHandlingView).where(CoHandlingView.task_id == task.id, CoHandlingView.team_code == team)
        )
    ).first()
    if already is not None:
        raise _conflict("本单位已提出协办意见", "this team already gave its view")
    view = CoHandlingView(
        task_id=task.id, team_code=team, view=view_in.view.strip(), given_by=principal.username
    )
    session.add(view)
    given = set(
        await session.exec(select(CoHandlingView.team_code).where(CoHandlingView.task_id == task.id))
    ) | {team}
    if set(task.participants) <= given:
        await stop_clocks(session, task, names=("co_handling_view",), at=ctx.clock.now())
    _history(session, task, "co_view_given", principal.username, team)
    await audit(session, case_id=task.case_id, action="co_view_given", actor=principal.username)
    return view


async def require_review(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    task: Task,
    principal: Principal,
    review_in: RequireReviewIn,
) -> Task:
    """A supervisor picks a matter for the cross-check (复核) before it may conclude."""
    if task.status not in ("open", "claimed"):
        raise _conflict(
            "只有尚未提交结论的任务可以指定复核", "review can be required before the finding only"
        )
    organisation = ctx.organisation
    chosen = review_in.review_team_code
    if chosen is None:
        matter = await session.get(MatterSnapshot, task.case_id)
        accused = matter.county_code if matter else None
        candidates = [organisation.city_team_code, *organisation.counties]
        chosen = next(
            (c for c in candidates if c != task.team_code and c != accused and c not in task.participants),
            None,
        )
    if chosen is None or chosen not in organisation.team_codes():
        raise FieldProblems([("review_team_code", "不存在的督察队", "unknown team")])
    if chosen == task.team_code or chosen in task.participants:
        raise FieldProblems(
            [("review_team_code", "复核队不能是本队", "a team never reviews its own finding")]
        )
    task.review_required = True
    task.review_team_code = chosen
    session.add(task)
    _history(session, task, "review_required", principal.username, review_in.reason)
    await audit(
        session,
        case_id=task.case_id,
        action="review_required",
        actor=principal.username,
        reason=review_in.reason,
    )
    return task


async def clock_states(*, session: AsyncSession, ctx: VerificationContext, task_id: str) -> list[ClockState]:
    now = ctx.clock.now()
    result = []
    for clock in await session.exec(
        select(TaskClock).where(TaskClock.task_id == task_id).order_by(col(TaskClock.due_at))
    ):
        assert clock.id is not None
        taken = await steps_taken(session, clock.id)
        result.append(
            ClockState(
                name=clock.name,
                label=clock.label,
                due_at=clock.due_at,
                original_due_at=clock.original_due_at,
                extended=clock.extended,
                status=clock.status,
                working_days_left=ctx.policy.working_days_left(now, clock.due_at),
                next_step=clock.next_step,
                next_step_at=clock.next_step_at,
                steps_taken=[s for s in STEPS if s in taken],
                rule=clock.rule,
                source=clock.source,
            )
        )
    return result


async def ledger(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    min_age_days: int,
    county: str | None,
    team_code: str | None,
    category: str | None,
    clock: str | None,
    step: str | None,
    marked: str | None,
) -> list[LedgerRow]:
    now = ctx.clock.now()
    open_or_awaiting = or_(
        col(Task.status).in_(ACTIVE_STATUSES), (Task.status == "concluded") & (Task.classification == "B")
    )
    query = select(Task, MatterSnapshot).join(
        MatterSnapshot, col(MatterSnapshot.case_id) == col(Task.case_id)
    )
    query = query.where(
        open_or_awaiting, col(MatterSnapshot.received_at) <= now - timedelta(days=min_age_days)
    )
    if county:
        query = query.where(MatterSnapshot.county_code == county)
    if team_code:
        query = query.where(Task.team_code == team_code)
    rows = []
    for task, matter in await session.exec(query.order_by(col(MatterSnapshot.received_at))):
        categories = [str(a.get("category")) for a in matter.allegations]
        if category and category not in categories:
            continue
        # A B-class reply waits for its follow-up: it stays on the ledger only once that is the work left.
        if task.status == "concluded" and any(
            f.follow_up for f in await session.exec(select(Finding).where(Finding.task_id == task.id))
        ):
            continue
        clocks = await clock_states(session=session, ctx=ctx, task_id=task.id)
        if clock and not any(c.name == clock for c in clocks):
            continue
        taken = [s for c in clocks for s in c.steps_taken]
        worst = next((s for s in reversed(STEPS) if s in taken), None)
        if step and step not in taken:
            continue
        marks = list(await session.exec(select(LedgerMark.mark).where(LedgerMark.case_id == task.case_id)))
        if marked and marked not in marks:
            continue
        rows.append(
            LedgerRow(
                case_id=task.case_id,
                tracking_code=matter.tracking_code,
                title=matter.title,
                case_kind=task.case_kind,
                county_code=matter.county_code,
                categories=categories,
                task_id=task.id,
                team_code=task.team_code,
                team_name=task.team_name,
                status=task.status,
                received_at=matter.received_at,
                age_days=(now - matter.received_at).days,
                clocks=clocks,
                worst_step=worst,
                marks=marks,
            )
        )
    return rows


async def mark_ledger(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    case_id: str,
    principal: Principal,
    mark_in: LedgerMarkIn,
) -> LedgerMark:
    if (await session.exec(select(Task.id).where(Task.case_id == case_id))).first() is None:
        raise HTTPException(status_code=404, detail="事项不存在")
    existing = (
        await session.exec(
            select(LedgerMark).where(LedgerMark.case_id == case_id, LedgerMark.mark == mark_in.mark)
        )
    ).first()
    if existing is not None:
        raise _conflict("已作此标记", "already marked")
    mark = LedgerMark(
        case_id=case_id,
        mark=mark_in.mark,
        leader=(mark_in.leader or "").strip() or None,
        note=mark_in.note,
        marked_by=principal.username,
        marked_at=ctx.clock.now(),
    )
    session.add(mark)
    await audit(
        session,
        case_id=case_id,
        action=f"ledger_{mark_in.mark}",
        actor=principal.username,
        reason=mark_in.note,
        detail={"leader": mark.leader},
    )
    return mark
