"""Tasks: matter snapshots, a task per assignment, who sees it, claims, releases, returns, withdrawal."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, false, func, not_, union
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification import figures, open_figures
from services.verification.context import VerificationContext
from services.verification.later_clocks import add_clock
from services.verification.models import (
    ACTIVE_TASK_STATUSES,
    MAIN_CLOCKS,
    REVIEWER_VISIBLE_STATUSES,
    ClockStatus,
    MatterSnapshot,
    RepeatCall,
    Task,
    TaskClock,
    TaskEvent,
    TaskParticipant,
    TaskStatus,
    WithdrawnMatter,
)
from shared.audit import audit, record_audited
from shared.auth import Principal, Role
from shared.db import new_row, utcnow, where_given
from shared.errors import Forbidden, NotFound, conflict
from shared.events import (
    CaseAssigned,
    ComplaintReceived,
    Event,
    SuggestionReceived,
    TaskClaimed,
    TaskReturned,
)
from shared.matter_locks import is_postgresql, serialise_matters
from shared.pagination import Page
from shared.planner import without_jit
from shared.slice_rows import add_later, lookup, rows_with
from shared.states import CaseKind

E = TypeVar("E", bound=Event)


def add_history(session: AsyncSession, task: Task, action: str, actor: str, note: str | None = None) -> None:
    add_later(session, new_row(TaskEvent, task_id=task.id, action=action, actor=actor, note=note))


def task_event(
    event_type: Callable[..., E], task: Task, *, actor: str, correlation_id: str | None, **fields: Any
) -> E:
    """An event of what someone did to ``task``: the task's matter and id, who, and the request it came with."""
    return event_type(
        case_id=task.case_id, task_id=task.id, actor=actor, correlation_id=correlation_id, **fields
    )


def is_team_member(principal: Principal, task: Task) -> bool:
    return principal.role == Role.INSPECTOR and principal.team_code == task.team_code


async def stop_clocks(
    session: AsyncSession, task: Task, *, names: tuple[str, ...] | None = None, at: datetime
) -> None:
    query = select(TaskClock).where(TaskClock.task_id == task.id, TaskClock.status == ClockStatus.RUNNING)
    for clock in await session.exec(query):
        if names is None or clock.name in names:
            clock.status = ClockStatus.STOPPED
            clock.stopped_at = at
            clock.next_step = None
            clock.next_step_at = None
            session.add(clock)
    await open_figures.clocks_stopped(session, task=task)


ACCEPTANCE_CLOCK = "acceptance_notice"


async def stop_acceptance_clocks(*, session: AsyncSession, case_id: str, at: datetime) -> None:
    """The complainant was told the complaint was accepted (告知受理): the matter's acceptance clocks stop."""
    query = select(TaskClock).where(
        TaskClock.case_id == case_id,
        TaskClock.name == ACCEPTANCE_CLOCK,
        TaskClock.status == ClockStatus.RUNNING,
    )
    stopped = list(await session.exec(query))
    for clock in stopped:
        clock.status = ClockStatus.STOPPED
        clock.stopped_at = at
        clock.next_step = None
        clock.next_step_at = None
        session.add(clock)
    for task_id in {clock.task_id for clock in stopped}:
        task = await session.get(Task, task_id)
        if task is not None:
            await open_figures.clocks_stopped(session, task=task)


# What a matter's snapshot takes of the event that brought it, under the same names.
SNAPSHOT_FIELDS = {"case_id", "tracking_code", "received_at"}
COMPLAINT_SNAPSHOT_FIELDS = {
    *SNAPSHOT_FIELDS,
    "accused_unit",
    "county_code",
    "officers",
    "allegations",
    "incident_at",
    "place",
    "anonymous",
}


async def snapshot_complaint(
    *, session: AsyncSession, event: ComplaintReceived, ctx: VerificationContext
) -> None:
    if await lookup(session, MatterSnapshot, event.case_id) is not None:
        return
    categories = "、".join(a.category for a in event.allegations)
    matter = new_row(
        MatterSnapshot,
        case_kind=CaseKind.COMPLAINT,
        **event.model_dump(include=COMPLAINT_SNAPSHOT_FIELDS),
        title=f"{event.accused_unit}：{categories}",
        text=event.summary,
    )
    # Counted as received (the dashboard's summary) before it is added: what the matter already
    # counts is read from the rows as they are without it.
    await figures.matter_arrived(session, matter=matter, tz=ctx.calendar.tz)
    session.add(matter)


async def record_repeat_call(*, session: AsyncSession, event: ComplaintReceived) -> None:
    """A repeat call linked to an open matter (重复件): listed on that matter's task, no snapshot of its own.

    No snapshot, so the statistics count it as no new matter received.
    """
    if event.repeat_of is None or await lookup(session, RepeatCall, event.case_id) is not None:
        return
    session.add(
        new_row(
            RepeatCall,
            repeat_case_id=event.case_id,
            case_id=event.repeat_of,
            **event.model_dump(include={"tracking_code", "channel", "received_at"}),
            recorded_by=event.actor,
        )
    )


async def repeat_calls(*, session: AsyncSession, case_id: str) -> list[RepeatCall]:
    return list(
        await session.exec(
            select(RepeatCall).where(RepeatCall.case_id == case_id).order_by(col(RepeatCall.received_at))
        )
    )


async def snapshot_suggestion(
    *, session: AsyncSession, event: SuggestionReceived, ctx: VerificationContext
) -> None:
    if await lookup(session, MatterSnapshot, event.case_id) is not None:
        return
    matter = new_row(
        MatterSnapshot,
        case_kind=CaseKind.SUGGESTION,
        **event.model_dump(include={*SNAPSHOT_FIELDS, "text"}),
        title=f"{event.session}第{event.number}号：{event.title}",
    )
    await figures.matter_arrived(session, matter=matter, tz=ctx.calendar.tz)
    session.add(matter)


async def withdraw_tasks(
    *, session: AsyncSession, case_id: str, actor: str, note: str, at: datetime | None = None
) -> None:
    """The matter left inspection (reclassified): its open tasks end without a finding."""
    if await session.get(WithdrawnMatter, case_id) is None:
        session.add(WithdrawnMatter(case_id=case_id, reason=note))
    # Locked: a status change and the overdue step (``open_figures``) read each other's task.
    for task in await session.exec(
        select(Task)
        .where(Task.case_id == case_id, col(Task.status).in_(ACTIVE_TASK_STATUSES))
        .with_for_update()
    ):
        was, task.status = task.status, TaskStatus.WITHDRAWN
        session.add(task)
        await open_figures.status_changed(session, task=task, was=was)
        await stop_clocks(session, task, at=at or utcnow())
        add_history(session, task, "withdrawn", actor, f"事项已转类：{note}")


async def task_from_assignment(
    *, session: AsyncSession, event: CaseAssigned, ctx: VerificationContext
) -> Task | None:
    # A matter has a handful of tasks, one per assignment: one query answers both questions,
    # and in a slice the consumer made it for all the slice's matters at once.
    tasks_of_case: list[Task] = await rows_with(session, col(Task.case_id), event.case_id)
    if any(t.assignment_id == event.assignment_id for t in tasks_of_case):
        return None
    if await lookup(session, WithdrawnMatter, event.case_id) is not None:
        return None
    for older in (t for t in tasks_of_case if t.status in ACTIVE_TASK_STATUSES):
        was, older.status = older.status, TaskStatus.SUPERSEDED
        session.add(older)
        await open_figures.status_changed(session, task=older, was=was)
        await stop_clocks(session, older, at=event.occurred_at)
        add_history(session, older, "superseded", event.actor or "routing", "事项已重新分派")
    task = _new_task(event)
    session.add(task)
    # The matter now sits with the new task's team: the dashboard counts it as received there.
    matter = await lookup(session, MatterSnapshot, event.case_id)
    await open_figures.task_opened(session, task=task, county=matter.county_code if matter else None)
    if matter is not None:
        latest = max(tasks_of_case, key=lambda t: t.created_at, default=None)
        figures.matter_moved(
            session,
            matter=matter,
            old_team=latest.team_code if latest else None,
            new_team=task.team_code,
            tz=ctx.calendar.tz,
        )
    _add_clocks(session, ctx, task, event)
    for team_code in dict.fromkeys(task.participants):
        add_later(session, new_row(TaskParticipant, team_code=team_code, task_id=task.id))
    add_history(session, task, "assigned", event.actor or "routing", "；".join(event.reasons))
    return task


# What a task takes of the assignment under the same names.
TASK_FIELDS = {
    "case_id",
    "case_kind",
    "assignment_id",
    "team_code",
    "team_name",
    "reasons",
    "review_required",
    "review_team_code",
    "key_clue",
    "round",
}


def _new_task(event: CaseAssigned) -> Task:
    verification_clock = next(
        (c for c in event.clocks if c.name in MAIN_CLOCKS),
        event.clocks[0] if event.clocks else None,
    )
    return new_row(
        Task,
        **event.model_dump(include=TASK_FIELDS),
        assignment_kind=event.kind,
        participants=event.participant_team_codes,
        due_at=verification_clock.due_at if verification_clock else None,
        clocks=[c.model_dump(mode="json") for c in event.clocks],
    )


def _add_clocks(session: AsyncSession, ctx: VerificationContext, task: Task, event: CaseAssigned) -> None:
    for clock_set in event.clocks:
        add_clock(session, ctx.policy, task, clock_set)


def can_see(principal: Principal, task: Task) -> bool:
    if principal.role == Role.SUPERVISOR:
        return True
    if principal.role != Role.INSPECTOR or not principal.team_code:
        return False
    if principal.team_code == task.team_code or principal.team_code in task.participants:
        return True
    return principal.team_code == task.review_team_code and task.status in REVIEWER_VISIBLE_STATUSES


async def visible_task(
    *, session: AsyncSession, task_id: str, principal: Principal, lock: bool = False
) -> Task:
    query = select(Task).where(Task.id == task_id)
    if lock:
        await _serialise_matter_of(session, task_id)
        query = query.with_for_update()
    task = (await session.exec(query)).first()
    if task is None or not can_see(principal, task):
        raise NotFound("任务不存在")
    return task


async def _serialise_matter_of(session: AsyncSession, task_id: str) -> None:
    """The task's matter lock before the task's row lock, the order a consumer's slice keeps
    (``shared.matter_locks``): what the change reads of the matter (its county, for the open
    tasks' summary) is then what the snapshot slice committed, not the moment before."""
    if not is_postgresql(session):
        return
    case_id = (await session.exec(select(Task.case_id).where(Task.id == task_id))).first()
    if case_id is not None:
        await serialise_matters(session, [case_id])


class TaskScope(StrEnum):
    """The task board's tabs (在办任务, 待本队复核, 已办结), the same split as the page draws."""

    ACTIVE = "active"
    REVIEW = "review"
    DONE = "done"


def _scope_condition(scope: TaskScope, team: str) -> ColumnElement[bool]:
    # A task another team handles and this team cross-checks; NULL-safe so NOT() keeps the rest.
    reviewing = (
        false()
        if not team
        else and_(
            func.coalesce(col(Task.review_team_code), "") == team,
            col(Task.team_code) != team,
            col(Task.status) == TaskStatus.IN_REVIEW,
        )
    )
    if scope == TaskScope.REVIEW:
        return reviewing
    if scope == TaskScope.DONE:
        return col(Task.status).not_in(ACTIVE_TASK_STATUSES)
    return and_(col(Task.status).in_(ACTIVE_TASK_STATUSES), not_(reviewing))


def _board_order(scope: TaskScope | None, keys: Any) -> list[Any]:
    """The board's order over ``keys`` (columns named id, due_at and created_at)."""
    if scope == TaskScope.DONE:
        return [keys.created_at.desc(), keys.id.desc()]
    if scope is not None:
        # The task's due_at is its main clock's due (extensions move both); an undated task last.
        return [keys.due_at.asc().nulls_last(), keys.created_at, keys.id]
    return [keys.due_at, keys.created_at, keys.id]


async def list_tasks(
    *,
    session: AsyncSession,
    principal: Principal,
    case_id: str | None,
    status: str | None,
    page: Page,
    scope: TaskScope | None = None,
) -> list[Task]:
    """The tasks a person may see, soonest due first (已办结: the newest first); a page by offset
    (``due_at`` may be empty, which a keyset cannot seek past alike on both databases), with the total.

    An inspector sees a task as its team's, as the team that cross-checks it, or as a participant:
    each way is a search of its own index, and the page is ranked by the sort keys of their union
    alone, its total counted in the same pass, before the page's rows are read.  As one OR,
    PostgreSQL could not use the indexes beside the participants' subquery: it read every active
    task of every team (48,000 at a million complaints, 80,000 pages) for the page and again for
    the total.
    """
    keyed = where_given(
        select(col(Task.id), col(Task.due_at), col(Task.created_at)),
        (Task.case_id, case_id),
        (Task.status, status),
    )
    team = principal.team_code or ""
    if scope is not None:
        keyed = keyed.where(_scope_condition(scope, team))
    if principal.role == Role.INSPECTOR:
        ranked = union(
            keyed.where(Task.team_code == team),
            keyed.where(col(Task.review_team_code) == team, col(Task.status).in_(REVIEWER_VISIBLE_STATUSES)),
            keyed.join(TaskParticipant, col(TaskParticipant.task_id) == col(Task.id)).where(
                TaskParticipant.team_code == team
            ),
        ).subquery()
    elif principal.role == Role.SUPERVISOR:
        ranked = keyed.subquery()
    else:
        return []
    top = page.window(
        sa_select(
            ranked.c.id, ranked.c.due_at, ranked.c.created_at, func.count().over().label("total")
        ).order_by(*_board_order(scope, ranked.c))
    ).subquery()
    await without_jit(await session.connection())
    rows = list(
        await session.exec(
            select(Task, top.c.total)
            .join(top, col(Task.id) == top.c.id)
            .order_by(*_board_order(scope, top.c))
        )
    )
    found = page.cut([task for task, _ in rows])
    if rows or not page.offset:
        page.counted(rows[0][1] if rows else 0)
    else:
        await page.count(session, sa_select(ranked.c.id))
    return found


async def matter_of(*, session: AsyncSession, case_id: str) -> MatterSnapshot | None:
    return await session.get(MatterSnapshot, case_id)


async def matters_of(*, session: AsyncSession, case_ids: list[str]) -> dict[str, MatterSnapshot]:
    """The matters of a page of tasks, in one query."""
    if not case_ids:
        return {}
    found = await session.exec(select(MatterSnapshot).where(col(MatterSnapshot.case_id).in_(set(case_ids))))
    return {m.case_id: m for m in found}


async def history(*, session: AsyncSession, task_id: str) -> list[TaskEvent]:
    return list(
        await session.exec(select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(col(TaskEvent.id)))
    )


async def claim(
    *, session: AsyncSession, task: Task, principal: Principal, correlation_id: str | None
) -> Task:
    if principal.role != Role.INSPECTOR or principal.team_code != task.team_code:
        raise Forbidden("只有承办队的督察民警可以认领")
    if task.status == TaskStatus.CLAIMED and task.claimed_by == principal.username:
        return task
    if task.status != TaskStatus.OPEN:
        raise conflict(
            "status", f"任务当前状态为“{task.status}”，不能认领", f"task is {task.status}; cannot claim"
        )
    task.status = TaskStatus.CLAIMED
    task.claimed_by = principal.username
    task.claimed_at = utcnow()
    session.add(task)
    # The acceptance clock stops when feedback has told the complainant (AcceptanceNoticeDelivered).
    add_history(session, task, "claimed", principal.username)
    await record_audited(
        session,
        task_event(
            TaskClaimed,
            task,
            actor=principal.username,
            correlation_id=correlation_id,
            team_code=task.team_code,
        ),
        action="task_claimed",
        detail={"task_id": task.id},
    )
    return task


async def release(*, session: AsyncSession, task: Task, principal: Principal) -> Task:
    if task.status != TaskStatus.CLAIMED or task.claimed_by != principal.username:
        raise conflict(
            "status", "只能释放本人认领且未提交结论的任务", "only your own claimed task can be released"
        )
    task.status = TaskStatus.OPEN
    task.claimed_by = None
    task.claimed_at = None
    session.add(task)
    add_history(session, task, "released", principal.username)
    await audit(session, case_id=task.case_id, action="task_released", actor=principal.username)
    return task


async def return_task(
    *, session: AsyncSession, task: Task, principal: Principal, reason: str, correlation_id: str | None
) -> Task:
    if principal.role != Role.INSPECTOR or principal.team_code != task.team_code:
        raise Forbidden("只有承办队可以退回")
    if task.status not in (TaskStatus.OPEN, TaskStatus.CLAIMED):
        raise conflict(
            "status", "只有未提交结论的任务可以退回", "only an open or claimed task can be returned"
        )
    was, task.status = task.status, TaskStatus.RETURNED
    session.add(task)
    await open_figures.status_changed(session, task=task, was=was)
    await stop_clocks(session, task, at=utcnow())
    add_history(session, task, "returned", principal.username, reason)
    await record_audited(
        session,
        task_event(
            TaskReturned,
            task,
            actor=principal.username,
            correlation_id=correlation_id,
            assignment_id=task.assignment_id,
            team_code=task.team_code,
            reason=reason,
        ),
        action="task_returned",
        reason=reason,
    )
    return task
