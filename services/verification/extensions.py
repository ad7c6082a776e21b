"""Extensions (延期): a team asks for more time on a running clock, a supervisor decides."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.context import VerificationContext
from services.verification.ladder import steps_taken
from services.verification.models import (
    ACTIVE_TASK_STATUSES,
    MAIN_CLOCKS,
    ClockStatus,
    Extension,
    ExtensionStatus,
    Task,
    TaskClock,
)
from services.verification.schemas import ExtensionDecisionIn, ExtensionIn
from services.verification.tasks import add_history, is_team_member, task_event
from shared.audit import audit, record_audited
from shared.auth import Principal, Role
from shared.db import where_given
from shared.errors import FieldProblems, Forbidden, NotFound, conflict
from shared.events import DeadlineExtended
from shared.pagination import Key, Page


async def request_extension(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    task: Task,
    principal: Principal,
    extension_in: ExtensionIn,
) -> Extension:
    if not is_team_member(principal, task):
        raise Forbidden("只有承办队可以申请延期")
    if task.status not in ACTIVE_TASK_STATUSES:
        raise conflict("status", "已办结的任务不能申请延期", "the task is no longer open")
    clock = await _clock(session, task.id, extension_in.clock)
    if clock is None or clock.status != ClockStatus.RUNNING:
        raise FieldProblems(
            [("clock", f"该任务没有进行中的期限“{extension_in.clock}”", "no running clock of that name")]
        )
    now = ctx.clock.now()
    await _check_request(session, ctx, task, clock, extension_in, now=now)
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
    add_history(
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


async def _clock(session: AsyncSession, task_id: str, name: str) -> TaskClock | None:
    return (
        await session.exec(select(TaskClock).where(TaskClock.task_id == task_id, TaskClock.name == name))
    ).first()


async def _check_request(
    session: AsyncSession,
    ctx: VerificationContext,
    task: Task,
    clock: TaskClock,
    extension_in: ExtensionIn,
    *,
    now: datetime,
) -> None:
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
    if any(e.status == ExtensionStatus.PENDING for e in earlier):
        raise conflict("status", "已有待审批的延期申请", "an extension request is already pending")
    if sum(e.status == ExtensionStatus.APPROVED for e in earlier) >= ctx.extension_max_count:
        raise conflict(
            "status", f"每个期限最多延期{ctx.extension_max_count}次", "no further extension is allowed"
        )


async def list_extensions(
    *, session: AsyncSession, principal: Principal, status: str | None, task_id: str | None, page: Page
) -> list[Extension]:
    """Extension requests, oldest first, a page by keyset; an inspector sees their team's only."""
    query = where_given(select(Extension), (Extension.status, status), (Extension.task_id, task_id))
    if principal.role == Role.INSPECTOR:
        team_tasks = select(Task.id).where(Task.team_code == (principal.team_code or ""))
        query = query.where(col(Extension.task_id).in_(team_tasks))
    keys = (Key(col(Extension.requested_at)), Key(col(Extension.id)))
    return await page.rows(session, query, keys)


async def get_extension(*, session: AsyncSession, extension_id: str) -> Extension:
    extension = await session.get(Extension, extension_id)
    if extension is None:
        raise NotFound("延期申请不存在")
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
    if extension.status != ExtensionStatus.PENDING:
        raise conflict("status", "该延期申请已处理", "the request was already decided")
    task = await session.get(Task, extension.task_id)
    clock = await _clock(session, extension.task_id, extension.clock)
    assert task is not None and clock is not None
    extension.decided_by = principal.username
    extension.decided_at = ctx.clock.now()
    extension.decision_note = (decision.note or "").strip() or None
    if not decision.approve:
        extension.status = ExtensionStatus.REFUSED
        session.add(extension)
        add_history(session, task, "extension_refused", principal.username, extension.decision_note)
        await audit(
            session,
            case_id=task.case_id,
            action="extension_refused",
            actor=principal.username,
            reason=extension.decision_note,
        )
        return extension
    if clock.status != ClockStatus.RUNNING:
        raise conflict("status", "该期限已停止计时，无需延期", "the clock has stopped")
    await _approve(session, ctx, extension, task, clock, principal=principal, correlation_id=correlation_id)
    return extension


async def _approve(
    session: AsyncSession,
    ctx: VerificationContext,
    extension: Extension,
    task: Task,
    clock: TaskClock,
    *,
    principal: Principal,
    correlation_id: str | None,
) -> None:
    # Counted in natural days from the old deadline; a last day on a rest day moves on (民法典 art. 203).
    new_due = ctx.calendar.add_calendar_days(clock.due_at, extension.days)
    extension.status = ExtensionStatus.APPROVED
    extension.new_due_at = new_due
    clock.due_at = new_due
    clock.extended = True
    assert clock.id is not None
    ctx.policy.schedule(clock, await steps_taken(session, clock.id))
    if clock.name in MAIN_CLOCKS:
        task.due_at = new_due
    session.add_all([extension, clock, task])
    add_history(session, task, "extension_approved", principal.username, f"期限延至{new_due.isoformat()}")
    await record_audited(
        session,
        task_event(
            DeadlineExtended,
            task,
            actor=principal.username,
            correlation_id=correlation_id,
            clock=clock.name,
            new_due_at=new_due,
            reason=extension.reason,
        ),
        action="extension_approved",
        reason=extension.reason,
        detail={"clock": clock.name, "new_due_at": new_due.isoformat(), "days": extension.days},
    )
