"""Writing a cell of an exported workbook so that it never becomes a formula.

A string is stored as text whatever it starts with; ``quotePrefix`` keeps Excel from reading one
that starts with = + - @ as a formula when the cell is edited.  Numbers stay numbers.
"""

from __future__ import annotations

from typing import Any

UNSAFE_START = ("=", "+", "-", "@")


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
