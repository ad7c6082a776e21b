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
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, literal, or_
from sqlalchemy import select as sa_select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification import measure_facts
from services.verification.context import VerificationContext
from services.verification.measure_days import DAY, DAY_COUNTERS, RATING_DAY, counts_of
from services.verification.measure_facts import FACT, RATING_FACT, REPEAT_FACT
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


# A period counts as recent while the time since its end is under a quarter of its length: the
# matters concluded since are then fewer than the period's own.
RECENT_SHARE = 4


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
    if kept:
        cohort, ratings = await _kept_cohort_and_ratings(
            session, by=by, start=start, end=end, first=first, after=after, county=county, now=ctx.clock.now()
        )
        repeats = await rows_of(session, _kept_repeats(by, first, after, county))
    else:
        # From the tables, the joins go by index lookups from the period's matters (``rows_of``).
        queries = _table_queries(settings, by, first, after, county)
        cohort, ratings, repeats = [await rows_of(session, query, seek=True) for query in queries]
    for code, *values in cohort:
        row = group(code)
        for name, value in zip(_COHORT_COUNTS, values, strict=True):
            row[name] += value or 0
    for code, rating, count in ratings:
        row = group(code)
        row["rated"] += count
        row["pleased"] += count if rating in settings.pleased_ratings else 0
        row["dissatisfied"] += count if rating == DISSATISFIED else 0
        for name, value in RATING_COUNTS.items():
            row[name] += count if rating == value else 0
    for code, count in repeats:
        row = group(code)
        row["repeats"] += count
        row["complaints"] += count
    # A day's sums keep a group whose matters have all moved on (to another team), at nought.
    counts = {code: values for code, values in counts.items() if any(values.values())}
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


# The cohort's counts, in the order both readings give them.
_COHORT_COUNTS = DAY_COUNTERS


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


# --- From the kept rows (``measure_facts``, ``measure_days``) ---------------------------------


def group_key_of(table: Any, by: str) -> ColumnElement[Any]:
    """``stats.group_key`` on a kept row or a day's sums: the county (a suggestion, which has none,
    where its team sits) or the team; None or "" reads as unassigned."""
    if by == "team":
        key: ColumnElement[Any] = table.c.team_code
        return key
    return func.coalesce(func.nullif(table.c.county_code, ""), table.c.team_code)


async def _kept_cohort_and_ratings(
    session: AsyncSession,
    *,
    by: str,
    start: date,
    end: date,
    first: datetime,
    after: datetime,
    county: str | None,
    now: datetime,
) -> tuple[list[Any], list[Any]]:
    """The measures' cohort rows (group, then ``DAY_COUNTERS``) and rating rows (group, rating,
    count) for the matters received from ``start`` to ``end`` (``first`` to ``after``), as of the
    period's end: the days' sums, and for each matter concluded or first pleased after the end,
    the difference that made, taken back out."""
    connection = await session.connection()
    # A period that ended lately finds its late matters among the few concluded or rated since its
    # end; one that ended long ago (or a short one) among its own matters.  With the period's dates
    # in the statement SQLite reads the period's matters whichever is fewer, so those are checked here.
    recent = (now - after) * RECENT_SHARE < after - first

    def in_period(row: Any) -> bool:
        return first <= row.received_at < after and (county is None or row.county_code == county)

    cohort: list[Any] = list(await connection.execute(_day_sums(by, start, end, county)))
    for statement in _late_facts(by, first, after, county, recent=recent):
        for row in await connection.execute(statement):
            if in_period(row):
                now_counts, then_counts = counts_of(row), counts_of(row, before=after)
                cohort.append((row[0], *(b - a for a, b in zip(now_counts, then_counts, strict=True))))
    ratings: list[Any] = list(await connection.execute(_rating_day_sums(by, start, end, county)))
    late_ratings = await connection.execute(_late_ratings(by, first, after, county, recent=recent))
    ratings.extend((row[0], row.rating, -1) for row in late_ratings if in_period(row))
    return cohort, ratings


def _day_sums(by: str, start: date, end: date, county: str | None) -> Any:
    key = group_key_of(DAY, by)
    return (
        sa_select(key, *(func.sum(DAY.c[name]) for name in DAY_COUNTERS))
        .where(DAY.c.day >= start, DAY.c.day <= end, *([DAY.c.county_code == county] if county else []))
        .group_by(key)
    )


def _rating_day_sums(by: str, start: date, end: date, county: str | None) -> Any:
    key = group_key_of(RATING_DAY, by)
    return (
        sa_select(key, RATING_DAY.c.rating, func.sum(RATING_DAY.c.rated))
        .where(
            RATING_DAY.c.day >= start,
            RATING_DAY.c.day <= end,
            *([RATING_DAY.c.county_code == county] if county else []),
        )
        .group_by(key, RATING_DAY.c.rating)
    )


def _in_period(table: Any, first: datetime, after: datetime, county: str | None) -> list[ColumnElement[bool]]:
    return [
        table.c.received_at >= literal(first, UTCDateTime),
        table.c.received_at < literal(after, UTCDateTime),
        *([table.c.county_code == county] if county else []),
    ]


_NEVER = literal(datetime(9999, 1, 1, tzinfo=UTC), UTCDateTime)


def _late_facts(by: str, first: datetime, after: datetime, county: str | None, *, recent: bool) -> list[Any]:
    """The period's matters concluded or first pleased after its end (and, when ``recent``, the
    others concluded or first pleased since: the caller keeps the period's)."""
    columns = (
        group_key_of(FACT, by),
        FACT.c.complaint,
        FACT.c.responded,
        FACT.c.concluded_at,
        FACT.c.on_time,
        FACT.c.with_outcome,
        FACT.c.substantiated,
        FACT.c.pleased_at,
        FACT.c.reopened,
        FACT.c.received_at,
        FACT.c.county_code,
    )
    concluded_late = FACT.c.concluded_at >= literal(after, UTCDateTime)
    pleased_late = FACT.c.pleased_at >= literal(after, UTCDateTime)
    if not recent:
        return [
            sa_select(*columns).where(
                *_in_period(FACT, first, after, county), or_(concluded_late, pleased_late)
            )
        ]
    # Each its own index range; the second leaves out the first's.  Bounded on both sides: SQLite,
    # without the histograms that tell it a range since the period's end is narrow, reckons an
    # open-ended range a quarter of the table and scans the covering index instead.
    return [
        sa_select(*columns).where(concluded_late, FACT.c.concluded_at < _NEVER),
        sa_select(*columns).where(
            pleased_late, FACT.c.pleased_at < _NEVER, ~func.coalesce(concluded_late, False)
        ),
    ]


def _late_ratings(by: str, first: datetime, after: datetime, county: str | None, *, recent: bool) -> Any:
    late = RATING_FACT.c.at >= literal(after, UTCDateTime)
    columns = (
        group_key_of(RATING_FACT, by),
        RATING_FACT.c.rating,
        RATING_FACT.c.received_at,
        RATING_FACT.c.county_code,
    )
    if recent:
        return sa_select(*columns).where(late, RATING_FACT.c.at < _NEVER)
    return sa_select(*columns).where(*_in_period(RATING_FACT, first, after, county), late)


def _kept_repeats(by: str, first: datetime, after: datetime, county: str | None) -> Any:
    """The repeat calls received in the period, each counted for its matter's group."""
    key = group_key_of(REPEAT_FACT, by)
    return sa_select(key, func.count()).where(*_in_period(REPEAT_FACT, first, after, county)).group_by(key)
