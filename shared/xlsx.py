"""Cells and pages of the workbooks the services hand out, as a reader opens and prints them.

A string is stored as text whatever it starts with; ``quotePrefix`` keeps Excel from reading one
that starts with = + - @ as a formula when the cell is edited.  Numbers stay numbers.

Neither Excel, WPS nor LibreOffice reliably makes a row taller for the wrapped text a program
wrote into it (LibreOffice, opened here, kept every row one line high and printed the lines of a
cell over the rows below), so a row that needs more lines says how high it is.  A sheet prints
landscape on A4, as wide as the page, however many pages long.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from openpyxl.styles import Alignment
from openpyxl.utils import get_column_letter

UNSAFE_START = ("=", "+", "-", "@")

# One line of the default 11-point font, in points.
LINE_POINTS = 15.0


def safe_cell(sheet: Any, row: int, column: int, value: Any) -> Any:
    """Writes ``value`` at (row, column) as a number or as text, never a formula; returns the cell."""
    cell = sheet.cell(row=row, column=column)
    if value is None:
        return cell
    if isinstance(value, int | float) and not isinstance(value, bool):
        cell.value = value
        return cell
    text = str(value)
    cell.value = text
    cell.data_type = "s"
    if text.startswith(UNSAFE_START):
        cell.quotePrefix = True
    return cell


def display_width(text: str) -> float:
    """The width of ``text`` in column units (the width of a digit): a Chinese character or a
    full-width mark takes two.  Counted from the UTF-8 length (such characters take three bytes,
    ASCII one), which a year's ledger can afford for every cell."""
    return len(text) + (len(text.encode()) - len(text)) / 2


def lines_in(text: str, width: float) -> int:
    """How many lines ``text`` takes in a wrapped cell of ``width`` column units."""
    usable = max(width - 1.0, 1.0)
    return sum(max(1, math.ceil(display_width(part) / usable)) for part in text.split("\n"))


def row_height(values: Sequence[Any], widths: Sequence[float]) -> float | None:
    """The height in points a row of wrapped cells needs, or None when one line is enough."""
    lines = 1
    for value, width in zip(values, widths, strict=True):
        # Most cells are short: one that fits even at two columns a character is not measured.
        if isinstance(value, str) and ("\n" in value or 2 * len(value) > width - 1):
            lines = max(lines, lines_in(value, width))
    return LINE_POINTS * lines if lines > 1 else None


def fit_to_text(sheet: Any, *, from_row: int = 1, most: float = 60.0) -> None:
    """Each column as wide as its longest line from ``from_row`` down (a title above may run
    over), up to ``most`` past which the text wraps; each row as high as its wrapped text."""
    longest: dict[int, float] = {}
    for row in sheet.iter_rows(min_row=from_row):
        for cell in row:
            if cell.value is not None:
                width = max(display_width(line) for line in str(cell.value).split("\n"))
                longest[cell.column] = max(longest.get(cell.column, 0.0), width)
    widths = {column: min(max(width + 2, 8.0), most) for column, width in longest.items()}
    for column, width in widths.items():
        sheet.column_dimensions[get_column_letter(column)].width = width
    for row in sheet.iter_rows(min_row=from_row):
        texts = [cell for cell in row if isinstance(cell.value, str)]
        # At the top, numbers too: in a row made taller for a text they would sit at its foot.
        for cell in row:
            if cell.value is not None:
                cell.alignment = Alignment(
                    horizontal=cell.alignment.horizontal,
                    vertical="top",
                    wrap_text=isinstance(cell.value, str),
                )
        height = row_height([cell.value for cell in texts], [widths[cell.column] for cell in texts])
        if height:
            sheet.row_dimensions[row[0].row].height = height


def print_to_page_width(sheet: Any, *, title_rows: str | None = None) -> None:
    """Landscape A4, every column on the page (as many pages down as needed), the column heads
    (``title_rows``, e.g. "3:3") repeated on each page."""
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.paperSize = "9"  # A4
    sheet.page_setup.fitToWidth = 1
    # 0: as many pages down as the rows take.  Without fitToPage both are ignored.
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr.fitToPage = True
    if title_rows:
        sheet.print_title_rows = title_rows
