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

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, literal, or_
from sqlalchemy import select as sa_select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification import measure_facts
from services.verification.context import VerificationContext
from services.verification.measure_facts import FACT, RATING_FACT
from services.verification.measure_rules import (
    MeasureDefinition,
    MeasureSettings,
    load_settings,
    reopened,
    told_in_time,
)
from services.verification.models import RepeatCall, TaskStatus
from services.verification.stats import (
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
from shared.states import CaseKind

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
    from_tables: bool = False,
) -> MeasuresReport:
    """The measures per county (``by="county"``) or team for the matters received from ``start`` to
    ``end`` (inclusive, local dates); with ``county``, only that county's matters (a leader's view).

    Read from the kept rows (``measure_facts``) once they are complete for the running settings,
    else, or with ``from_tables`` (a check of the rows), from the tables."""
    settings = load_settings()
    first, after = period_bounds(start=start, end=end, ctx=ctx)
    counts: dict[str, dict[str, int]] = {}

    def group(code: str | None) -> dict[str, int]:
        return counts.setdefault(code or UNASSIGNED, dict.fromkeys(COUNT_KEYS, 0))

    kept = not from_tables and await measure_facts.ready(session, settings)
    queries = _fact_queries if kept else _table_queries
    cohort, ratings, repeats = queries(settings, by, first, after, county)
    # From the tables, the joins go by index lookups from the period's matters (``rows_of``).
    for code, *values in await rows_of(session, cohort, seek=not kept):
        row = group(code)
        for name, value in zip(_COHORT_COUNTS, values, strict=True):
            row[name] += value or 0
    for code, rating, count in await rows_of(session, ratings, seek=not kept):
        row = group(code)
        row["rated"] += count
        row["pleased"] += count if rating in settings.pleased_ratings else 0
        row["dissatisfied"] += count if rating == DISSATISFIED else 0
        for name, value in RATING_COUNTS.items():
            row[name] += count if rating == value else 0
    for code, count in await rows_of(session, repeats, seek=not kept):
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


def _table_queries(
    settings: MeasureSettings, by: str, first: datetime, after: datetime, county: str | None
) -> tuple[Any, Any, Any]:
    """The measures' three queries read from the tables: the definition the kept rows follow."""
    return (
        _cohort_query(settings, by, first, after, county),
        _ratings_query(by, first, after, county),
        _repeats_query(by, first, after, county),
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
            count(and_(TASK.c.id.is_not(None), told_in_time(settings))),
            count(concluded),
            count(and_(concluded, concluded_on_time())),
            # The finding is joined only to a task concluded by the period's end.
            with_outcome,
            substantiated,
            count(and_(concluded, or_(pleased, ~reopened(settings)))),
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


# --- From the kept rows (``measure_facts``) ----------------------------------------------------


def _fact_key(table: Any, by: str) -> ColumnElement[Any]:
    """``group_key`` on a kept row: its county (a suggestion, which has none, where its team sits) or
    its team."""
    if by == "team":
        key: ColumnElement[Any] = table.c.team_code
        return key
    return func.coalesce(func.nullif(table.c.county_code, ""), table.c.team_code)


def _fact_queries(
    settings: MeasureSettings, by: str, first: datetime, after: datetime, county: str | None
) -> tuple[Any, Any, Any]:
    """The measures' three queries over the kept rows: the matters' and ratings' index ranges."""
    key = _fact_key(FACT, by)
    concluded = before(FACT.c.concluded_at, after)
    pleased = before(FACT.c.pleased_at, after)

    def count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.sum(case((condition, 1), else_=0))

    def in_period(table: Any) -> list[ColumnElement[bool]]:
        conditions = [table.c.received_at >= literal(first, UTCDateTime), before(table.c.received_at, after)]
        return conditions + ([table.c.county_code == county] if county else [])

    cohort = (
        sa_select(
            key,
            func.count(),
            count(FACT.c.complaint),
            count(FACT.c.responded),
            count(concluded),
            count(and_(concluded, FACT.c.on_time)),
            count(and_(concluded, FACT.c.with_outcome)),
            count(and_(concluded, FACT.c.substantiated)),
            count(and_(concluded, or_(pleased, ~FACT.c.reopened))),
        )
        .where(*in_period(FACT))
        .group_by(key)
    )
    rating_key = _fact_key(RATING_FACT, by)
    ratings = (
        sa_select(rating_key, RATING_FACT.c.rating, func.count())
        .where(*in_period(RATING_FACT), before(RATING_FACT.c.at, after))
        .group_by(rating_key, RATING_FACT.c.rating)
    )
    repeats = (
        sa_select(key, func.count())
        .select_from(REPEAT.join(FACT, FACT.c.case_id == REPEAT.c.case_id))
        .where(
            REPEAT.c.received_at >= literal(first, UTCDateTime),
            before(REPEAT.c.received_at, after),
            *([FACT.c.county_code == county] if county else []),
        )
        .group_by(key)
    )
    return cohort, ratings, repeats
