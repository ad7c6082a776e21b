"""The ledger (督办台账) of long-pending matters, supervisors' marks on it, and clock states."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from services.verification.context import VerificationContext
from services.verification.ladder import STEPS, steps_taken
from services.verification.models import (
    ACTIVE_TASK_STATUSES,
    FOLLOW_UP_CLASSIFICATION,
    Finding,
    LedgerMark,
    MatterSnapshot,
    Task,
    TaskClock,
    TaskStatus,
)
from services.verification.schemas import ClockState, LedgerMarkIn, LedgerRow
from shared.audit import audit
from shared.auth import Principal
from shared.errors import NotFound, conflict


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


def _on_ledger() -> ColumnElement[bool]:
    """Open tasks, and B-class replies that still wait for their follow-up."""
    return or_(
        col(Task.status).in_(ACTIVE_TASK_STATUSES),
        (Task.status == TaskStatus.CONCLUDED) & (Task.classification == FOLLOW_UP_CLASSIFICATION),
    )


def _ledger_query(
    *, received_by: datetime, county: str | None, team_code: str | None
) -> Select[Task, MatterSnapshot]:
    query = select(Task, MatterSnapshot).join(
        MatterSnapshot, col(MatterSnapshot.case_id) == col(Task.case_id)
    )
    query = query.where(_on_ledger(), col(MatterSnapshot.received_at) <= received_by)
    if county:
        query = query.where(MatterSnapshot.county_code == county)
    if team_code:
        query = query.where(Task.team_code == team_code)
    return query.order_by(col(MatterSnapshot.received_at))


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
    query = _ledger_query(received_by=now - timedelta(days=min_age_days), county=county, team_code=team_code)
    rows = []
    for task, matter in await session.exec(query):
        categories = [str(a.get("category")) for a in matter.allegations]
        if category and category not in categories:
            continue
        # A B-class reply waits for its follow-up: it stays on the ledger only once that is the work left.
        if task.status == TaskStatus.CONCLUDED and await _followed_up(session, task):
            continue
        clocks = await clock_states(session=session, ctx=ctx, task_id=task.id)
        if clock and not any(c.name == clock for c in clocks):
            continue
        taken = [s for c in clocks for s in c.steps_taken]
        if step and step not in taken:
            continue
        marks = list(await session.exec(select(LedgerMark.mark).where(LedgerMark.case_id == task.case_id)))
        if marked and marked not in marks:
            continue
        rows.append(_ledger_row(task, matter, now=now, categories=categories, clocks=clocks, marks=marks))
    return rows


async def _followed_up(session: AsyncSession, task: Task) -> bool:
    return any(f.follow_up for f in await session.exec(select(Finding).where(Finding.task_id == task.id)))


def _ledger_row(
    task: Task,
    matter: MatterSnapshot,
    *,
    now: datetime,
    categories: list[str],
    clocks: list[ClockState],
    marks: list[str],
) -> LedgerRow:
    taken = [s for c in clocks for s in c.steps_taken]
    return LedgerRow(
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
        worst_step=next((s for s in reversed(STEPS) if s in taken), None),
        marks=marks,
    )


async def mark_ledger(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    case_id: str,
    principal: Principal,
    mark_in: LedgerMarkIn,
) -> LedgerMark:
    if (await session.exec(select(Task.id).where(Task.case_id == case_id))).first() is None:
        raise NotFound("事项不存在")
    existing = (
        await session.exec(
            select(LedgerMark).where(LedgerMark.case_id == case_id, LedgerMark.mark == mark_in.mark)
        )
    ).first()
    if existing is not None:
        raise conflict("status", "已作此标记", "already marked")
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
