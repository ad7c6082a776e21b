"""The ledger (督办台账) as an Excel workbook, for a year's matters as for a page of them.

The rows come from a server-side cursor in batches (each batch's clocks and marks read in one
query each), go into an openpyxl write-only workbook on a temporary file, and the finished file
is streamed to the reader: the whole ledger is never in memory, as rows or as cells.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from copy import copy
from datetime import timedelta
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.cell_range import CellRange
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification import ledger
from services.verification.context import VerificationContext
from services.verification.ladder import STEP_LABELS
from services.verification.models import (
    ClockStatus,
    LedgerMarkKind,
    MatterSnapshot,
    OverdueStep,
    Task,
    TaskStatus,
)
from services.verification.schemas import ClockState, LedgerRow
from services.verification.stats import group_name
from shared.pagination import count_rows
from shared.reference import Organisation
from shared.states import CaseKind
from shared.xlsx import UNSAFE_START

# Rows fetched from the database and written per round: bounded memory, few round trips.
BATCH_ROWS = 500
CHUNK_BYTES = 256 * 1024

STATUS_LABELS: dict[str, str] = {
    TaskStatus.OPEN: "待认领",
    TaskStatus.CLAIMED: "核查中",
    TaskStatus.IN_REVIEW: "复核中",
    TaskStatus.CONCLUDED: "已办结",
    TaskStatus.RETURNED: "已退回",
    TaskStatus.SUPERSEDED: "已改派",
    TaskStatus.WITHDRAWN: "已撤回",
}
MARK_LABELS: dict[str, str] = {
    LedgerMarkKind.SUPERVISED: "督办件",
    LedgerMarkKind.LEADER_ASSIGNED: "领导包案",
}
STEP_FILTER_LABELS = {
    OverdueStep.REMINDER: "到期前提醒",
    OverdueStep.DUE_TODAY: "当日到期",
    OverdueStep.CHASE: "催办",
    OverdueStep.ESCALATION: "督办",
    OverdueStep.REBUKE: "通报",
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
_WORST_STEP_COLUMN = 12
_THIN = Side(style="thin", color="9AA6B8")
_BORDER = Border(left=_THIN, right=_THIN, top=_THIN, bottom=_THIN)
_HEAD_FILL = PatternFill("solid", fgColor="0F3D86")
_TOP_WRAP = Alignment(vertical="top", wrap_text=True)
_STEP_FILLS: dict[str, PatternFill] = {
    step: PatternFill("solid", fgColor=colour)
    for step, colour in (
        (OverdueStep.REMINDER, "E6EEFA"),
        (OverdueStep.DUE_TODAY, "FFF3E0"),
        (OverdueStep.CHASE, "FDECEC"),
        (OverdueStep.ESCALATION, "F9DADA"),
        (OverdueStep.REBUKE, "F1E8FA"),
    )
}


def filter_labels(ctx: VerificationContext, filters: ledger.LedgerQuery) -> dict[str, str]:
    """The filters as the workbook's heading states them, in the bureau's words."""
    organisation = ctx.organisation
    labels = {"受理满": f"{filters.min_age_days}日"}
    if filters.received_from or filters.received_before:
        first = ctx.calendar.local_date(filters.received_from) if filters.received_from else None
        last = (
            ctx.calendar.local_date(filters.received_before) - timedelta(days=1)
            if filters.received_before
            else None
        )
        labels["受理日期"] = f"{first or '不限'} 至 {last or '不限'}"
    if filters.county:
        labels["县（市、区）"] = group_name(organisation, filters.county, by="county")
    if filters.team_code:
        labels["承办队"] = organisation.team_name(filters.team_code)
    if filters.category:
        labels["类别"] = filters.category
    if filters.clock:
        labels["期限"] = filters.clock
    if filters.step:
        labels["督办级别"] = STEP_FILTER_LABELS.get(OverdueStep(filters.step), filters.step)
    if filters.marked:
        labels["标记"] = MARK_LABELS.get(filters.marked, filters.marked)
    return labels


async def write_ledger_workbook(
    *, session: AsyncSession, ctx: VerificationContext, filters: ledger.LedgerQuery, path: str
) -> int:
    """Write the ledger under ``filters`` to ``path``; the number of matters written."""
    # The kept entries, as the ledger's pages read them; the rows themselves a batch at a time.
    on_ledger = ledger.entries_query(filters, now=ctx.clock.now())
    total = await count_rows(session, on_ledger)
    # Driven by the entries, in their index's order: as ``Task.id IN (…)`` SQLite walked every
    # matter by date and probed the list for each, a million at a million complaints.
    entries = on_ledger.subquery("on_ledger")
    query = (
        select(Task, MatterSnapshot)
        .select_from(entries)
        .join(Task, col(Task.id) == entries.c.task_id)
        .join(MatterSnapshot, col(MatterSnapshot.case_id) == entries.c.case_id)
        .order_by(entries.c.received_at, entries.c.case_id)
    )
    workbook = Workbook(write_only=True)
    sheet: Any = workbook.create_sheet("长期未办结事项台账")
    _heading(sheet, ctx=ctx, filters=filter_labels(ctx, filters), total=total)
    ordered = query.execution_options(yield_per=BATCH_ROWS)
    number = 0
    styles = _CellStyles(sheet)
    stream = await session.stream(ordered)
    async for batch in stream.partitions(BATCH_ROWS):
        found = [(task, matter) for task, matter in batch]
        for row in await ledger.ledger_rows(session=session, ctx=ctx, found=found):
            number += 1
            sheet.append(
                _cells(sheet, _values(number, row, organisation=ctx.organisation, ctx=ctx), row, styles)
            )
    sheet.auto_filter.ref = f"A3:{get_column_letter(len(LEDGER_COLUMNS))}{3 + number}"
    workbook.save(path)
    return number


def file_chunks(path: str) -> Iterator[bytes]:
    """The finished file in chunks (read on Starlette's thread pool), removed once sent or abandoned."""
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk
    finally:
        os.unlink(path)


def temporary_path() -> str:
    handle, path = tempfile.mkstemp(prefix="ledger-", suffix=".xlsx")
    os.close(handle)
    return path


def _heading(sheet: Any, *, ctx: VerificationContext, filters: dict[str, str], total: int) -> None:
    """The title, the line naming the filters, and the column heads (rows 1 to 3)."""
    width = len(LEDGER_COLUMNS)
    last = get_column_letter(width)
    for index, (_, column_width) in enumerate(LEDGER_COLUMNS, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = column_width
    sheet.freeze_panes = "C4"
    sheet.print_title_rows = "3:3"
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.fitToWidth = 1
    now = ctx.clock.now().astimezone(ctx.calendar.tz)
    title = WriteOnlyCell(sheet, value=f"{ctx.organisation.city_bureau}长期未办结投诉及建议提案督办台账")
    title.font = Font(size=16, bold=True)
    title.alignment = Alignment(horizontal="center")
    sheet.append([title])
    described = "；".join(f"{k}：{v}" for k, v in filters.items()) or "全部"
    line = WriteOnlyCell(sheet, value=f"导出时间：{now:%Y-%m-%d %H:%M}　筛选条件：{described}　共 {total} 件")
    line.font = Font(size=10, color="4A5566")
    sheet.append([line])
    heads = []
    for name, _ in LEDGER_COLUMNS:
        cell = WriteOnlyCell(sheet, value=name)
        cell.font = Font(bold=True, color="FFFFFF")
        cell.fill = _HEAD_FILL
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        cell.border = _BORDER
        heads.append(cell)
    sheet.append(heads)
    sheet.merged_cells.add(CellRange(f"A1:{last}1"))
    sheet.merged_cells.add(CellRange(f"A2:{last}2"))


class _CellStyles:
    """The body's cell styles, made once per workbook: openpyxl files a style set on a cell by
    hashing it, which for every cell of a year's ledger took longer than the rest of the export."""

    def __init__(self, sheet: Any) -> None:
        plain = WriteOnlyCell(sheet)
        plain.border = _BORDER
        plain.alignment = _TOP_WRAP
        self.plain = plain._style
        self.by_step = {}
        for step, fill in _STEP_FILLS.items():
            filled = WriteOnlyCell(sheet)
            filled._style = copy(self.plain)
            filled.fill = fill
            self.by_step[step] = filled._style


def _cells(sheet: Any, values: Iterable[object], row: LedgerRow, styles: _CellStyles) -> list[WriteOnlyCell]:
    cells = []
    for column, value in enumerate(values, start=1):
        cell = WriteOnlyCell(sheet, value=value)
        # The style objects are shared, never changed through a cell, but for the one cell that
        # needs its own (quotePrefix).
        if column == _WORST_STEP_COLUMN and row.worst_step in styles.by_step:
            cell._style = styles.by_step[row.worst_step]
        else:
            cell._style = styles.plain
        if isinstance(value, str):
            # Stored as text whatever it starts with; quotePrefix keeps Excel from reading one that
            # starts with = + - @ as a formula when the cell is edited (shared.xlsx).
            cell.data_type = "s"
            if value.startswith(UNSAFE_START):
                cell._style = copy(cell._style)
                cell.quotePrefix = True
        cells.append(cell)
    return cells


def _clock_line(clock: ClockState, ctx: VerificationContext) -> str:
    if clock.status != ClockStatus.RUNNING:
        left = "（已停止）"
    elif clock.working_days_left >= 0:
        left = f"（剩{clock.working_days_left}个工作日）"
    else:
        left = f"（超期{-clock.working_days_left}个工作日）"
    return f"{clock.label}：{clock.due_at.astimezone(ctx.calendar.tz):%Y-%m-%d}{left}"


def _values(
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
