"""Figures for the supervisors' dashboard and the ledger's Excel export.

Verification knows when matters arrived, when each team concluded them, against
which deadline, with what outcome, and how far up the overdue ladder a clock
went; repeat complaints (intake) come from that service's own small statistics
endpoint.  Each matter counts for the team that did the work: substantiation and
on-time for the team that concluded it, satisfaction for the team that concluded
the round whose answer was rated (feedback's ``RatingRecorded``), not the team the
matter sits with today.
"""

from __future__ import annotations

import io
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.context import VerificationContext
from services.verification.ladder import STEP_LABELS, STEPS, steps_taken
from services.verification.models import (
    ACTIVE_TASK_STATUSES,
    MAIN_CLOCKS,
    ClockStatus,
    Finding,
    LedgerMarkKind,
    MatterSnapshot,
    OverdueStep,
    RoundRating,
    Task,
    TaskClock,
    TaskStatus,
)
from services.verification.schemas import SUBSTANTIATED, ClockState, LedgerRow
from shared.events import RatingRecorded
from shared.reference import Organisation
from shared.states import CaseKind, Rating

OVERDUE_STEPS = (OverdueStep.CHASE, OverdueStep.ESCALATION, OverdueStep.REBUKE)
NO_FINDING = "no_finding"
STATUS_LABELS: dict[str, str] = {
    TaskStatus.OPEN: "待认领",
    TaskStatus.CLAIMED: "核查中",
    TaskStatus.IN_REVIEW: "复核中",
    TaskStatus.CONCLUDED: "已办结",
    TaskStatus.RETURNED: "已退回",
    TaskStatus.SUPERSEDED: "已改派",
    TaskStatus.WITHDRAWN: "已撤回",
}


def week_start(moment: datetime, ctx: VerificationContext) -> datetime:
    """Monday 00:00 Beijing time of the week ``moment`` falls in."""
    local = moment.astimezone(ctx.calendar.tz)
    monday = local - timedelta(days=local.weekday())
    return monday.replace(hour=0, minute=0, second=0, microsecond=0)


def group_name(organisation: Organisation, code: str | None, *, by: str) -> str:
    if not code:
        return "未分派"
    if by == "team":
        return organisation.team_name(code)
    if code == organisation.city_code:
        return "市局直属"
    return organisation.area_name(code)


class _Weeks:
    """The dashboard's last ``count`` weeks, Monday to Sunday in the bureau's time zone."""

    def __init__(self, *, now: datetime, count: int, ctx: VerificationContext) -> None:
        self.ctx = ctx
        self.count = count
        self.first = week_start(now, ctx) - timedelta(weeks=count - 1)
        self.starts = [self.first + timedelta(weeks=i) for i in range(count)]

    def index(self, moment: datetime | None) -> int | None:
        if moment is None or moment < self.first:
            return None
        index = (week_start(moment, self.ctx) - self.first).days // 7
        return index if 0 <= index < self.count else None


class _Groups:
    """The dashboard's counters, one entry per county or team, made on first use."""

    def __init__(self, *, organisation: Organisation, by: str, weeks: int) -> None:
        self.organisation = organisation
        self.by = by
        self.weeks = weeks
        self.entries: dict[str, dict[str, Any]] = {}

    def key_of(self, task: Task | None, matter: MatterSnapshot | None) -> str | None:
        if self.by == "team":
            return task.team_code if task else None
        if matter is not None and matter.county_code:
            return matter.county_code
        # A suggestion has no accused county: it counts where its handling team sits.
        return task.team_code if task else None

    def of(self, task: Task | None, matter: MatterSnapshot | None) -> dict[str, Any]:
        code = self.key_of(task, matter)
        name = code or "unassigned"
        if name not in self.entries:
            self.entries[name] = {
                "code": name,
                "name": group_name(self.organisation, code, by=self.by),
                "received": [0] * self.weeks,
                "concluded": [0] * self.weeks,
                "concluded_total": 0,
                "on_time": 0,
                "with_outcome": 0,
                "substantiated": 0,
                "overdue": dict.fromkeys(OVERDUE_STEPS, 0),
                "open": 0,
                "rated": 0,
                **{rating.value: 0 for rating in Rating},
            }
        return self.entries[name]


async def dashboard(
    *, session: AsyncSession, ctx: VerificationContext, weeks: int, by: str, county: str | None = None
) -> dict[str, Any]:
    """Per county (``by="county"``) or team: received and concluded per week, on-time,
    substantiation and satisfaction rates, and the open clocks past their deadline by the ladder
    step reached; with ``county``, only the matters of that county (a leader's view)."""
    now = ctx.clock.now()
    calendar_weeks = _Weeks(now=now, count=weeks, ctx=ctx)
    groups = _Groups(organisation=ctx.organisation, by=by, weeks=weeks)
    matter_query = select(MatterSnapshot)
    if county:
        matter_query = matter_query.where(MatterSnapshot.county_code == county)
    matters = {m.case_id: m for m in await session.exec(matter_query)}
    tasks = [
        t
        for t in await session.exec(select(Task).order_by(col(Task.created_at)))
        if not county or t.case_id in matters
    ]
    latest_task = {task.case_id: task for task in tasks}
    for case_id, matter in matters.items():
        index = calendar_weeks.index(matter.received_at)
        if index is not None:
            groups.of(latest_task.get(case_id), matter)["received"][index] += 1
    clocks_by_task, findings_by_task = await _clocks_and_findings(session)
    for task in tasks:
        entry = groups.of(task, matters.get(task.case_id))
        if task.status in ACTIVE_TASK_STATUSES:
            entry["open"] += 1
            worst = await _worst_overdue_step(session, clocks_by_task.get(task.id, []))
            if worst:
                entry["overdue"][worst] += 1
            continue
        if task.status != TaskStatus.CONCLUDED or task.concluded_at is None:
            continue
        index = calendar_weeks.index(task.concluded_at)
        if index is not None:
            _count_concluded(
                entry, task, index, clocks_by_task.get(task.id, []), findings_by_task.get(task.id, [])
            )
    await _count_ratings(session, groups, tasks, matters, since=calendar_weeks.first)
    ordered = sorted(groups.entries.values(), key=lambda g: (g["code"] == "unassigned", g["code"]))
    return {
        "by": by,
        "weeks": weeks,
        "county": county,
        "week_labels": [f"{w.month}/{w.day}" for w in calendar_weeks.starts],
        "week_starts": [w.isoformat() for w in calendar_weeks.starts],
        "generated_at": now.isoformat(),
        "step_labels": {s: STEP_LABELS[s] for s in OVERDUE_STEPS},
        "groups": ordered,
        "totals": _totals(ordered),
    }


async def _count_ratings(
    session: AsyncSession,
    groups: _Groups,
    tasks: list[Task],
    matters: dict[str, MatterSnapshot],
    *,
    since: datetime,
) -> None:
    """Each rating for the team that concluded the rated round (its latest conclusion)."""
    concluded: dict[tuple[str, int], Task] = {}
    for task in tasks:
        if task.concluded_at is None:
            continue
        key = (task.case_id, task.round)
        known = concluded.get(key)
        if known is None or (known.concluded_at is not None and task.concluded_at > known.concluded_at):
            concluded[key] = task
    for rating in await session.exec(select(RoundRating).where(col(RoundRating.at) >= since)):
        rated = concluded.get((rating.case_id, rating.round))
        if rated is None:
            continue
        entry = groups.of(rated, matters.get(rated.case_id))
        entry["rated"] += 1
        if rating.rating in entry:
            entry[rating.rating] += 1


async def record_rating(*, session: AsyncSession, event: RatingRecorded) -> None:
    """Keep the first rating of each round (a redelivered or second rating of a round changes nothing)."""
    known = (
        await session.exec(
            select(RoundRating.id).where(
                RoundRating.case_id == event.case_id, RoundRating.round == event.round
            )
        )
    ).first()
    if known is None:
        session.add(
            RoundRating(case_id=event.case_id, round=event.round, rating=event.rating, at=event.occurred_at)
        )


async def _clocks_and_findings(
    session: AsyncSession,
) -> tuple[dict[str, list[TaskClock]], dict[str, list[Finding]]]:
    clocks_by_task: dict[str, list[TaskClock]] = defaultdict(list)
    for clock in await session.exec(select(TaskClock)):
        clocks_by_task[clock.task_id].append(clock)
    findings_by_task: dict[str, list[Finding]] = defaultdict(list)
    for finding in await session.exec(select(Finding).order_by(col(Finding.recorded_at))):
        findings_by_task[finding.task_id].append(finding)
    return clocks_by_task, findings_by_task


async def _worst_overdue_step(session: AsyncSession, clocks: list[TaskClock]) -> str | None:
    worst: str | None = None
    for clock in clocks:
        if clock.status != ClockStatus.RUNNING or clock.id is None:
            continue
        taken = await steps_taken(session, clock.id)
        for step in OVERDUE_STEPS:
            if step in taken and (worst is None or STEPS.index(step) > STEPS.index(worst)):
                worst = step
    return worst


def _count_concluded(
    entry: dict[str, Any], task: Task, index: int, clocks: list[TaskClock], findings: list[Finding]
) -> None:
    assert task.concluded_at is not None
    entry["concluded"][index] += 1
    entry["concluded_total"] += 1
    main = next((c for c in clocks if c.name in MAIN_CLOCKS), None)
    if main is None or task.concluded_at <= main.due_at:
        entry["on_time"] += 1
    first = next((f for f in findings if not f.follow_up), None)
    if first is not None and first.outcome != NO_FINDING and task.case_kind == CaseKind.COMPLAINT:
        entry["with_outcome"] += 1
        entry["substantiated"] += 1 if first.outcome in SUBSTANTIATED else 0


def _totals(ordered: list[dict[str, Any]]) -> dict[str, Any]:
    """Adds each group's totals and rates; returns the figures over all groups."""
    for entry in ordered:
        entry["received_total"] = sum(entry["received"])
        entry["on_time_rate"] = (
            entry["on_time"] / entry["concluded_total"] if entry["concluded_total"] else None
        )
        entry["substantiation_rate"] = (
            entry["substantiated"] / entry["with_outcome"] if entry["with_outcome"] else None
        )
        pleased = entry[Rating.SATISFIED] + entry[Rating.BASICALLY_SATISFIED]
        entry["satisfaction_rate"] = pleased / entry["rated"] if entry["rated"] else None
    return {
        "received": sum(g["received_total"] for g in ordered),
        "concluded": sum(g["concluded_total"] for g in ordered),
        "on_time": sum(g["on_time"] for g in ordered),
        "with_outcome": sum(g["with_outcome"] for g in ordered),
        "substantiated": sum(g["substantiated"] for g in ordered),
        "open": sum(g["open"] for g in ordered),
        "rated": sum(g["rated"] for g in ordered),
        **{rating.value: sum(g[rating.value] for g in ordered) for rating in Rating},
        "overdue": {s: sum(g["overdue"][s] for g in ordered) for s in OVERDUE_STEPS},
    }


# --- The ledger as an Excel workbook ------------------------------------------------------------

_THIN = Side(style="thin", color="9AA6B8")
_BORDER = Border(left=_THIN, right=_THIN, top=_THIN, bottom=_THIN)
_HEAD_FILL = PatternFill("solid", fgColor="0F3D86")
_STEP_FILLS: dict[str, str] = {
    OverdueStep.REMINDER: "E6EEFA",
    OverdueStep.DUE_TODAY: "FFF3E0",
    OverdueStep.CHASE: "FDECEC",
    OverdueStep.ESCALATION: "F9DADA",
    OverdueStep.REBUKE: "F1E8FA",
}
LEDGER_COLUMNS = (
    ("序号", 6),
    ("查询码", 16),
    ("事项", 46),
    ("类型", 8),
    ("县（市、区）", 12),
    ("问题类别", 18),
    ("承办队", 22),
    ("状态", 9),
    ("受理日期", 12),
    ("已办天数", 9),
    ("期限", 40),
    ("最高督办级别", 13),
    ("标记", 14),
)
MARK_LABELS: dict[str, str] = {
    LedgerMarkKind.SUPERVISED: "督办件",
    LedgerMarkKind.LEADER_ASSIGNED: "领导包案",
}


def ledger_workbook(
    rows: list[LedgerRow], *, organisation: Organisation, ctx: VerificationContext, filters: dict[str, str]
) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "长期未办结事项台账"
    _write_heading(sheet, rows, organisation=organisation, ctx=ctx, filters=filters)
    for number, row in enumerate(rows, start=1):
        values = _ledger_values(number, row, organisation=organisation, ctx=ctx)
        for column, value in enumerate(values, start=1):
            cell = sheet.cell(row=3 + number, column=column, value=value)
            cell.border = _BORDER
            cell.alignment = Alignment(vertical="top", wrap_text=True)
        if row.worst_step in _STEP_FILLS:
            sheet.cell(row=3 + number, column=12).fill = PatternFill(
                "solid", fgColor=_STEP_FILLS[row.worst_step]
            )
    sheet.freeze_panes = "C4"
    sheet.auto_filter.ref = f"A3:{get_column_letter(len(LEDGER_COLUMNS))}{3 + len(rows)}"
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.fitToWidth = 1
    sheet.print_title_rows = "3:3"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _write_heading(
    sheet: Worksheet,
    rows: list[LedgerRow],
    *,
    organisation: Organisation,
    ctx: VerificationContext,
    filters: dict[str, str],
) -> None:
    """The title, the line naming the filters, and the column heads (rows 1 to 3)."""
    width = len(LEDGER_COLUMNS)
    now = ctx.clock.now().astimezone(ctx.calendar.tz)
    sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=width)
    sheet.cell(row=1, column=1, value=f"{organisation.city_bureau}长期未办结投诉及建议提案督办台账")
    sheet.cell(row=1, column=1).font = Font(size=16, bold=True)
    sheet.cell(row=1, column=1).alignment = Alignment(horizontal="center")
    sheet.merge_cells(start_row=2, start_column=1, end_row=2, end_column=width)
    described = "；".join(f"{k}：{v}" for k, v in filters.items()) or "全部"
    sheet.cell(
        row=2, column=1, value=f"导出时间：{now:%Y-%m-%d %H:%M}　筛选条件：{described}　共 {len(rows)} 件"
    )
    sheet.cell(row=2, column=1).font = Font(size=10, color="4A5566")
    for index, (title, column_width) in enumerate(LEDGER_COLUMNS, start=1):
        cell = sheet.cell(row=3, column=index, value=title)
        cell.font = Font(bold=True, color="FFFFFF")
        cell.fill = _HEAD_FILL
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        cell.border = _BORDER
        sheet.column_dimensions[get_column_letter(index)].width = column_width


def _clock_line(clock: ClockState, ctx: VerificationContext) -> str:
    if clock.status != ClockStatus.RUNNING:
        left = "（已停止）"
    elif clock.working_days_left >= 0:
        left = f"（剩{clock.working_days_left}个工作日）"
    else:
        left = f"（超期{-clock.working_days_left}个工作日）"
    return f"{clock.label}：{clock.due_at.astimezone(ctx.calendar.tz):%Y-%m-%d}{left}"


def _ledger_values(
    number: int, row: LedgerRow, *, organisation: Organisation, ctx: VerificationContext
) -> list[object]:
    return [
        number,
        row.tracking_code or "",
        row.title or "",
        "投诉" if row.case_kind == CaseKind.COMPLAINT else "建议提案",
        group_name(organisation, row.county_code, by="county") if row.county_code else "",
        "、".join(row.categories),
        row.team_name,
        STATUS_LABELS.get(row.status, row.status),
        row.received_at.astimezone(ctx.calendar.tz).strftime("%Y-%m-%d") if row.received_at else "",
        row.age_days,
        "\n".join(_clock_line(c, ctx) for c in row.clocks),
        STEP_LABELS.get(row.worst_step, "") if row.worst_step else "",
        "、".join(MARK_LABELS.get(m, m) for m in row.marks),
    ]
