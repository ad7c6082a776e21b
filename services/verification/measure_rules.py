"""What a bureau configures of the 12345 measures (``shared/data/measures.json``), and the two
conditions those settings take part in, shared by the measures read from the tables (``measures``)
and the rows kept for them (``measure_facts``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sqlalchemy import ColumnElement, exists, or_

from services.verification.stats import CLOCK, MATTER, RATING, TASK
from shared.reference import DATA_DIR
from shared.states import CaseKind

DEFAULT_MEASURES_FILE = DATA_DIR / "measures.json"


@dataclass(frozen=True)
class MeasureDefinition:
    key: str
    name: str
    definition: str
    numerator: str
    denominator: str


@dataclass(frozen=True)
class MeasureSettings:
    """What a bureau changes: the texts, the acceptance clock, which ratings please or reopen."""

    definitions: tuple[MeasureDefinition, ...]
    acceptance_clock: str
    pleased_ratings: tuple[str, ...]
    reopening_ratings: tuple[str, ...]


@cache
def load_settings(path: Path = DEFAULT_MEASURES_FILE) -> MeasureSettings:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return MeasureSettings(
        definitions=tuple(MeasureDefinition(**item) for item in data["measures"]),
        acceptance_clock=data["acceptance_clock"],
        pleased_ratings=tuple(data["pleased_ratings"]),
        reopening_ratings=tuple(data["reopening_ratings"]),
    )


def definitions() -> list[MeasureDefinition]:
    return list(load_settings().definitions)


def told_in_time(settings: MeasureSettings) -> ColumnElement[bool]:
    """The complainant told within the acceptance clock, or nobody to tell by it."""
    told = exists().where(
        CLOCK.c.case_id == MATTER.c.case_id,
        CLOCK.c.name == settings.acceptance_clock,
        CLOCK.c.stopped_at.is_not(None),
        CLOCK.c.stopped_at <= CLOCK.c.due_at,
    )
    return or_(MATTER.c.anonymous, MATTER.c.case_kind != CaseKind.COMPLAINT, told)


def reopened(settings: MeasureSettings) -> ColumnElement[bool]:
    later_round = TASK.alias("later_round")
    return or_(
        exists().where(later_round.c.case_id == MATTER.c.case_id, later_round.c.round > 1),
        exists().where(RATING.c.case_id == MATTER.c.case_id, RATING.c.rating.in_(settings.reopening_ratings)),
    )
