"""Annotated types for request fields, shared by the four services.

Each type refuses what the database or the people reading the record later would
choke on: paging numbers the database cannot hold, control characters that
PostgreSQL refuses (NUL) or that hide text on a page, codes that are not codes.
The refusals are ordinary 422 field errors (``shared.errors`` words them in Chinese).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

# Paging: far beyond any real list, well inside a 64-bit integer (an offset of 2**63 overflowed).
MAX_OFFSET = 1_000_000
MAX_LIMIT = 500

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows to return at most")]

# C0 controls, DEL and C1 controls; multi-line text keeps tab, line feed and carriage return.
# Lone surrogates cannot be stored as UTF-8 either, so they are refused with the controls.
_CONTROL_IN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")

CONTROL_CHARACTERS = "control_characters"


def _refuse(pattern: re.Pattern[str], value: str) -> str:
    found = pattern.search(value)
    if found is not None:
        raise PydanticCustomError(
            CONTROL_CHARACTERS,
            "contains the control character U+{code} at position {position}",
            {"code": f"{ord(found.group()):04X}", "position": found.start() + 1},
        )
    return value


def no_control_in_line(value: str) -> str:
    """Refuse every control character: names, accounts, codes, one-line fields."""
    return _refuse(_CONTROL_IN_LINE, value)


def no_control_in_text(value: str) -> str:
    """Refuse control characters but tab and line breaks: statements, notes, reasons."""
    return _refuse(_CONTROL_IN_TEXT, value)


# One line of text: a name, an account, a number, a unit.
Line = Annotated[str, AfterValidator(no_control_in_line)]
# Text a person may break into lines: an account of events, a reason, a note.
Text = Annotated[str, AfterValidator(no_control_in_text)]

# Team and unit codes as the organisation data spells them (411600, 411600-DC, 411681-A1).
CODE_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
# Rule names as the bundled rules spell them (key_clue_serious).
RULE_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_RULE_PRIORITY = 10_000

Code = Annotated[str, Field(pattern=CODE_PATTERN)]
CodePath = Annotated[str, Path(pattern=CODE_PATTERN, description="team or unit code")]
RuleNamePath = Annotated[str, Path(pattern=RULE_NAME_PATTERN, description="rule name")]
Priority = Annotated[int, Field(ge=0, le=MAX_RULE_PRIORITY, description="lower runs first")]


class RequestBody(BaseModel):
    """A request body: a field the API does not know is refused (422), not silently dropped."""

    model_config = ConfigDict(extra="forbid")
