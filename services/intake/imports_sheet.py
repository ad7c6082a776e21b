"""The spreadsheets of a bulk import: reading a transfer list (.xlsx), the template, the report.

Reading refuses a whole file that is not what it claims (not an .xlsx by its content, too
large, empty, without the columns a complaint needs, or with a formula anywhere): nothing of it
is stored.  Rows that are merely wrong are the row's problem, judged later by the same rules as
the form.  Writing never lets a cell become a formula: every value is written as text.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from openpyxl import Workbook, load_workbook
from openpyxl.styles import Font, PatternFill

from shared.errors import FieldProblems
from shared.xlsx import fit_to_text, print_to_page_width, safe_cell

# The columns of the template, in its order: (key, header).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("platform_ticket_no", "平台工单号"),
    ("channel", "来源平台"),
    ("received_at", "受理时间"),
    ("name", "投诉人姓名"),
    ("phone", "联系电话"),
    ("id_number", "身份证号码"),
    ("anonymous", "是否匿名"),
    ("unit", "被投诉单位"),
    ("county", "所属县（市、区）"),
    ("officer_name", "被投诉民警"),
    ("badge_no", "警号"),
    ("category", "投诉类别"),
    ("incident_at", "事发时间"),
    ("place", "事发地点"),
    ("account", "事情经过"),
)
HEADERS = {key: header for key, header in COLUMNS}

# Other names transfer lists give the same columns (compared without spaces, brackets made full-width).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "platform_ticket_no": ("工单编号", "工单号", "平台编号", "转办单号", "工单编码", "平台工单编号"),
    "channel": ("来源", "来源渠道", "渠道", "平台", "来源平台名称"),
    "received_at": ("来电时间", "受理日期", "登记时间", "转办时间", "来件时间"),
    "name": ("姓名", "投诉人", "来电人", "来电人姓名", "反映人", "诉求人"),
    "phone": ("手机号", "手机号码", "电话", "联系方式", "来电号码", "电话号码"),
    "id_number": ("身份证号", "证件号码"),
    "anonymous": ("匿名",),
    "unit": ("被举报单位", "被反映单位", "涉及单位", "被投诉单位名称"),
    "county": ("县（市、区）", "区县", "县市区", "所属区县", "所属地区", "县区"),
    "officer_name": ("被投诉人", "涉及民警", "被举报人", "被反映人", "民警姓名"),
    "badge_no": ("民警警号", "被投诉民警警号"),
    "category": ("问题类别", "类别", "问题分类", "诉求类别", "投诉类型"),
    "incident_at": ("发生时间", "事发日期"),
    "place": ("地点", "发生地点"),
    "account": ("诉求内容", "投诉内容", "反映内容", "内容", "问题描述", "具体内容"),
}
REQUIRED = ("platform_ticket_no", "unit", "category", "account")

# A zip that inflates past this many times the limit is no transfer list (a "zip bomb").
_INFLATE_FACTOR = 20
_XLSX_MAGIC = b"PK\x03\x04"
_FORMULA_START = "="


def _normalise(header: str) -> str:
    text = "".join(header.split()).replace("(", "（").replace(")", "）").replace(",", "、")
    return text.strip("*＊:：")


_LOOKUP = {_normalise(header): key for key, header in COLUMNS}
for _key, _names in SYNONYMS.items():
    for _name in _names:
        _LOOKUP.setdefault(_normalise(_name), _key)


@dataclass(frozen=True)
class SheetRow:
    """One data row: its number in the sheet and its cells by column key, as text."""

    row: int
    cells: dict[str, str]


def _refuse(chinese: str, english: str, status_code: int = 422) -> FieldProblems:
    return FieldProblems([("file", chinese, english)], status_code=status_code)


def check_upload(data: bytes, *, max_bytes: int) -> None:
    """Refuse what is plainly no transfer list, before opening it."""
    if not data:
        raise _refuse("文件为空，请选择填好的 Excel 文件（.xlsx）", "the file is empty")
    if len(data) > max_bytes:
        raise _refuse(
            f"文件过大：最多 {max_bytes / (1024 * 1024):g} MB，请分成几个文件导入",
            f"the file is larger than {max_bytes} bytes",
            status_code=413,
        )
    if not data.startswith(_XLSX_MAGIC):
        raise _refuse(_WRONG_TYPE, "not an .xlsx workbook")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            inflated = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise _refuse(_WRONG_TYPE, "not an .xlsx workbook") from None
    if "xl/workbook.xml" not in names:
        raise _refuse(_WRONG_TYPE, "a zip file, but no .xlsx workbook")
    if inflated > max_bytes * _INFLATE_FACTOR:
        raise _refuse("文件内容过大，请分成几个文件导入", "the workbook inflates too far")


_WRONG_TYPE = "文件类型不正确：请上传 Excel 工作簿（.xlsx），可先下载导入模板填写"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read_rows(data: bytes, *, max_rows: int) -> list[SheetRow]:
    """The data rows of the first sheet, by column key; refuses the whole file as described above."""
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=False)
    except Exception:  # openpyxl raises many kinds for a damaged file; all mean the same here
        raise _refuse(_WRONG_TYPE, "the workbook cannot be read") from None
    try:
        sheet = workbook.worksheets[0]
        rows = sheet.iter_rows()
        columns, header_row = _header(rows)
        found: list[SheetRow] = []
        for cells in rows:
            row = SheetRow(row=cells[0].row if cells else header_row, cells={})
            for index, cell in enumerate(cells):
                _refuse_formula(cell)
                key = columns.get(index)
                if key is not None:
                    row.cells[key] = _text(cell.value)
            if any(row.cells.values()):
                found.append(row)
                if len(found) > max_rows:
                    raise _refuse(
                        f"行数过多：一次最多导入 {max_rows} 行，请分成几个文件导入",
                        f"more than {max_rows} rows",
                        status_code=413,
                    )
    finally:
        workbook.close()
    if not found:
        raise _refuse("文件中没有数据行：请在表头下方逐行填写", "no data rows below the header")
    return found


def _refuse_formula(cell: Any) -> None:
    value = cell.value
    if cell.data_type == "f" or (isinstance(value, str) and value.lstrip().startswith(_FORMULA_START)):
        where = f"{cell.column_letter}{cell.row}" if hasattr(cell, "column_letter") else f"第{cell.row}行"
        raise _refuse(
            f"单元格 {where} 含公式（以“=”开头）：为防止公式注入，整个文件未导入，请改为纯文本后重新上传",
            f"cell {where} holds a formula; nothing imported",
        )


def _header(rows: Iterable[Sequence[Any]]) -> tuple[dict[int, str], int]:
    """The first non-empty row: which column index holds which key."""
    for cells in rows:
        for cell in cells:
            _refuse_formula(cell)
        names = [_text(cell.value) for cell in cells]
        if not any(names):
            continue
        columns: dict[int, str] = {}
        for index, name in enumerate(names):
            key = _LOOKUP.get(_normalise(name))
            if key is not None and key not in columns.values():
                columns[index] = key
        missing = [HEADERS[key] for key in REQUIRED if key not in columns.values()]
        if missing:
            raise _refuse(
                f"缺少必需的列：{'、'.join(missing)}。请使用导入模板的表头",
                f"missing columns: {', '.join(missing)}",
            )
        return columns, cells[0].row
    raise _refuse("文件中没有数据行：请在表头下方逐行填写", "the sheet is empty")


def _workbook(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = title
    bold = Font(bold=True)
    fill = PatternFill("solid", fgColor="DDEBF7")
    for column, header in enumerate(headers, start=1):
        cell = safe_cell(sheet, 1, column, header)
        cell.font, cell.fill = bold, fill
    for number, values in enumerate(rows, start=2):
        for column, value in enumerate(values, start=1):
            safe_cell(sheet, number, column, value)
    fit_to_text(sheet)
    sheet.freeze_panes = "A2"
    print_to_page_width(sheet, title_rows="1:1")
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def template_xlsx() -> bytes:
    """The import template: one header row, the columns in the order the import expects them."""
    return _workbook("投诉导入", [header for _, header in COLUMNS], [])


REPORT_HEADERS = ("行号", "结果", "平台工单号", "查询码", "问题字段", "说明")


def report_xlsx(items: Iterable[Sequence[Any]]) -> bytes:
    """The per-row report, every text cell written as text."""
    return _workbook("导入结果", REPORT_HEADERS, items)
