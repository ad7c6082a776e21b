"""The ledger (督办台账) as an Excel workbook, for a year's matters as for a page of them.

The rows come from a server-side cursor in batches, as the columns the workbook shows (each
batch's clocks and marks read in one query each), and the finished file is streamed to the reader:
the whole ledger is never in memory, as rows or as cells.

openpyxl writes the workbook around the rows (a write-only workbook on a temporary file): the
title, the line naming the filters, the column heads, widths, frozen panes, the filter and every
style.  The rows are written as the worksheet's XML, a string a row, to a file of their own, and
put into openpyxl's worksheet once it is saved (``_SheetBody``).  Through openpyxl each cell was an
object, its style filed by hashing it and its XML written element by element, and each row was
read as whole ORM objects: a ledger of 20,000 rows took three times as long as it now does
(``bench/ledger_export.py``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import IO, Any, NamedTuple

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
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
from shared.xlsx import UNSAFE_START, print_to_page_width, row_height

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
# The heading takes rows 1 to 3; the matters start on row 4.
_FIRST_ROW = 4
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


class LedgerSource(NamedTuple):
    """What a row of the ledger is made of, read as columns: its task and its matter."""

    task_id: str
    case_id: str
    case_kind: str
    team_code: str
    team_name: str
    status: str
    tracking_code: str | None
    title: str | None
    county_code: str | None
    received_at: datetime
    allegations: list[dict[str, Any]]


# In ``LedgerSource``'s order.  Not the whole rows: a task's clocks and a matter's account of
# events, officers and place, parsed for every row, were a quarter of the export's time.
SOURCE_COLUMNS: list[Any] = [
    col(Task.id),
    col(Task.case_id),
    col(Task.case_kind),
    col(Task.team_code),
    col(Task.team_name),
    col(Task.status),
    col(MatterSnapshot.tracking_code),
    col(MatterSnapshot.title),
    col(MatterSnapshot.county_code),
    col(MatterSnapshot.received_at),
    col(MatterSnapshot.allegations),
]


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
        select(*SOURCE_COLUMNS)
        .select_from(entries)
        .join(Task, col(Task.id) == entries.c.task_id)
        .join(MatterSnapshot, col(MatterSnapshot.case_id) == entries.c.case_id)
        .order_by(entries.c.received_at, entries.c.case_id)
    )
    workbook = Workbook(write_only=True)
    sheet: Any = workbook.create_sheet("长期未办结事项台账")
    _heading(sheet, ctx=ctx, filters=filter_labels(ctx, filters), total=total)
    body = _SheetBody(sheet, directory=os.path.dirname(path) or None)
    try:
        stream = await session.stream(query.execution_options(yield_per=BATCH_ROWS))
        async for batch in stream.partitions(BATCH_ROWS):
            found = [LedgerSource(*columns) for columns in batch]
            for row in await ledger_rows_of(session=session, ctx=ctx, found=found):
                number = body.rows + 1
                body.add(
                    _values(number, row, organisation=ctx.organisation, ctx=ctx), worst_step=row.worst_step
                )
        last_row = _FIRST_ROW - 1 + body.rows
        sheet.auto_filter.ref = f"A{_FIRST_ROW - 1}:{get_column_letter(len(LEDGER_COLUMNS))}{last_row}"
        workbook.save(path)
        body.splice_into(path)
    finally:
        body.discard()
    return body.rows


async def ledger_rows_of(
    *, session: AsyncSession, ctx: VerificationContext, found: Sequence[LedgerSource]
) -> list[LedgerRow]:
    """The rows ``ledger.ledger_rows`` makes of the same tasks, from their columns, without
    ``pending`` (the workbook does not show it): clocks (``ledger.clock_states_of``) and marks
    read in one query each."""
    now = ctx.clock.now()
    clocks = await ledger.clock_states_of(session=session, ctx=ctx, task_ids=[s.task_id for s in found])
    marks = await ledger.marks_of(session, (s.case_id for s in found))
    rows = []
    for source in found:
        task_clocks = clocks.get(source.task_id, [])
        # Not validated again: the columns are the model's own, and the clocks ``ClockState``s.
        rows.append(
            LedgerRow.model_construct(
                case_id=source.case_id,
                tracking_code=source.tracking_code,
                title=source.title,
                case_kind=source.case_kind,
                county_code=source.county_code,
                categories=ledger.categories_of(source.allegations),
                task_id=source.task_id,
                team_code=source.team_code,
                team_name=source.team_name,
                status=source.status,
                received_at=source.received_at,
                age_days=(now - source.received_at).days,
                clocks=task_clocks,
                worst_step=ledger.worst_step(task_clocks),
                marks=marks[source.case_id],
                pending=[],
            )
        )
    return rows


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
    print_to_page_width(sheet, title_rows="3:3")
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


class _SheetBody:
    """The ledger's rows as the worksheet's XML, on a temporary file, until they go into the
    workbook openpyxl saved with the heading alone (``splice_into``).

    The cells are those openpyxl would write, a string at a time: text inline (``inlineStr``),
    so never a formula or an error value whatever it starts with, and with quotePrefix when it
    starts with = + - @, which keeps Excel from reading it as a formula once the cell is edited
    (``shared.xlsx``); numbers as numbers; every cell bordered and aligned to the top, text
    wrapped, the worst step's cell filled in its colour.  The styles are registered with the
    workbook here, so that openpyxl writes them with its own.
    """

    def __init__(self, sheet: Any, *, directory: str | None) -> None:
        self.rows = 0
        self._sheet = sheet
        handle, self._path = tempfile.mkstemp(prefix="ledger-rows-", suffix=".xml", dir=directory)
        self._file: IO[str] = os.fdopen(handle, "w", encoding="utf-8")
        self._letters = [get_column_letter(c) for c in range(1, len(LEDGER_COLUMNS) + 1)]
        self._widths = [width for _, width in LEDGER_COLUMNS]
        self._plain = _style_id(sheet)
        self._by_step = {step: _style_id(sheet, fill) for step, fill in _STEP_FILLS.items()}
        # Each of them with quotePrefix, for the text that starts with = + - @.
        self._quoted = {self._plain: _style_id(sheet, quoted=True)} | {
            self._by_step[step]: _style_id(sheet, fill, quoted=True) for step, fill in _STEP_FILLS.items()
        }

    def add(self, values: Sequence[int | str], *, worst_step: str | None) -> None:
        self.rows += 1
        number = _FIRST_ROW - 1 + self.rows
        height = row_height(values, self._widths)
        parts = [f'<row r="{number}" ht="{height:g}" customHeight="1">' if height else f'<row r="{number}">']
        for column, (letter, value) in enumerate(zip(self._letters, values, strict=True), start=1):
            style = self._plain
            if column == _WORST_STEP_COLUMN and worst_step in self._by_step:
                style = self._by_step[worst_step]
            parts.append(self._cell(f"{letter}{number}", value, style))
        parts.append("</row>")
        self._file.write("".join(parts))

    def _cell(self, ref: str, value: int | str, style: int) -> str:
        if isinstance(value, int):
            return f'<c r="{ref}" s="{style}"><v>{value}</v></c>'
        if value == "":
            return f'<c r="{ref}" s="{style}"/>'
        # As openpyxl takes text: at most 32,767 characters, no control characters but tab and
        # line breaks (which it refuses, and XML cannot hold; intake refuses them on the way in).
        text = ILLEGAL_CHARACTERS_RE.sub("", value[:32767])
        if text.startswith(UNSAFE_START):
            style = self._quoted[style]
        space = ' xml:space="preserve"' if text != text.strip() else ""
        if "&" in text or "<" in text or ">" in text:
            text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return f'<c r="{ref}" s="{style}" t="inlineStr"><is><t{space}>{text}</t></is></c>'

    def splice_into(self, path: str) -> None:
        """Put the rows into the worksheet of the workbook saved at ``path``, after its heading."""
        self._file.close()
        # Named once saved: openpyxl numbers the worksheets as it writes them.
        member = str(self._sheet.path).lstrip("/")
        handle, spliced = tempfile.mkstemp(
            prefix="ledger-", suffix=".xlsx", dir=os.path.dirname(path) or None
        )
        os.close(handle)
        try:
            with (
                zipfile.ZipFile(path) as saved,
                zipfile.ZipFile(spliced, "w", compression=zipfile.ZIP_DEFLATED) as whole,
            ):
                if member not in saved.namelist():
                    raise RuntimeError(f"no worksheet {member} in the workbook openpyxl wrote")
                for info in saved.infolist():
                    content = saved.read(info)
                    if info.filename != member:
                        whole.writestr(info, content)
                        continue
                    heading, end, tail = content.partition(b"</sheetData>")
                    if not end:
                        raise RuntimeError(f"no </sheetData> in the worksheet openpyxl wrote ({member})")
                    with whole.open(member, "w") as sheet, open(self._path, "rb") as rows:
                        sheet.write(heading)
                        shutil.copyfileobj(rows, sheet, CHUNK_BYTES)
                        sheet.write(end + tail)
            os.replace(spliced, path)
        except BaseException:
            os.unlink(spliced)
            raise

    def discard(self) -> None:
        """Close and remove the rows' file (after ``splice_into``, or on the way out of an error)."""
        self._file.close()
        if os.path.exists(self._path):
            os.unlink(self._path)


def _style_id(sheet: Any, fill: PatternFill | None = None, *, quoted: bool = False) -> int:
    """A body cell's style (bordered, aligned to the top, wrapped), by its number in the workbook:
    asking for it registers it, to be written with openpyxl's own."""
    cell = WriteOnlyCell(sheet)
    cell.border = _BORDER
    cell.alignment = _TOP_WRAP
    if fill is not None:
        cell.fill = fill
    if quoted:
        cell.quotePrefix = True
    return int(cell.style_id)


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
) -> list[int | str]:
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
