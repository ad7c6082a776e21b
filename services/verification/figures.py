"""The dashboard's summary (``verification_daily_figure``): kept, rebuilt and read.

Grouping the base tables at read time cost seconds for a year of the city at 100,000 matters
(and grows with the history); the summary holds a few thousand rows a year, whatever the volume.

- **Kept** by the code that changes a fact, in the same transaction: a change records the
  difference it makes (a ``Part``), added to the summary rows at commit (``summaries``).
- **Rebuilt** from the base tables by ``rebuild``, with the dashboard's own SQL (``stats``) as the
  source, selecting each fact's timestamp instead of its week; a bulk load and the migration that
  made the table call it.
- **Read** by ``count_from_summary`` for the dashboard; ``stats``'s reference queries stay, and a
  test compares the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Date, Integer, bindparam, case, cast, func
from sqlalchemy import select as sa_select
from sqlalchemy.sql.expression import ColumnElement, Select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification import open_figures, stats, summaries
from services.verification.context import VerificationContext
from services.verification.models import DailyFigure, MatterSnapshot, Task, TaskStatus
from shared.db import built_once, table_of
from shared.events import RatingRecorded
from shared.slice_rows import rows_with
from shared.states import Rating

FIGURE = table_of(DailyFigure)
KEY_COLUMNS = ("day", "county_code", "team_code", "case_kind")
# The order count_from_summary unpacks them in.
COUNTERS = (
    "received",
    "concluded",
    "on_time",
    "with_outcome",
    "substantiated",
    "rated",
    *(rating.value for rating in Rating),
)
_INDEX = {name: i for i, name in enumerate(COUNTERS)}
RATING_COLUMNS = tuple(rating.value for rating in Rating)
RATING_VALUES = frozenset(RATING_COLUMNS)

# (local day, county or "", team or "", case kind or "")
Key = tuple[date, str, str, str]
# What a matter (or the whole history) adds to the summary: counters per key.
Part = dict[Key, list[int]]


def add(part: Part, key: Key, counter: str, count: int = 1) -> None:
    counts = part.get(key)
    if counts is None:
        counts = part[key] = [0] * len(COUNTERS)
    counts[_INDEX[counter]] += count


def difference(after: Part, before: Part) -> Part:
    """``after`` minus ``before``, without the keys where nothing changed."""
    changed: Part = {}
    for key in after.keys() | before.keys():
        new, old = after.get(key), before.get(key)
        counts = [a - b for a, b in zip(new or [0] * len(COUNTERS), old or [0] * len(COUNTERS), strict=True)]
        if any(counts):
            changed[key] = counts
    return changed


def day_of(moment: datetime, tz: ZoneInfo) -> date:
    return moment.astimezone(tz).date()


# --- The facts, from the base tables: the dashboard's SQL (stats), one row per fact -------------


def received_facts() -> Select[Any]:
    """Each matter: its county, the team it sits with now (its latest task), its kind, its arrival."""
    return sa_select(
        stats.MATTER.c.county_code,
        stats.latest_team_of_matter(),
        stats.MATTER.c.case_kind,
        stats.MATTER.c.received_at,
    )


def conclusion_facts() -> Select[Any]:
    """Each concluded task: its matter's county, its team and kind, when, on time, the outcome class
    of its first finding (2 substantiated, 1 another outcome, 0 none)."""
    on_time = case((stats.concluded_on_time(), 1), else_=0)
    return sa_select(
        stats.county_of_task_matter(),
        stats.TASK.c.team_code,
        stats.TASK.c.case_kind,
        stats.TASK.c.concluded_at,
        on_time,
        stats.first_outcome_class(),
    ).where(stats.TASK.c.status == TaskStatus.CONCLUDED)


def rating_facts() -> Select[Any]:
    """Each rating: its matter's county, the team that concluded the rated round, the matter's
    kind, when, the rating."""
    kind = (
        sa_select(stats.MATTER.c.case_kind)
        .where(stats.MATTER.c.case_id == stats.RATING.c.case_id)
        .scalar_subquery()
    )
    return sa_select(
        stats.county_of_task_matter(stats.RATING),
        stats.rated_round_team(),
        kind,
        stats.RATING.c.at,
        stats.RATING.c.rating,
    )


def fold_received(part: Part, rows: Iterable[Any], tz: ZoneInfo) -> None:
    for county, team, kind, received_at in rows:
        add(part, (day_of(received_at, tz), county or "", team or "", kind or ""), "received")


def fold_conclusions(part: Part, rows: Iterable[Any], tz: ZoneInfo) -> None:
    for county, team, kind, concluded_at, on_time, outcome in rows:
        key = (day_of(concluded_at, tz), county or "", team or "", kind or "")
        add(part, key, "concluded")
        if on_time:
            add(part, key, "on_time")
        if outcome:
            add(part, key, "with_outcome")
        if outcome == 2:
            add(part, key, "substantiated")


def fold_ratings(part: Part, rows: Iterable[Any], tz: ZoneInfo) -> None:
    for county, team, kind, at, rating in rows:
        if team is None:
            continue  # no team concluded the rated round: the dashboard counts it for nobody
        key = (day_of(at, tz), county or "", team, kind or "")
        add(part, key, "rated")
        if rating in RATING_VALUES:
            add(part, key, rating)


@built_once
def _facts_of_matter() -> tuple[Select[Any], Select[Any], Select[Any]]:
    """``part_of``'s three statements, for the matter ``:case_id`` (built once: building them cost
    more than running them, on every snapshot and conclusion)."""
    case_id: Any = bindparam("case_id")
    return (
        received_facts().where(stats.MATTER.c.case_id == case_id),
        conclusion_facts().where(stats.TASK.c.case_id == case_id),
        rating_facts().where(stats.RATING.c.case_id == case_id),
    )


async def part_of(session: AsyncSession, *, case_id: str, tz: ZoneInfo, received: bool = True) -> Part:
    """What one matter adds to the summary now, from the base tables as this transaction last
    flushed them (Core on the session's connection: no autoflush; the caller flushes when the
    change must be seen).  ``received=False`` leaves out its arrival (no snapshot yet)."""
    connection = await session.connection()
    params = {"case_id": case_id}
    received_query, concluded_query, ratings_query = _facts_of_matter()
    part: Part = {}
    if received:
        fold_received(part, await connection.execute(received_query, params), tz)
    fold_conclusions(part, await connection.execute(concluded_query, params), tz)
    fold_ratings(part, await connection.execute(ratings_query, params), tz)
    return part


# --- Keeping the summary: differences recorded, added at commit --------------------------------

DAILY = summaries.Summary(FIGURE, KEY_COLUMNS, COUNTERS)


def record(session: AsyncSession, part: Part) -> None:
    """Add ``part`` to the daily figures at commit (``summaries.record``)."""
    summaries.record(session, part, DAILY)


async def record_change(session: AsyncSession, *, case_id: str, before: Part, tz: ZoneInfo) -> None:
    """After a change of the matter's facts (``before``: its ``part_of`` before the change): flush,
    and record the difference."""
    await session.flush()
    record(session, difference(await part_of(session, case_id=case_id, tz=tz), before))


# --- The change points' differences that need no query ------------------------------------------


async def matter_arrived(session: AsyncSession, *, matter: MatterSnapshot, tz: ZoneInfo) -> None:
    """A matter's snapshot is about to be added: counted as received for the team it sits with (its
    latest task, when its assignment came first); and what its tasks and ratings counted without a
    county (nearly always nothing) moves to its county.  Reads only the matter's own rows, on the
    session's connection, and none that the slice writes (tasks come from another consumer); the
    tasks from the slice's prefetch when it made one."""
    held: list[Task] = await rows_with(session, col(Task.case_id), matter.case_id)
    tasks = [(task.team_code, task.created_at) for task in held]
    open_figures.matter_arrived(session, county=matter.county_code, tasks=held)
    latest_team = max(tasks, key=lambda task: task[1])[0] if tasks else None
    part: Part = {}
    county = matter.county_code or ""
    add(part, (day_of(matter.received_at, tz), county, latest_team or "", matter.case_kind), "received")
    if tasks:
        earlier = await part_of(session, case_id=matter.case_id, tz=tz, received=False)
        for (day, _, team, kind), counts in earlier.items():
            for name, count in zip(COUNTERS, counts, strict=True):
                if count:
                    add(part, (day, "", team, kind), name, -count)
                    add(part, (day, county, team, kind or matter.case_kind), name, count)
    record(session, part)


def matter_moved(
    session: AsyncSession, *, matter: MatterSnapshot, old_team: str | None, new_team: str, tz: ZoneInfo
) -> None:
    """A new task: the matter now sits with ``new_team``, so it counts as received there."""
    if (old_team or "") == new_team:
        return
    day = day_of(matter.received_at, tz)
    part: Part = {}
    add(part, (day, matter.county_code or "", old_team or "", matter.case_kind), "received", -1)
    add(part, (day, matter.county_code or "", new_team, matter.case_kind), "received")
    record(session, part)


async def record_rating(*, session: AsyncSession, event: RatingRecorded, ctx: VerificationContext) -> None:
    """``stats.record_rating``, and the rating counted for the team that concluded the rated round."""
    tz = ctx.calendar.tz
    before = await part_of(session, case_id=event.case_id, tz=tz)
    await stats.record_rating(session=session, event=event)
    await record_change(session, case_id=event.case_id, before=before, tz=tz)


# --- Rebuilding ---------------------------------------------------------------------------------


def rebuild(connection: Connection, tz: ZoneInfo) -> int:
    """Replace the summary with what the base tables say (synchronous: the migration's connection,
    or an async one through ``run_sync``); returns the number of summary rows."""
    part: Part = {}
    # Streamed, per statement (a connection's own options would outlive the rebuild).
    # Each result closed when read: on PostgreSQL a streamed one is a server-side cursor, and one
    # left open keeps its tables busy for the rest of the transaction (a later migration's ALTER).
    streamed = {"yield_per": 10_000}
    for facts, fold in (
        (received_facts(), fold_received),
        (conclusion_facts(), fold_conclusions),
        (rating_facts(), fold_ratings),
    ):
        with connection.execute(facts, execution_options=streamed) as result:
            fold(part, result, tz)
    connection.execute(FIGURE.delete())
    rows = DAILY.rows(part)
    for start in range(0, len(rows), 5_000):
        connection.execute(FIGURE.insert(), rows[start : start + 5_000])
    return len(rows)


async def rebuild_figures(*, session: AsyncSession, ctx: VerificationContext) -> int:
    """``rebuild`` in the session's transaction: after a bulk load wrote the base tables directly."""
    connection = await session.connection()
    return await connection.run_sync(rebuild, ctx.calendar.tz)


# --- Reading ------------------------------------------------------------------------------------


def _week_since(first_day: date, dialect: str) -> ColumnElement[Any]:
    """The summary row's week, counted from the one starting on ``first_day`` (0, 1, …)."""
    if dialect == "postgresql":
        return (FIGURE.c.day - bindparam("first_day", first_day, type_=Date)) // 7
    # SQLite keeps a date as its ISO text.
    return cast((func.julianday(FIGURE.c.day) - func.julianday(first_day.isoformat())) / 7, Integer)


async def count_from_summary(
    session: AsyncSession, groups: Any, *, first: datetime, weeks: int, county: str | None
) -> None:
    """Received, concluded (on time, with an outcome, substantiated) per week and the ratings since
    the first week, per group, from the summary: the same figures as ``stats``'s reference queries.

    ``first`` is a Monday 00:00 local time; ratings count from then on (no end, as the reference).
    """
    first_day = first.date()
    week = _week_since(first_day, (await session.connection()).dialect.name)
    sums = [func.sum(FIGURE.c[name]) for name in COUNTERS]
    # Summed per week in SQL: a year of the city is some 8,500 day rows, and fetching them (a
    # date parsed per row on SQLite) cost more than the query.
    query = (
        sa_select(week, FIGURE.c.county_code, FIGURE.c.team_code, *sums)
        .where(FIGURE.c.day >= first_day, *([FIGURE.c.county_code == county] if county else []))
        .group_by(week, FIGURE.c.county_code, FIGURE.c.team_code)
    )
    entries: dict[tuple[str, str], Any] = {}
    for index, county_code, team, received, concluded, *counts in await stats.rows_of(session, query):
        on_time, with_outcome, substantiated, rated, *ratings = counts
        in_window = index < weeks
        if not (rated or (in_window and (received or concluded))):
            continue  # a row a move left at zero: the reference has no group for it
        entry = entries.get((county_code, team))
        if entry is None:
            code = stats.code_of(groups.by, county_code or None, team or None)
            entry = entries[county_code, team] = groups.of(code)
        if in_window:
            entry["received"][index] += received
            entry["concluded"][index] += concluded
            entry["concluded_total"] += concluded
            entry["on_time"] += on_time
            entry["with_outcome"] += with_outcome
            entry["substantiated"] += substantiated
        entry["rated"] += rated
        for rating, count in zip(RATING_COLUMNS, ratings, strict=True):
            entry[rating] += count


async def dashboard(
    *, session: AsyncSession, ctx: VerificationContext, weeks: int, by: str, county: str | None = None
) -> dict[str, Any]:
    """``stats.dashboard`` with received, concluded and ratings read from the summary, and the
    open tasks from theirs (``open_figures``)."""
    return await stats.dashboard(
        session=session,
        ctx=ctx,
        weeks=weeks,
        by=by,
        county=county,
        counts=count_from_summary,
        open_counts=open_figures.count_open_from_summary,
    )
