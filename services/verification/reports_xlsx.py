"""The 督察工作通报's tables as an .xlsx: one sheet per section (总体情况, 分组指标, 超期督办 with
督办件和领导包案, 满意度), counts as numbers, rates as numbers formatted as percentages, and no cell ever a formula."""

from __future__ import annotations

import io
from collections.abc import Sequence

from openpyxl import Workbook
from openpyxl.styles import Font, PatternFill

from services.verification.measures import GroupMeasures
from services.verification.reports import ReportContent
from services.verification.reports_docx import RATING_COUNTS
from shared.xlsx import fit_to_text, print_to_page_width, safe_cell

PERCENT = "0.0%"
_HEAD = Font(bold=True, color="FFFFFF")
_HEAD_FILL = PatternFill("solid", fgColor="0F3D86")


class _Rate(float):
    """A rate: written as a number formatted as a percentage."""


def _rate(value: float | None) -> _Rate | None:
    return None if value is None else _Rate(value)


def _sheet(
    workbook: Workbook, title: str, caption: str, headers: Sequence[str], rows: Sequence[Sequence[object]]
) -> None:
    sheet = workbook.create_sheet(title)
    safe_cell(sheet, 1, 1, caption).font = Font(bold=True, size=13)
    for column, header in enumerate(headers, start=1):
        cell = safe_cell(sheet, 2, column, header)
        cell.font, cell.fill = _HEAD, _HEAD_FILL
    for number, values in enumerate(rows, start=3):
        for column, value in enumerate(values, start=1):
            cell = safe_cell(sheet, number, column, float(value) if isinstance(value, _Rate) else value)
            if isinstance(value, _Rate):
                cell.number_format = PERCENT
    # Fitted below the caption, which runs over the empty cells beside it.
    fit_to_text(sheet, from_row=2)
    sheet.freeze_panes = "B3"
    print_to_page_width(sheet, title_rows="2:2")


def workbook(content: ReportContent) -> bytes:
    book = Workbook()
    default = book.active
    if default is not None:
        book.remove(default)
    heading = f"{content.title}（{content.period.label}　{content.scope_name}）"
    definitions = content.measures.definitions
    counts, rates = content.total.counts, content.total.rates
    overall: list[list[object]] = [
        ["受理", counts.get("received", 0), None, None, ""],
        ["办结", counts.get("concluded", 0), None, None, ""],
    ]
    overall += [
        [
            d.name,
            counts.get(d.numerator, 0),
            counts.get(d.denominator, 0),
            _rate(rates.get(d.key)),
            d.definition,
        ]
        for d in definitions
    ]
    _sheet(book, "总体情况", heading, ["指标", "件数/分子", "分母", "比率", "定义"], overall)
    groups: list[GroupMeasures] = [*content.measures.groups, content.total]
    _sheet(
        book,
        "分组指标",
        heading,
        ["单位", "受理", "办结", *[d.name for d in definitions]],
        [
            [g.name, g.counts.get("received", 0), g.counts.get("concluded", 0)]
            + [_rate(g.rates.get(d.key)) for d in definitions]
            for g in groups
        ],
    )
    _supervision_sheet(book, content, heading)
    _sheet(
        book,
        "满意度",
        heading,
        ["单位", "评价", *[label for _, label in RATING_COUNTS], "满意率"],
        [
            [
                g.name,
                g.counts.get("rated", 0),
                *[g.counts.get(key, 0) for key, _ in RATING_COUNTS],
                _rate(g.rates.get("satisfaction_rate")),
            ]
            for g in groups
        ],
    )
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _supervision_sheet(book: Workbook, content: ReportContent, heading: str) -> None:
    days = content.long_pending_days
    rows: list[list[object]] = [
        [
            g.name,
            *[g.overdue.get(s, 0) for s in content.step_labels],
            g.overdue_total,
            g.long_pending,
            g.supervised,
            g.leader_assigned,
        ]
        for g in [*content.supervision, content.supervision_total]
    ]
    _sheet(
        book,
        "超期督办",
        heading,
        ["单位", *content.step_labels.values(), "超期合计", f"受理超{days}日未结", "督办件", "领导包案"],
        rows,
    )
    # The marked matters on a sheet of their own: their long titles would widen the columns above.
    _sheet(
        book,
        "督办件和领导包案",
        heading,
        ["查询码", "事项", "县（市、区）", "标记", "包案领导", "标记日期"],
        [
            [m.tracking_code, m.title, m.group, m.mark, m.leader, m.marked_on.isoformat()]
            for m in content.marked
        ],
    )
