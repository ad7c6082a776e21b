"""The 通知送达 figures' summary: per local day, county, team and kind, the notifications sent and
those not read by their deadline, for the days whose figures can no longer change.

``inbox.statistics`` grouped every notification of its window at read time (90 days: 173 ms of
SQL at a million complaints, and growing with the volume).  A day's figures are final once every
notification sent that day is past its read deadline (``SETTLE_MARGIN`` says why a margin more):

- **Summarised** a day at a time by the worker (``summary_worker``), in a transaction that writes
  the day's figure rows and its ``NotificationDay`` row together, after taking the lock; the
  day's row is the marker that it is done, so a second instance (or a second run) finds it there
  and writes nothing (its primary key would refuse a second one anyway).  Migration 0011 and the
  bench's bulk load summarise every settled day at once (``summarise_settled``: two grouped
  INSERT ... SELECT per chunk of days, whatever the number of notifications).
- **Reopened** by ``reopen_day`` when a notification is inserted for a day that is over (an event
  delivered late: a notification's ``created_at`` is its event's time): the day's rows go, in the
  inserting transaction, and the worker summarises the day again once it has settled.  Nothing
  else writes a notification's day, county, team, kind or deadline, and nothing deletes
  notifications (there is no retention or purge of them): the summary has nothing else to follow.
- **Read** by ``inbox.statistics``: the summarised whole days of the window from here, and the
  rest (the partial first day, today, the days not settled or not summarised yet) from the
  notifications, with the same aggregate as before.  So the figures never depend on the worker
  having run; it only keeps the part read from the notifications small.

A day is the bureau's local day (``WorkCalendar.tz``), from local midnight to the next: the days
partition time, so the figures add up whatever the time zone does at midnight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    Date,
    and_,
    between,
    bindparam,
    case,
    column,
    func,
    literal_column,
    or_,
    values,
)
from sqlalchemy import select as sa_select
from sqlalchemy.sql.expression import CTE, ColumnElement, Select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.models import Notification, NotificationDay, NotificationFigure
from shared.db import UTCDateTime, serialise_on, table_of, utcnow
from shared.logging import get_logger
from shared.workcalendar import WorkCalendar
from shared.worker import BackgroundWorker

log = get_logger(__name__)

NOTIFICATION = table_of(Notification)
DAY = table_of(NotificationDay)
FIGURE = table_of(NotificationFigure)

# How long after the last read deadline of a day its figures are taken as final.
#
# Once an item is past its read deadline, whether it is late (``first_read_at`` NULL or after
# ``read_deadline``) can change only through a reading: ``inbox._FIRST_READ`` sets
# ``first_read_at`` to a reading's time when that is earlier (the earliest wins, whatever order
# readings commit in).  A reading made now is after the deadline and leaves a late item late (it
# only lowers a ``first_read_at`` that is after the deadline to another time after it).  But a
# reading's time is taken (``utcnow()`` in ``mark_read``) before its transaction commits: a reading
# made just before the deadline whose transaction commits after it turns a late item (unread, or
# read later by someone else whose reading committed first) into one read in time.  The margin
# covers such a transaction, and clocks of instances that differ by less than it: an hour, where a
# request's transaction lasts seconds.  Nothing else writes ``first_read_at`` or ``read_deadline``.
SETTLE_MARGIN = timedelta(hours=1)
# Days per statement of the bulk summary: three parameters a day, well below SQLite's limit.
CHUNK_DAYS = 366
# How often the worker looks for days to summarise, the days it summarises per step (each in its
# own short transaction), and how long a step may take.
SUMMARY_EVERY_SECONDS = 300.0
DAYS_PER_STEP = 31
STEP_TIMEOUT_SECONDS = 120.0
# One lock for summarising a day and reopening one (``shared.db.serialise_on``), not one per day:
# a consumer's slice may reopen several days, and per-day locks taken in two slices' orders could
# deadlock.  Both are rare and short (a day's summary: milliseconds).
LOCK = "feedback_notification_summary"


def late(now: datetime | ColumnElement[Any]) -> ColumnElement[bool]:
    """A notification counted as unread after its working day: its deadline is past (at ``now``),
    and nobody had read it by then.  The figures' one definition, for the summary and the rest."""
    item = NOTIFICATION.c
    return and_(
        item.read_deadline <= now,
        or_(item.first_read_at.is_(None), item.first_read_at > item.read_deadline),
    )


# --- Days -----------------------------------------------------------------------------------------


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """Where ``day`` starts (and the day before ends)."""
    return datetime.combine(day, time(0), tzinfo=tz)


def first_whole_day(since: datetime, tz: ZoneInfo) -> date:
    """The first day that starts at or after ``since``."""
    day = since.astimezone(tz).date()
    while local_midnight(day, tz) < since:
        day += timedelta(days=1)
    return day


def last_ended_day(moment: datetime, tz: ZoneInfo) -> date:
    """The last day that ended at or before ``moment``."""
    day = moment.astimezone(tz).date()
    while local_midnight(day + timedelta(days=1), tz) > moment:
        day -= timedelta(days=1)
    return day


def cut_in(tz: ZoneInfo, day: date, starts: datetime, ends: datetime) -> bool:
    """Whether a summarised day's bounds are those of ``day`` in ``tz``."""
    return starts == local_midnight(day, tz) and ends == local_midnight(day + timedelta(days=1), tz)


# --- Summarising ------------------------------------------------------------------------------------


def _days(days: Sequence[date], tz: ZoneInfo) -> CTE:
    """``days`` as a table: each day with the moments it starts and ends."""
    return (
        values(
            column("day", Date),
            column("starts", UTCDateTime()),
            column("ends", UTCDateTime()),
            name="days",
        )
        .data([(day, local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)) for day in days])
        .cte("days")
    )


def summarise_days(connection: Connection, days: Sequence[date], *, tz: ZoneInfo, now: datetime) -> int:
    """Summarise those of ``days`` whose notifications are all past their read deadline by the
    margin at ``now``; returns how many were.  The caller found ``days`` not summarised (or cut in
    another time zone), in this transaction: whatever they hold is replaced.

    Two grouped statements over the days' ranges of the ``stats`` index, whatever the number of
    notifications: the markers of the settled days (empty days too, so they are not read again),
    then the figures of the days just marked.
    """
    if not days:
        return 0
    # A day cut in another time zone goes (``missing_days`` counts it as not summarised).
    connection.execute(FIGURE.delete().where(FIGURE.c.day.in_(days)))
    connection.execute(DAY.delete().where(DAY.c.day.in_(days)))
    cutoff = now - SETTLE_MARGIN
    item = NOTIFICATION.c
    day_table = _days(days, tz)
    in_day = and_(item.created_at >= day_table.c.starts, item.created_at < day_table.c.ends)
    last_deadline = func.max(item.read_deadline)
    settled = (
        sa_select(
            day_table.c.day,
            day_table.c.starts,
            day_table.c.ends,
            func.count(item.created_at),
            last_deadline,
            bindparam("summarised_at", now, type_=UTCDateTime()),
        )
        .select_from(day_table.outerjoin(NOTIFICATION, in_day))
        .group_by(day_table.c.day, day_table.c.starts, day_table.c.ends)
        .having(or_(last_deadline.is_(None), last_deadline <= cutoff))
    )
    columns = ["day", "starts_at", "ends_at", "notifications", "last_deadline", "summarised_at"]
    connection.execute(DAY.insert().from_select(columns, settled))
    # Counted, not the insert's rowcount: SQLite's driver gives none for a statement opening WITH.
    marked = connection.execute(sa_select(func.count()).where(DAY.c.day.in_(days))).scalar_one()
    if not marked:
        return 0
    # A literal "": the same expression in the select list and the GROUP BY on PostgreSQL.
    county = func.coalesce(item.county_code, literal_column("''"))
    team = func.coalesce(item.team_code, literal_column("''"))
    figures = (
        sa_select(
            day_table.c.day,
            county,
            team,
            item.kind,
            func.count(),
            func.sum(case((late(cutoff), 1), else_=0)),
        )
        .select_from(day_table.join(DAY, DAY.c.day == day_table.c.day).join(NOTIFICATION, in_day))
        .group_by(day_table.c.day, county, team, item.kind)
    )
    connection.execute(
        FIGURE.insert().from_select(["day", "county_code", "team_code", "kind", "sent", "late"], figures)
    )
    return int(marked)


def missing_days(connection: Connection, *, tz: ZoneInfo, now: datetime) -> list[date]:
    """The days from the first notification's to the last one ended a margin before ``now`` that
    are not summarised (in ``tz``), oldest first, settled or not: ``summarise_days`` decides."""
    first = connection.execute(sa_select(func.min(NOTIFICATION.c.created_at))).scalar()
    if first is None:
        return []
    start, last = first.astimezone(tz).date(), last_ended_day(now - SETTLE_MARGIN, tz)
    if last < start:
        return []
    marked = sa_select(DAY.c.day, DAY.c.starts_at, DAY.c.ends_at).where(DAY.c.day >= start, DAY.c.day <= last)
    done = {day for day, starts, ends in connection.execute(marked) if cut_in(tz, day, starts, ends)}
    return [
        day
        for day in (start + timedelta(days=offset) for offset in range((last - start).days + 1))
        if day not in done
    ]


def summarise_settled(connection: Connection, tz: ZoneInfo, now: datetime | None = None) -> int:
    """Summarise every settled day not summarised yet (synchronous: migration 0011's connection, or
    an async one through ``run_sync`` after a bulk load); returns how many days were.  Not for two
    instances at once: the worker takes the lock for each day instead."""
    now = utcnow() if now is None else now
    missing = missing_days(connection, tz=tz, now=now)
    return sum(
        summarise_days(connection, missing[start : start + CHUNK_DAYS], tz=tz, now=now)
        for start in range(0, len(missing), CHUNK_DAYS)
    )


def _summarise_if_missing(connection: Connection, day: date, tz: ZoneInfo, now: datetime) -> int:
    found = connection.execute(sa_select(DAY.c.starts_at, DAY.c.ends_at).where(DAY.c.day == day)).first()
    if found is not None and cut_in(tz, day, found.starts_at, found.ends_at):
        return 0
    return summarise_days(connection, [day], tz=tz, now=now)


async def summarise_day(session: AsyncSession, day: date, *, tz: ZoneInfo, now: datetime) -> bool:
    """Summarise ``day`` in the session's transaction if it is settled and not summarised yet.

    The lock first (PostgreSQL; SQLite's writers take turns anyway): an instance summarising the
    same day waits and then finds its marker, and a notification inserted for the day meanwhile
    (``reopen_day`` takes the lock too) is either seen here or removes what this wrote once this
    commits.
    """
    await serialise_on(session, LOCK)
    connection = await session.connection()
    return bool(await connection.run_sync(_summarise_if_missing, day, tz, now))


async def reopen_day(session: AsyncSession, *, at: datetime, tz: ZoneInfo) -> None:
    """Notifications sent at ``at`` were just inserted: if their day is over, its summary (if any) is
    removed in the same transaction, and the day is read from the notifications until the worker
    summarises it again.  Today's notifications (nearly all) cost nothing here: a day is summarised
    a margin after it ended at the earliest, so today cannot be summarised (unless an instance's
    clock is ahead by more than the margin)."""
    day = at.astimezone(tz).date()
    if day >= utcnow().astimezone(tz).date():
        return
    await serialise_on(session, LOCK)
    connection = await session.connection()
    removed = await connection.execute(DAY.delete().where(DAY.c.day == day))
    if removed.rowcount:
        await connection.execute(FIGURE.delete().where(FIGURE.c.day == day))
        log.info("notification summary reopened for a late notification", day=day.isoformat())


# --- The worker ---------------------------------------------------------------------------------


async def summarise_due(
    *, sessions: Callable[[], AsyncSession], calendar: WorkCalendar, days_per_step: int = DAYS_PER_STEP
) -> bool:
    """The worker's step: the days not summarised whose notifications are past their deadline by
    the margin, oldest first, a day per transaction, at most ``days_per_step``; whether more are
    waiting."""
    tz = calendar.tz
    now = utcnow()
    async with sessions() as session:
        connection = await session.connection()
        missing = await connection.run_sync(lambda sync: missing_days(sync, tz=tz, now=now))
    # The deadline the day's notifications were given (notifications.notify): a day that cannot be
    # settled yet is not even read.  Their own deadlines decide (summarise_days).
    due = [day for day in missing if calendar.end_of(calendar.next_working_day(day)) + SETTLE_MARGIN <= now]
    summarised = 0
    for day in due[:days_per_step]:
        async with sessions() as session, session.begin():
            summarised += await summarise_day(session, day, tz=tz, now=utcnow())
    if summarised:
        log.info("notification figures summarised", days=summarised, waiting=len(due) - summarised)
    # More only if this step got somewhere: a day that is not settled after all waits for the next
    # round instead of being read again at once.
    return bool(summarised) and len(due) > days_per_step


def summary_worker(
    *,
    sessions: Callable[[], AsyncSession],
    calendar: WorkCalendar,
    every_seconds: float = SUMMARY_EVERY_SECONDS,
    days_per_step: int = DAYS_PER_STEP,
) -> BackgroundWorker:
    """``summarise_due`` every few minutes (at once again while it says more are waiting); a step
    that hangs makes the worker stuck on ``/readyz``, and the app's watchdog restarts it."""

    async def step() -> bool:
        return await summarise_due(sessions=sessions, calendar=calendar, days_per_step=days_per_step)

    return BackgroundWorker(
        name="notification-summary",
        step=step,
        idle_seconds=every_seconds,
        step_timeout=STEP_TIMEOUT_SECONDS,
        backoff_max=every_seconds,
    )


# --- Reading --------------------------------------------------------------------------------------


async def summarised_runs(
    session: AsyncSession, *, since: datetime, now: datetime, tz: ZoneInfo
) -> list[tuple[date, date]]:
    """The summarised whole days in [since, now], as runs of consecutive days (first, last).

    Only days whose every deadline is past at ``now``: on those the figures' "late" reads the same
    as the summary's, whatever ``now`` the caller asks at; and only days cut in ``tz``, so the
    summarised days and the ranges read from the notifications partition the window exactly.
    """
    first, last = first_whole_day(since, tz), last_ended_day(now, tz)
    if last < first:
        return []
    query = (
        sa_select(DAY.c.day, DAY.c.starts_at, DAY.c.ends_at)
        .where(
            DAY.c.day >= first,
            DAY.c.day <= last,
            or_(DAY.c.last_deadline.is_(None), DAY.c.last_deadline <= now),
        )
        .order_by(DAY.c.day)
    )
    runs: list[tuple[date, date]] = []
    connection = await session.connection()
    for day, starts, ends in await connection.execute(query):
        if not cut_in(tz, day, starts, ends):
            continue
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def figures_query(runs: Sequence[tuple[date, date]], county: str | None) -> Select[Any]:
    """Per county, team and kind (county and team "" for none): sent and late over ``runs``."""
    query = (
        sa_select(
            FIGURE.c.county_code,
            FIGURE.c.team_code,
            FIGURE.c.kind,
            func.sum(FIGURE.c.sent),
            func.sum(FIGURE.c.late),
        )
        .where(or_(*(between(FIGURE.c.day, first, last) for first, last in runs)))
        .group_by(FIGURE.c.county_code, FIGURE.c.team_code, FIGURE.c.kind)
    )
    if county:
        query = query.where(FIGURE.c.county_code == county)
    return query


def unsummarised_ranges(
    runs: Sequence[tuple[date, date]], *, since: datetime, tz: ZoneInfo
) -> list[tuple[datetime, datetime | None]]:
    """The moments from ``since`` on that ``runs`` do not cover, as [start, end) ranges (the last
    one open: the figures count whatever is sent from ``since`` on)."""
    ranges: list[tuple[datetime, datetime | None]] = []
    start = since
    for first, last in runs:
        starts = local_midnight(first, tz)
        if start < starts:
            ranges.append((start, starts))
        start = local_midnight(last + timedelta(days=1), tz)
    ranges.append((start, None))
    return ranges
