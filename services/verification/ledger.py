"""The ledger (督办台账) of long-pending matters, supervisors' marks on it, and clock states."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, exists
from sqlalchemy.orm import aliased
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from services.verification import ledger_entries
from services.verification.context import VerificationContext
from services.verification.ladder import STEPS
from services.verification.ledger_entries import LedgerEntry, holds, like_escaped
from services.verification.models import (
    ACTIVE_TASK_STATUSES,
    FOLLOW_UP_CLASSIFICATION,
    ClockStatus,
    Finding,
    LadderStep,
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
from shared.errors import FieldProblems, Forbidden, NotFound, conflict
from shared.matter_locks import serialise_matters
from shared.pagination import Key, Page
from shared.workcalendar import WorkCalendar

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
    return (await clock_states_of(session=session, ctx=ctx, task_ids=[task_id])).get(task_id, [])


async def clock_states_of(
    *, session: AsyncSession, ctx: VerificationContext, task_ids: Sequence[str]
) -> dict[str, list[ClockState]]:
    """The clocks of several tasks, with the ladder steps each took: two queries however many tasks."""
    if not task_ids:
        return {}
    now = ctx.clock.now()
    # Columns, not ORM objects: a year's export reads tens of thousands of clocks.
    fields = sorted(CLOCK_STATE_FIELDS)
    columns = [col(getattr(TaskClock, name)) for name in fields]
    clocks = list(
        await session.exec(
            select(col(TaskClock.id), col(TaskClock.task_id), *columns)
            .where(col(TaskClock.task_id).in_(task_ids))
            .order_by(col(TaskClock.due_at), col(TaskClock.id))
        )
    )
    taken: dict[int, set[str]] = defaultdict(set)
    if clocks:
        for clock_id, step in await session.exec(
            select(LadderStep.clock_id, LadderStep.step).where(
                col(LadderStep.clock_id).in_([clock[0] for clock in clocks])
            )
        ):
            taken[clock_id].add(step)
    states: list[dict[str, Any]] = [dict(zip(fields, clock[2:], strict=True)) for clock in clocks]
    days_left = _working_days_left(ctx.calendar, now, [state["due_at"] for state in states])
    result: dict[str, list[ClockState]] = defaultdict(list)
    for clock, state in zip(clocks, states, strict=True):
        result[clock[1]].append(
            ClockState(
                **state,
                working_days_left=days_left[ctx.calendar.local_date(state["due_at"])],
                steps_taken=[s for s in STEPS if s in taken[clock[0] or 0]],
            )
        )
    return result


def _working_days_left(calendar: WorkCalendar, now: datetime, dues: Sequence[datetime]) -> dict[date, int]:
    """Working days from ``now`` to each due date, walking the calendar once for all of them: a
    page of old matters holds clocks years overdue, and counting each alone walked those years
    once per clock."""
    today = calendar.local_date(now)
    days = sorted({calendar.local_date(d) for d in dues} | {today})
    counted: dict[date, int] = {}
    # counted[d]: working days in (first day, d]; between(a, b) = counted[b] - counted[a].
    running, day = 0, days[0]
    for wanted in days:
        while day < wanted:
            day += timedelta(days=1)
            running += calendar.is_working_day(day)
        counted[wanted] = running
    return {d: counted[d] - counted[today] for d in days}


@dataclass(frozen=True)
class LedgerQuery:
    """The ledger's filters; every one is applied in SQL, so that a page and the total are right."""

    min_age_days: int
    county: str | None = None
    team_code: str | None = None
    category: str | None = None
    clock: str | None = None
    step: str | None = None
    marked: str | None = None
    case_id: str | None = None
    # Received in a period (受理日期): from the first day's start to the last day's end, local time.
    received_from: datetime | None = None
    received_before: datetime | None = None


# The ledger's order, one row per matter; its pages seek the same two keys (``ledger_page``).
LEDGER_KEYS = (Key(col(MatterSnapshot.received_at)), Key(col(MatterSnapshot.case_id)))
ENTRY_KEYS = (Key(col(LedgerEntry.received_at)), Key(col(LedgerEntry.case_id)))


def _task_filters(task: Any, filters: LedgerQuery) -> list[ColumnElement[bool]]:
    """The filters on the task itself (its team, a clock of it, a ladder step it took), on the
    tables: ``task`` is the task table or an alias of it."""
    conditions: list[ColumnElement[bool]] = []
    if filters.team_code:
        conditions.append(task.team_code == filters.team_code)
    if filters.clock:
        named = or_(
            col(TaskClock.name) == filters.clock,
            col(TaskClock.name).like(f"{like_escaped(filters.clock)}:%", escape="\\"),
        )
        conditions.append(_probed(select(col(TaskClock.id)).where(col(TaskClock.task_id) == task.id, named)))
    if filters.step:
        conditions.append(
            _probed(
                select(col(LadderStep.id)).where(
                    col(LadderStep.task_id) == task.id, col(LadderStep.step) == filters.step
                )
            )
        )
    return conditions


def _entry_task_filters(entry: Any, filters: LedgerQuery) -> list[ColumnElement[bool]]:
    """The same filters on an entry (``LedgerEntry`` or an alias), from the tokens it keeps."""
    conditions: list[ColumnElement[bool]] = []
    if filters.team_code:
        conditions.append(entry.team_code == filters.team_code)
    if filters.clock:
        conditions.append(holds(entry.clocks, filters.clock))
    if filters.step:
        conditions.append(holds(entry.steps, filters.step))
    return conditions


def _probed(query: Any) -> ColumnElement[bool]:
    """EXISTS, probed row by row through the subquery's index.  The ledger's rows are a few
    thousand; as a join PostgreSQL hashed every clock (or matter) the filter names first, 100,000
    and more, for 90-150 ms.  OFFSET 0 keeps PostgreSQL from turning the subquery into a join;
    SQLite probes row by row anyway."""
    return exists(query.offset(0))


def _matter_filters(matter: Any, filters: LedgerQuery, *, now: datetime) -> list[ColumnElement[bool]]:
    """The filters on the matter, on ``matter``'s columns (a snapshot's or an entry's)."""
    conditions = [matter.received_at <= now - timedelta(days=filters.min_age_days)]
    if filters.county:
        conditions.append(matter.county_code == filters.county)
    if filters.case_id:
        conditions.append(matter.case_id == filters.case_id)
    if filters.received_from:
        conditions.append(matter.received_at >= filters.received_from)
    if filters.received_before:
        conditions.append(matter.received_at < filters.received_before)
    if filters.marked:
        conditions.append(
            exists().where(col(LedgerMark.case_id) == matter.case_id, col(LedgerMark.mark) == filters.marked)
        )
    return conditions


def _category_probed(filters: LedgerQuery) -> list[ColumnElement[bool]]:
    """The filter by category on the snapshot's allegations, JSON as the engine wrote it (json.dumps)."""
    if not filters.category:
        return []
    needle = f'"category": {json.dumps(filters.category)}'
    allegations = cast(col(MatterSnapshot.allegations), Text)
    return [allegations.like(f"%{like_escaped(needle)}%", escape="\\")]


def ledger_query(filters: LedgerQuery, *, now: datetime) -> Select[Task, MatterSnapshot]:
    """The ledger's rows from the tables themselves, unordered: one per matter, its open task, else
    its latest concluded one.  For one matter (``case_id``), found by its key; the pages and the
    export read the kept entries (``entries_query``), which ``tests/test_ledger_entries.py``
    compares with this."""
    other = aliased(Task)
    better = exists().where(
        col(other.case_id) == col(Task.case_id),
        col(other.id) != col(Task.id),
        ledger_entries.comes_before(
            (col(other.status).in_(ACTIVE_TASK_STATUSES), col(other.created_at), col(other.id)),
            (col(Task.status).in_(ACTIVE_TASK_STATUSES), col(Task.created_at), col(Task.id)),
        ),
        *ledger_entries.task_conditions(other),
        *_task_filters(other, filters),
    )
    return (
        select(Task, MatterSnapshot)
        .join(MatterSnapshot, col(MatterSnapshot.case_id) == col(Task.case_id))
        .where(
            *_matter_filters(MatterSnapshot, filters, now=now),
            *_category_probed(filters),
            *ledger_entries.task_conditions(Task),
            *_task_filters(Task, filters),
            ~better,
        )
    )


def entries_query(filters: LedgerQuery, *, now: datetime) -> Select[str, datetime, str]:
    """The ledger's rows from the kept entries (``ledger_entries``): task id, date and matter.

    Unfiltered by task, a matter's row is its leading entry.  Filtered by task (a team, a clock, a
    step), it is the best of the matter's entries that pass, as ``ledger_query`` has it."""
    entry = LedgerEntry
    conditions = _matter_filters(entry, filters, now=now)
    if filters.category:
        conditions.append(holds(col(entry.categories), filters.category))
    task_filters = _entry_task_filters(entry, filters)
    if task_filters:
        other = aliased(LedgerEntry)
        passing_better = exists().where(
            col(other.case_id) == col(entry.case_id),
            col(other.task_id) != col(entry.task_id),
            ledger_entries.comes_before(
                (col(other.active), col(other.created_at), col(other.task_id)),
                (col(entry.active), col(entry.created_at), col(entry.task_id)),
            ),
            *_entry_task_filters(other, filters),
        )
        # Most matters have one entry: the check of the others is then skipped, row by row (as a
        # join, PostgreSQL hashed every clock of the filter's name first: 90 ms at 100,000).
        conditions += [*task_filters, or_(col(entry.alone), ~passing_better)]
    else:
        conditions.append(col(entry.leading).is_(True))
    return select(col(entry.task_id), col(entry.received_at), col(entry.case_id)).where(*conditions)


async def marks_of(session: AsyncSession, case_ids: Iterable[str]) -> dict[str, list[str]]:
    """The marks of these matters, in the order they were made: one query."""
    marks: dict[str, list[str]] = defaultdict(list)
    if wanted := list(set(case_ids)):
        for case_id, mark in await session.exec(
            select(LedgerMark.case_id, LedgerMark.mark)
            .where(col(LedgerMark.case_id).in_(wanted))
            .order_by(col(LedgerMark.id))
        ):
            marks[case_id].append(mark)
    return marks


def worst_step(clocks: Sequence[ClockState]) -> str | None:
    """The furthest ladder step any of the clocks took."""
    taken = {step for clock in clocks for step in clock.steps_taken}
    return next((step for step in reversed(STEPS) if step in taken), None)


def categories_of(allegations: Sequence[dict[str, Any]]) -> list[str]:
    return [str(allegation.get("category")) for allegation in allegations]


async def ledger_rows(
    *, session: AsyncSession, ctx: VerificationContext, found: Sequence[tuple[Task, MatterSnapshot]]
) -> list[LedgerRow]:
    """The rows of tasks on the ledger, their clocks, marks and follow-ups read in one query each."""
    now = ctx.clock.now()
    task_ids = [task.id for task, _ in found]
    clocks = await clock_states_of(session=session, ctx=ctx, task_ids=task_ids)
    marks = await marks_of(session, (task.case_id for task, _ in found))
    followed: set[str] = set()
    if found:
        followed = set(
            await session.exec(
                select(Finding.task_id).where(
                    col(Finding.task_id).in_(task_ids), col(Finding.follow_up).is_(True)
                )
            )
        )
    rows = []
    for task, matter in found:
        task_clocks = clocks.get(task.id, [])
        row = _ledger_row(task, matter, now=now, clocks=task_clocks, marks=marks[task.case_id])
        row.pending = _pending(task, task_clocks, followed=task.id in followed)
        rows.append(row)
    return rows


async def ledger_page(
    *, session: AsyncSession, ctx: VerificationContext, filters: LedgerQuery, page: Page
) -> list[LedgerRow]:
    """One page of the ledger, oldest matters first, and the total in the page's headers: an
    index range of the kept entries; only the page's tasks and matters are read whole."""
    on_ledger = entries_query(filters, now=ctx.clock.now())
    found = list(await session.exec(page.keyset(on_ledger, ENTRY_KEYS)))
    page_rows = page.cut(found, key_of=lambda r: (r[1], r[2]))
    await page.count(session, on_ledger)
    wanted = [row[0] for row in page_rows]
    pairs = {
        task.id: (task, matter)
        for task, matter in await session.exec(
            select(Task, MatterSnapshot)
            .join(MatterSnapshot, col(MatterSnapshot.case_id) == col(Task.case_id))
            .where(col(Task.id).in_(wanted))
        )
    }
    return await ledger_rows(session=session, ctx=ctx, found=[pairs[task_id] for task_id in wanted])


async def ledger(*, session: AsyncSession, ctx: VerificationContext, case_id: str) -> list[LedgerRow]:
    """A matter's row on the ledger, whatever its age, from the tables themselves (empty: not on it)."""
    query = ledger_query(LedgerQuery(min_age_days=0, case_id=case_id), now=ctx.clock.now())
    found = list(await session.exec(query.order_by(*(k.ordered for k in LEDGER_KEYS))))
    return await ledger_rows(session=session, ctx=ctx, found=found)


def _pending(task: Task, clocks: list[ClockState], *, followed: bool) -> list[str]:
    """The work that keeps the matter on the ledger, in words."""
    pending = [c.label for c in clocks if c.status == ClockStatus.RUNNING]
    if task.status in ACTIVE_TASK_STATUSES and not pending:
        pending.append("核查办理")
    if (
        task.status == TaskStatus.CONCLUDED
        and task.classification == FOLLOW_UP_CLASSIFICATION
        and not followed
        and not any(c.name == "b_follow_up" and c.status == ClockStatus.RUNNING for c in clocks)
    ):
        pending.append("B类后续答复")
    return pending


def _ledger_row(
    task: Task,
    matter: MatterSnapshot,
    *,
    now: datetime,
    clocks: list[ClockState],
    marks: list[str],
) -> LedgerRow:
    return LedgerRow(
        **task.model_dump(include={"case_id", "case_kind", "team_code", "team_name", "status"}),
        **matter.model_dump(include={"tracking_code", "title", "county_code", "received_at"}),
        categories=categories_of(matter.allegations),
        task_id=task.id,
        age_days=(now - matter.received_at).days,
        clocks=clocks,
        worst_step=worst_step(clocks),
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
    # Before anything is read, as every writer of a matter (``shared.matter_locks``).
    await serialise_matters(session, [case_id])
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
    await serialise_matters(session, [case_id])
    rows = await ledger(session=session, ctx=ctx, case_id=case_id)
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
    await serialise_matters(session, [case_id])
    mark = remove_in.mark
    existing = (
        await session.exec(select(LedgerMark).where(LedgerMark.case_id == case_id, LedgerMark.mark == mark))
    ).first()
    if existing is None:
        raise FieldProblems(
            [("mark", f"该事项没有“{MARK_NAMES.get(mark, mark)}”标记", "the matter has no such mark")]
        )
    # Through the session, not a DELETE statement: the ledger's entries follow what it flushes.
    await session.delete(existing)
    await audit(
        session,
        case_id=case_id,
        action=f"ledger_{mark}_removed",
        actor=principal.username,
        reason=remove_in.reason.strip(),
        detail={"leader": existing.leader, "marked_by": existing.marked_by},
    )
