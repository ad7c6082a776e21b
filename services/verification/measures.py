"""The measures 12345 platforms and their assessments use (考核指标), named as they name them.

Each measure is a numerator over a denominator, both counts of the matters received in the period
(Asia/Shanghai dates, inclusive), per county or per team (the team the matter sits with at the
time of reading), as aggregates in SQL.  The texts, the clock that times the acceptance notice and
which ratings please are data (``shared/data/measures.json``): a bureau changes them.

- 响应率: accepted (a task made) and the complainant told within the acceptance clock
  (``AcceptanceNoticeDelivered`` stops that clock); an anonymous complaint or a suggestion, with
  nobody to tell by that clock, counts as responded once accepted.
- 办结率 and 按期办结率: the matter's latest task concluded by the period's end; on time when no
  main clock of that task was due before the conclusion (an approved extension moves the due date).
- 解决率: concluded and either rated 满意/基本满意 or never reopened (no rating 不满意, no second round).
- 满意率: the ratings given by the period's end to those matters' answers.
- 属实率: the latest task's first finding, over complaints with a finding other than 无法查实.
- 重复投诉率: repeat calls linked to an open matter (重复件) received in the period, over the
  complaints received (the matters and the repeat calls), for the group of the matter repeated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, literal, or_
from sqlalchemy import select as sa_select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.context import VerificationContext
from services.verification.models import RepeatCall, TaskStatus
from services.verification.stats import (
    CLOCK,
    FINDING,
    MATTER,
    RATING,
    TASK,
    UNASSIGNED,
    before,
    concluded_on_time,
    first_finding_of_task,
    group_key,
    group_name,
    in_county,
    latest_task_of_matter,
    rows_of,
    substantiation_counts,
)
from shared.db import UTCDateTime, table_of
from shared.reference import DATA_DIR
from shared.states import CaseKind

DEFAULT_MEASURES_FILE = DATA_DIR / "measures.json"
REPEAT = table_of(RepeatCall)
COUNT_KEYS = (
    "received",
    "responded_on_time",
    "concluded",
    "concluded_on_time",
    "rated",
    "satisfied",
    "basically_satisfied",
    "dissatisfied",
    "pleased",
    "resolved",
    "with_outcome",
    "substantiated",
    "complaints",
    "repeats",
)
# The rating values behind the counts of the same names (feedback's Rating).
RATING_COUNTS = {"satisfied": "satisfied", "basically_satisfied": "basically_satisfied"}
DISSATISFIED = "unsatisfied"


@dataclass(frozen=True)
class MeasureDefinition:
    key: str
    name: str
    definition: str
    numerator: str
    denominator: str


@dataclass
class GroupMeasures:
    code: str
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    rates: dict[str, float | None] = field(default_factory=dict)


@dataclass
class MeasuresReport:
    start: date
    end: date
    by: str
    county: str | None
    definitions: list[MeasureDefinition]
    groups: list[GroupMeasures]
    total: GroupMeasures


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


def period_bounds(*, start: date, end: date, ctx: VerificationContext) -> tuple[datetime, datetime]:
    """The period as [first moment, first moment after) in the bureau's time zone."""
    tz = ctx.calendar.tz
    return datetime.combine(start, time(), tz), datetime.combine(end + timedelta(days=1), time(), tz)


async def measures(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    start: date,
    end: date,
    by: str = "county",
    county: str | None = None,
) -> MeasuresReport:
    """The measures per county (``by="county"``) or team for the matters received from ``start`` to
    ``end`` (inclusive, local dates); with ``county``, only that county's matters (a leader's view)."""
    settings = load_settings()
    first, after = period_bounds(start=start, end=end, ctx=ctx)
    counts: dict[str, dict[str, int]] = {}

    def group(code: str | None) -> dict[str, int]:
        return counts.setdefault(code or UNASSIGNED, dict.fromkeys(COUNT_KEYS, 0))

    for code, *values in await rows_of(session, _cohort_query(settings, by, first, after, county), seek=True):
        row = group(code)
        for name, value in zip(_COHORT_COUNTS, values, strict=True):
            row[name] += value or 0
    for code, rating, count in await rows_of(session, _ratings_query(by, first, after, county), seek=True):
        row = group(code)
        row["rated"] += count
        row["pleased"] += count if rating in settings.pleased_ratings else 0
        row["dissatisfied"] += count if rating == DISSATISFIED else 0
        for name, value in RATING_COUNTS.items():
            row[name] += count if rating == value else 0
    for code, count in await rows_of(session, _repeats_query(by, first, after, county), seek=True):
        row = group(code)
        row["repeats"] += count
        row["complaints"] += count
    groups = [
        _measured(code, group_name(ctx.organisation, None if code == UNASSIGNED else code, by=by), values)
        for code, values in sorted(counts.items(), key=lambda item: (item[0] == UNASSIGNED, item[0]))
    ]
    totals = {name: sum(g.counts[name] for g in groups) for name in COUNT_KEYS}
    total_name = group_name(ctx.organisation, county, by="county") if county else "全市"
    return MeasuresReport(
        start=start,
        end=end,
        by=by,
        county=county,
        definitions=list(settings.definitions),
        groups=groups,
        total=_measured("total", total_name, totals),
    )


def _measured(code: str, name: str, counts: dict[str, int]) -> GroupMeasures:
    rates: dict[str, float | None] = {}
    for definition in load_settings().definitions:
        denominator = counts.get(definition.denominator, 0)
        rates[definition.key] = counts.get(definition.numerator, 0) / denominator if denominator else None
    return GroupMeasures(code=code, name=name, counts=counts, rates=rates)


_COHORT_COUNTS = (
    "received",
    "complaints",
    "responded_on_time",
    "concluded",
    "concluded_on_time",
    "with_outcome",
    "substantiated",
    "resolved",
)


def _told_in_time(settings: MeasureSettings) -> ColumnElement[bool]:
    """The complainant told within the acceptance clock, or nobody to tell by it."""
    told = exists().where(
        CLOCK.c.case_id == MATTER.c.case_id,
        CLOCK.c.name == settings.acceptance_clock,
        CLOCK.c.stopped_at.is_not(None),
        CLOCK.c.stopped_at <= CLOCK.c.due_at,
    )
    return or_(MATTER.c.anonymous, MATTER.c.case_kind != CaseKind.COMPLAINT, told)


def _reopened(settings: MeasureSettings) -> ColumnElement[bool]:
    later_round = TASK.alias("later_round")
    return or_(
        exists().where(later_round.c.case_id == MATTER.c.case_id, later_round.c.round > 1),
        exists().where(RATING.c.case_id == MATTER.c.case_id, RATING.c.rating.in_(settings.reopening_ratings)),
    )


def _cohort_query(
    settings: MeasureSettings, by: str, first: datetime, after: datetime, county: str | None
) -> Any:
    key = group_key(by)
    concluded = and_(TASK.c.status == TaskStatus.CONCLUDED, before(TASK.c.concluded_at, after))
    pleased = exists().where(
        RATING.c.case_id == MATTER.c.case_id,
        RATING.c.rating.in_(settings.pleased_ratings),
        before(RATING.c.at, after),
    )
    with_outcome, substantiated = substantiation_counts(MATTER.c.case_kind)

    def count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.sum(case((condition, 1), else_=0))

    return (
        sa_select(
            key,
            func.count(),
            count(MATTER.c.case_kind == CaseKind.COMPLAINT),
            count(and_(TASK.c.id.is_not(None), _told_in_time(settings))),
            count(concluded),
            count(and_(concluded, concluded_on_time())),
            # The finding is joined only to a task concluded by the period's end.
            with_outcome,
            substantiated,
            count(and_(concluded, or_(pleased, ~_reopened(settings)))),
        )
        .select_from(
            MATTER.outerjoin(TASK, latest_task_of_matter()).outerjoin(
                FINDING, and_(first_finding_of_task(), concluded)
            )
        )
        .where(MATTER.c.received_at >= literal(first, UTCDateTime), before(MATTER.c.received_at, after))
        .where(*in_county(county))
        .group_by(key)
    )


def _ratings_query(by: str, first: datetime, after: datetime, county: str | None) -> Any:
    key = group_key(by)
    return (
        sa_select(key, RATING.c.rating, func.count())
        .select_from(
            RATING.join(MATTER, MATTER.c.case_id == RATING.c.case_id).outerjoin(TASK, latest_task_of_matter())
        )
        .where(
            MATTER.c.received_at >= literal(first, UTCDateTime),
            before(MATTER.c.received_at, after),
            before(RATING.c.at, after),
            *in_county(county),
        )
        .group_by(key, RATING.c.rating)
    )


def _repeats_query(by: str, first: datetime, after: datetime, county: str | None) -> Any:
    key = group_key(by)
    return (
        sa_select(key, func.count())
        .select_from(
            REPEAT.join(MATTER, MATTER.c.case_id == REPEAT.c.case_id).outerjoin(TASK, latest_task_of_matter())
        )
        .where(
            REPEAT.c.received_at >= literal(first, UTCDateTime),
            before(REPEAT.c.received_at, after),
            *in_county(county),
        )
        .group_by(key)
    )
