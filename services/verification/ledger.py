"""The ledger (督办台账) of long-pending matters, supervisors' marks on it, and clock states."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists
from sqlmodel import col, delete, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from services.verification.context import VerificationContext
from services.verification.ladder import STEPS, steps_taken
from services.verification.models import (
    ACTIVE_TASK_STATUSES,
    FOLLOW_UP_CLASSIFICATION,
    ClockStatus,
    Finding,
    LedgerCloseOff,
    LedgerMark,
    MatterSnapshot,
    Task,
    TaskClock,
    TaskStatus,
)
from services.verification.schemas import (
    ClockState,
    LedgerCloseOffIn,
    LedgerMarkIn,
    LedgerMarkRemoveIn,
    LedgerRow,
)
from shared.audit import audit
from shared.auth import Principal, Role
from shared.db import where_given
from shared.errors import FieldProblems, Forbidden, NotFound, conflict

MARK_NAMES = {"supervised": "督办件", "leader_assigned": "领导包案"}
# What a clock's state on the ledger shows of the clock, under the same names.
CLOCK_STATE_FIELDS = {
    "name",
    "label",
    "due_at",
    "original_due_at",
    "extended",
    "status",
    "next_step",
    "next_step_at",
    "rule",
    "source",
}


def scoped_county(principal: Principal, county: str | None) -> str | None:
    """The county a reader may see: a leader only their own bureau's, whatever they asked for."""
    if principal.role != Role.LEADER:
        return county
    if not principal.county_code:
        raise Forbidden("该账号未关联县（市、区）公安局")
    return principal.county_code


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
                **clock.model_dump(include=CLOCK_STATE_FIELDS),
                working_days_left=ctx.policy.working_days_left(now, clock.due_at),
                steps_taken=[s for s in STEPS if s in taken],
            )
        )
    return result


def _on_ledger() -> ColumnElement[bool]:
    """Open tasks; concluded ones whose work goes on (a B-class reply waiting for its follow-up, a
    rectification item or other clock still running); and concluded matters a supervisor marked
    (督办件, 领导包案), which stay until closed off (销号)."""
    running = exists().where(
        (col(TaskClock.task_id) == col(Task.id)) & (col(TaskClock.status) == ClockStatus.RUNNING)
    )
    marked = exists().where(col(LedgerMark.case_id) == col(Task.case_id))
    return or_(
        col(Task.status).in_(ACTIVE_TASK_STATUSES),
        and_(
            col(Task.status) == TaskStatus.CONCLUDED,
            or_(col(Task.classification) == FOLLOW_UP_CLASSIFICATION, running, marked),
        ),
    )


def _ledger_query(
    *, received_by: datetime, county: str | None, team_code: str | None, case_id: str | None = None
) -> Select[Task, MatterSnapshot]:
    query = select(Task, MatterSnapshot).join(
        MatterSnapshot, col(MatterSnapshot.case_id) == col(Task.case_id)
    )
    query = query.where(_on_ledger(), col(MatterSnapshot.received_at) <= received_by)
    given = where_given(
        query, (Task.case_id, case_id), (MatterSnapshot.county_code, county), (Task.team_code, team_code)
    )
    return given.order_by(col(MatterSnapshot.received_at))


async def ledger(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    min_age_days: int,
    county: str | None = None,
    team_code: str | None = None,
    category: str | None = None,
    clock: str | None = None,
    step: str | None = None,
    marked: str | None = None,
    case_id: str | None = None,
) -> list[LedgerRow]:
    now = ctx.clock.now()
    received_by = now - timedelta(days=min_age_days)
    query = _ledger_query(received_by=received_by, county=county, team_code=team_code, case_id=case_id)
    rows: dict[str, LedgerRow] = {}
    for task, matter in await session.exec(query):
        categories = [str(a.get("category")) for a in matter.allegations]
        if category and category not in categories:
            continue
        clocks = await clock_states(session=session, ctx=ctx, task_id=task.id)
        pending = await _pending(session, task, clocks)
        marks = list(await session.exec(select(LedgerMark.mark).where(LedgerMark.case_id == task.case_id)))
        if task.status == TaskStatus.CONCLUDED and not pending and not marks:
            continue
        if not pending and await _closed_off(session, task):
            continue
        if clock and not any(c.name == clock or c.name.startswith(f"{clock}:") for c in clocks):
            continue
        taken = [s for c in clocks for s in c.steps_taken]
        if step and step not in taken:
            continue
        if marked and marked not in marks:
            continue
        row = _ledger_row(task, matter, now=now, categories=categories, clocks=clocks, marks=marks)
        row.pending = pending
        # One row per matter: its open task, else its latest concluded one.
        earlier = rows.get(task.case_id)
        if earlier is None or (
            earlier.status not in ACTIVE_TASK_STATUSES and task.status in ACTIVE_TASK_STATUSES
        ):
            rows[task.case_id] = row
    return list(rows.values())


async def _pending(session: AsyncSession, task: Task, clocks: list[ClockState]) -> list[str]:
    """The work that keeps the matter on the ledger, in words."""
    pending = [c.label for c in clocks if c.status == ClockStatus.RUNNING]
    if task.status in ACTIVE_TASK_STATUSES and not pending:
        pending.append("核查办理")
    if (
        task.status == TaskStatus.CONCLUDED
        and task.classification == FOLLOW_UP_CLASSIFICATION
        and not await _followed_up(session, task)
        and not any(c.name == "b_follow_up" and c.status == ClockStatus.RUNNING for c in clocks)
    ):
        pending.append("B类后续答复")
    return pending


async def _followed_up(session: AsyncSession, task: Task) -> bool:
    return any(f.follow_up for f in await session.exec(select(Finding).where(Finding.task_id == task.id)))


async def _closed_off(session: AsyncSession, task: Task) -> bool:
    """Closed off after the task began and after the latest mark: new work brings a matter back."""
    closed = (
        await session.exec(
            select(LedgerCloseOff.closed_at)
            .where(LedgerCloseOff.case_id == task.case_id)
            .order_by(col(LedgerCloseOff.closed_at).desc())
        )
    ).first()
    if closed is None:
        return False
    marked = list(await session.exec(select(LedgerMark.marked_at).where(LedgerMark.case_id == task.case_id)))
    return closed >= max([task.created_at, *marked])


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
        **task.model_dump(include={"case_id", "case_kind", "team_code", "team_name", "status"}),
        **matter.model_dump(include={"tracking_code", "title", "county_code", "received_at"}),
        categories=categories,
        task_id=task.id,
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


async def close_off(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    case_id: str,
    principal: Principal,
    close_in: LedgerCloseOffIn,
) -> LedgerCloseOff:
    """挂账销号: the supervisor takes a matter off the ledger, with the reason.  Work still open on
    it (verification, a rectification item, a B-class follow-up) keeps it there until done."""
    rows = await ledger(session=session, ctx=ctx, min_age_days=0, case_id=case_id)
    if not rows:
        raise FieldProblems([("case_id", "该事项不在台账上，无需销号", "the matter is not on the ledger")])
    pending = [p for row in rows for p in row.pending]
    if pending:
        raise conflict(
            "status",
            f"该事项仍有未完成的工作（{'、'.join(pending)}），办结后方可销号",
            "work on the matter is still open",
        )
    closed = LedgerCloseOff(
        case_id=case_id,
        reason=close_in.reason.strip(),
        closed_by=principal.username,
        closed_at=ctx.clock.now(),
    )
    session.add(closed)
    await audit(
        session,
        case_id=case_id,
        action="ledger_closed_off",
        actor=principal.username,
        reason=closed.reason,
        detail={"marks": rows[0].marks},
    )
    return closed


async def remove_mark(
    *, session: AsyncSession, case_id: str, principal: Principal, remove_in: LedgerMarkRemoveIn
) -> None:
    mark = remove_in.mark
    existing = (
        await session.exec(select(LedgerMark).where(LedgerMark.case_id == case_id, LedgerMark.mark == mark))
    ).first()
    if existing is None:
        raise FieldProblems(
            [("mark", f"该事项没有“{MARK_NAMES.get(mark, mark)}”标记", "the matter has no such mark")]
        )
    await session.exec(delete(LedgerMark).where(col(LedgerMark.id) == existing.id))
    await audit(
        session,
        case_id=case_id,
        action=f"ledger_{mark}_removed",
        actor=principal.username,
        reason=remove_in.reason.strip(),
        detail={"leader": existing.leader, "marked_by": existing.marked_by},
    )
