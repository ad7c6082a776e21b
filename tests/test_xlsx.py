"""How the workbooks the services hand out open and print (``shared.xlsx``).

Each workbook is saved and read back, so what is checked is what a reader's program gets: the
column widths, the heights of the rows with wrapped text, and the page setup that makes a sheet
print as wide as a landscape A4 page.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook

from shared.xlsx import LINE_POINTS, display_width, fit_to_text, lines_in, print_to_page_width, row_height


def saved_and_read(book: Workbook) -> Any:
    buffer = io.BytesIO()
    book.save(buffer)
    return load_workbook(io.BytesIO(buffer.getvalue())).worksheets[0]


@pytest.mark.parametrize(
    ("text", "width"),
    [("C261120VAF3JN", 13), ("项城市", 6), ("核查办结：2026-11-10", 20), ("", 0), ("（剩3个工作日）", 15)],
)
def test_a_chinese_character_or_full_width_mark_takes_two_columns(text: str, width: float) -> None:
    assert display_width(text) == width


def test_a_cell_takes_a_line_per_width_and_per_line_break() -> None:
    assert lines_in("一" * 29, 59) == 1
    assert lines_in("一" * 30, 59) == 2
    assert lines_in("核查办结：2026-11-10\n告知受理：2026-11-12", 40) == 2
    assert lines_in("", 10) == 1


def test_a_row_is_as_high_as_its_tallest_text() -> None:
    assert row_height(["C1", "一\n二\n三", 3], [10, 10, 10]) == 3 * LINE_POINTS
    assert row_height(["C1", 12345678901234567890, None], [10, 4, 4]) is None


def test_columns_fit_their_text_below_the_caption_and_rows_their_wrapped_text() -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["周口市公安局督察工作通报（2026年11月　全市）"])
    sheet.append(["指标", "件数", "定义"])
    definition = "统计期内受理的事项中，已分派承办并在受理告知时限内告知投诉人的件数占受理总数的比例。" * 2
    sheet.append(["响应率", 7, definition])
    sheet.append(["办结率", 0, "短"])
    fit_to_text(sheet, from_row=2)
    read = saved_and_read(book)

    # The caption runs over the cells beside it; the column is as wide as the measures' names.
    assert read.column_dimensions["A"].width == display_width("响应率") + 2
    assert read.column_dimensions["B"].width == 8  # the least, for numbers and short heads
    assert read.column_dimensions["C"].width == 60  # the most: the definition wraps
    assert read.row_dimensions[3].height == lines_in(definition, 60) * LINE_POINTS > LINE_POINTS
    assert read.row_dimensions[4].height is None
    assert read["C3"].alignment.wrap_text and read["C3"].alignment.vertical == "top"
    # A number in a taller row stays level with the text beside it.
    assert read["B3"].alignment.vertical == "top" and not read["B3"].alignment.wrap_text
    assert read["A1"].alignment.vertical is None


def test_a_sheet_prints_as_wide_as_a_landscape_page_with_its_heads_on_each() -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["序号", "查询码"])
    print_to_page_width(sheet, title_rows="1:1")
    read = saved_and_read(book)
    # fitToWidth alone is ignored by Excel, WPS and LibreOffice: it needs fitToPage.
    assert read.sheet_properties.pageSetUpPr.fitToPage is True
    assert (read.page_setup.fitToWidth, read.page_setup.fitToHeight) == (1, 0)
    assert (read.page_setup.orientation, read.page_setup.paperSize) == ("landscape", 9)
    assert read.print_title_rows == "$1:$1"
