"""The 通知送达 figures' summary (``services/feedback/notification_summary.py``): the figures read
from the summary and the notifications together equal the aggregate of the notifications alone,
however much of the summary is filled; summarising is idempotent, also twice at once; a
notification arriving late for a summarised day reopens it; migration 0011 back-fills it.

On a feedback database of its own (SQLite), with notifications written directly, spread over six
weeks around the present, read before, at and after their deadlines.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import inbox, notification_summary
from services.feedback.models import Notification, NotificationKind
from services.feedback.notification_summary import DAY, FIGURE, SETTLE_MARGIN, local_midnight
from services.feedback.notifications import notify
from shared.db import create_engine, create_session_factory, new_id, table_of, utcnow
from shared.migrations import upgrade
from shared.workcalendar import WorkCalendar
from tests.support import System

CALENDAR = WorkCalendar.load()
TZ = CALENDAR.tz
COUNTIES = ["411681", "411602", None, ""]
TEAMS = ["411681", "411602-2", None, ""]
KINDS = ["chase", "escalation", "rebuke", "early_warning"]
Sessions = async_sessionmaker[AsyncSession]


def notification(rng: random.Random, created_at: datetime, now: datetime) -> dict[str, Any]:
    deadline = CALENDAR.add_working_days(created_at, 1)
    reading = rng.choice(["never", "in time", "at the deadline", "just late", "late", "long after"])
    first_read_at = {
        "never": None,
        "in time": created_at + (deadline - created_at) * rng.random(),
        "at the deadline": deadline,
        "just late": deadline + timedelta(microseconds=1),
        "late": deadline + timedelta(hours=rng.uniform(0.5, 30)),
        "long after": now + timedelta(days=3),
    }[reading]
    return {
        "id": new_id(),
        "kind": rng.choice(KINDS),
        "audience": "role:supervisor",
        "dedupe_key": new_id(),
        "case_id": None,
        "tracking_code": None,
        "county_code": rng.choice(COUNTIES),
        "team_code": rng.choice(TEAMS),
        "title": "t",
        "link": None,
        "due_at": None,
        "created_at": created_at,
        "handled_at": None,
        "handled_by": None,
        "read_deadline": deadline,
        "first_read_at": first_read_at,
    }


def spread(seed: int, now: datetime, *, days: int = 42, count: int = 1500) -> list[dict[str, Any]]:
    """``count`` notifications from ``days`` ago to a day ahead, some on a local midnight."""
    rng = random.Random(seed)
    first = now - timedelta(days=days)
    span = (now + timedelta(days=1) - first).total_seconds()
    rows = [notification(rng, first + timedelta(seconds=rng.uniform(0, span)), now) for _ in range(count)]
    for back in (3, 10, 20, 30):
        midnight = local_midnight((now - timedelta(days=back)).astimezone(TZ).date(), TZ)
        rows.append(notification(rng, midnight, now))
        rows.append(notification(rng, midnight - timedelta(microseconds=1), now))
    return rows


async def insert(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as connection:
        await connection.execute(sa.insert(table_of(Notification)), rows)


async def migrated(path: Path, revision: str = "heads") -> str:
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, "feedback", url, revision)
    return url


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    made = create_engine(await migrated(tmp_path / "feedback.db"))
    try:
        yield made
    finally:
        await made.dispose()


def windows(now: datetime) -> list[tuple[datetime, datetime, str | None]]:
    """(since, now, county): the default 90 days, windows starting inside a day, asked at other
    moments (earlier than some days' deadlines, in the future), per county and for none."""
    moments = [now, now - timedelta(days=9, hours=5, minutes=17), now + timedelta(days=2, hours=3)]
    found = []
    for at in moments:
        for since in (
            at - timedelta(days=90),
            at - timedelta(days=30, hours=-7),
            at - timedelta(days=6, minutes=1),
            at - timedelta(hours=20),
        ):
            for county in (None, "411681", ""):
                found.append((since, at, county))
    return found


async def assert_same_figures(sessions: Sessions, now: datetime) -> None:
    counted = 0
    for since, at, county in windows(now):
        async with sessions() as session:
            expected = await inbox.raw_statistics(session=session, county=county, since=since, now=at)
            got = await inbox.statistics(session=session, county=county, since=since, now=at, tz=TZ)
        assert got == expected, (since, at, county)
        counted += bool(expected)
    assert counted >= len(windows(now)) - 3, "nearly every window has notifications"


def settles_by(day: date, now: datetime) -> bool:
    """Whether the notifications of ``day`` are all past their read deadline by the margin."""
    return CALENDAR.end_of(CALENDAR.next_working_day(day)) + SETTLE_MARGIN <= now


async def summary_rows(engine: AsyncEngine) -> tuple[list[Any], list[Any]]:
    async with engine.connect() as connection:
        days = (await connection.execute(sa.select(DAY).order_by(DAY.c.day))).all()
        figures = (await connection.execute(sa.select(FIGURE).order_by(*FIGURE.primary_key.columns))).all()
    return list(days), list(figures)


def without_stamps(days: list[Any]) -> list[Any]:
    return [row[:-1] for row in days]  # summarised_at last


async def summarise_all(sessions: Sessions) -> None:
    while await notification_summary.summarise_due(sessions=sessions, calendar=CALENDAR, days_per_step=5):
        pass


async def test_summarised_and_raw_figures_equal_the_aggregate_of_the_notifications(
    engine: AsyncEngine,
) -> None:
    now = utcnow()
    await insert(engine, spread(1, now))
    sessions = create_session_factory(engine)
    # Nothing summarised: all from the notifications.
    await assert_same_figures(sessions, now)

    # Partly summarised: every third day of the past weeks.
    today = now.astimezone(TZ).date()
    for back in range(40, 1, -3):
        async with sessions() as session, session.begin():
            await notification_summary.summarise_day(session, today - timedelta(days=back), tz=TZ, now=now)
    days, _ = await summary_rows(engine)
    assert 8 <= len(days) <= 14
    await assert_same_figures(sessions, now)

    # The worker's steps, until it says nothing more is waiting.
    await summarise_all(sessions)
    days, figures = await summary_rows(engine)
    assert figures and sum(row.notifications for row in days) == sum(row[4] for row in figures)
    summarised = {row.day for row in days}
    assert all(settles_by(day, now) for day in summarised)
    # Every day before the last few is summarised: the default window reads only its ends raw.
    async with sessions() as session:
        runs = await notification_summary.summarised_runs(
            session, since=now - timedelta(days=30), now=now, tz=TZ
        )
    settled = [day for day in (today - timedelta(days=n) for n in range(1, 30)) if settles_by(day, now)]
    assert len(runs) == 1 and runs[0][1] == max(settled)
    ranges = notification_summary.unsummarised_ranges(runs, since=now - timedelta(days=30), tz=TZ)
    assert len(ranges) == 2 and ranges[0][1] is not None and ranges[0][1] - ranges[0][0] <= timedelta(days=1)
    await assert_same_figures(sessions, now)

    # Readings now (after every summarised deadline) of items nobody read: the earliest reading wins,
    # the items stay late, the summary stays right.
    items = table_of(Notification)
    async with engine.begin() as connection:
        unread = (
            await connection.execute(
                sa.select(items.c.id).where(
                    items.c.first_read_at.is_(None), items.c.created_at < now - timedelta(days=10)
                )
            )
        ).scalars()
        for item_id in list(unread)[:50]:
            await connection.execute(inbox._FIRST_READ, {"item_id": item_id, "read_at": utcnow()})
    assert await summary_rows(engine) == (days, figures)
    await assert_same_figures(sessions, now)

    # A notification arriving late for a summarised day (its event was delivered days later).
    late_day = today - timedelta(days=12)
    assert late_day in summarised
    async with sessions() as session, session.begin():
        await notify(
            session=session,
            kind=NotificationKind.EARLY_WARNING,
            audiences=["role:supervisor", "leader:411681"],
            dedupe_key=f"warning:{new_id()}",
            case_id=None,
            title="预警",
            at=local_midnight(late_day, TZ) + timedelta(hours=15),
            calendar=CALENDAR,
            county_code="411681",
        )
    reopened, _ = await summary_rows(engine)
    assert late_day not in {row.day for row in reopened} and len(reopened) == len(days) - 1
    await assert_same_figures(sessions, now)
    await summarise_all(sessions)
    again, _ = await summary_rows(engine)
    assert {row.day for row in again} == summarised
    (row,) = [row for row in again if row.day == late_day]
    (before,) = [row for row in days if row.day == late_day]
    assert row.notifications == before.notifications + 2
    await assert_same_figures(sessions, now)


async def test_summarising_twice_or_twice_at_once_changes_nothing(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    now = utcnow()
    await insert(engine, spread(2, now, count=800))
    sessions = create_session_factory(engine)
    async with engine.begin() as connection:
        assert await connection.run_sync(notification_summary.summarise_settled, TZ) > 30
    once = await summary_rows(engine)
    async with engine.begin() as connection:
        assert await connection.run_sync(notification_summary.summarise_settled, TZ) == 0
    assert await summary_rows(engine) == once
    await summarise_all(sessions)
    assert await summary_rows(engine) == once
    async with sessions() as session, session.begin():
        summarised = await notification_summary.summarise_day(session, once[0][0].day, tz=TZ, now=utcnow())
    assert summarised is False
    await assert_same_figures(sessions, now)

    # Two instances at once, on a summary emptied: each day once.
    async with engine.begin() as connection:
        await connection.execute(FIGURE.delete())
        await connection.execute(DAY.delete())
    other = create_engine(str(engine.url))
    try:
        other_sessions = create_session_factory(other)

        await asyncio.gather(summarise_all(sessions), summarise_all(other_sessions))
    finally:
        await other.dispose()
    days, figures = await summary_rows(engine)
    assert (without_stamps(days), figures) == (without_stamps(once[0]), once[1])
    await assert_same_figures(sessions, now)


async def test_a_day_cut_in_another_time_zone_is_read_raw_and_cut_again(engine: AsyncEngine) -> None:
    now = utcnow()
    await insert(engine, spread(3, now, count=600))
    sessions = create_session_factory(engine)
    async with engine.begin() as connection:
        assert await connection.run_sync(notification_summary.summarise_settled, ZoneInfo("UTC")) > 30
    await assert_same_figures(sessions, now)
    async with sessions() as session:
        runs = await notification_summary.summarised_runs(
            session, since=now - timedelta(days=90), now=now, tz=TZ
        )
    assert runs == []
    await summarise_all(sessions)
    days, _ = await summary_rows(engine)
    # Every day the bureau's worker takes as due is cut again in its zone.  A row cut in UTC can
    # stay: a day not due yet in the bureau's zone, or (run after 16:00 UTC) the UTC day before the
    # first notification's local day; such rows are read raw (the figures below).
    assert any(row.starts_at == local_midnight(row.day, TZ) for row in days)
    async with engine.connect() as connection:
        checked = utcnow()
        missing = await connection.run_sync(
            lambda sync: notification_summary.missing_days(sync, tz=TZ, now=checked)
        )
    assert [day for day in missing if day_is_due(day, checked)] == []
    await assert_same_figures(sessions, now)


def day_is_due(day: date, now: datetime) -> bool:
    """As ``notification_summary.summarise_due`` decides."""
    return CALENDAR.end_of(CALENDAR.next_working_day(day)) + notification_summary.SETTLE_MARGIN <= now


def test_migration_0011_back_fills_the_settled_days(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    now = datetime.now(UTC)
    rows = spread(4, now, count=700)

    async def fill() -> str:
        url = await migrated(path, "0010")
        engine = create_engine(url)
        try:
            await insert(engine, rows)
        finally:
            await engine.dispose()
        return await migrated(path)

    async def check(url: str) -> None:
        engine = create_engine(url)
        try:
            days, figures = await summary_rows(engine)
            assert len(days) >= 35 and figures
            first = min(row["created_at"] for row in rows).astimezone(TZ).date()
            assert days[0].day == first
            assert [row.day for row in days] == [first + timedelta(days=n) for n in range(len(days))]
            await assert_same_figures(create_session_factory(engine), now)
            # The worker finds nothing more to do than the days that settled since.
            before = len(days)
            await summarise_all(create_session_factory(engine))
            assert len((await summary_rows(engine))[0]) - before <= 1
        finally:
            await engine.dispose()

    asyncio.run(check(asyncio.run(fill())))


async def test_the_summary_worker_runs_in_feedback(system: System) -> None:
    response = await system.client("feedback").get("/readyz")
    workers = response.json()["workers"]
    assert "notification-summary" in workers
    assert workers["notification-summary"]["stuck"] is False
