"""The 待办 inbox: a person's notifications, reading and handling them, and the statistics of them.

Who is told what is ``notifications``; this module is what a person does with it.  Reading is
recorded per person (``NotificationRead``), and the first reading by anyone on the item itself
(``first_read_at``, for the figures); handling once per item, with who and when.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, bindparam, case, func, or_, union_all, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import Select as CoreSelect
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from services.feedback import notification_summary
from services.feedback.models import Notification, NotificationRead
from services.feedback.notifications import audiences_of
from shared.auth import Principal, Role
from shared.db import table_of, utcnow
from shared.errors import Forbidden, NotFound
from shared.pagination import Key, Page
from shared.planner import without_jit


def _with_receipt(principal: Principal) -> Select[Notification, datetime | None]:
    """Notifications joined to the person's own read receipt."""
    return select(Notification, NotificationRead.read_at).outerjoin(
        NotificationRead,
        and_(
            col(NotificationRead.notification_id) == col(Notification.id),
            col(NotificationRead.username) == principal.username,
        ),
    )


def _mine(principal: Principal, audiences: list[str] | None = None) -> Select[Notification, datetime | None]:
    """The person's notifications (of ``audiences``, by default all theirs) with their read receipt."""
    wanted = audiences_of(principal) if audiences is None else audiences
    return _with_receipt(principal).where(col(Notification.audience).in_(wanted))


async def own_items(
    *,
    session: AsyncSession,
    principal: Principal,
    unread: bool,
    open_only: bool,
    page: Page,
    before: datetime | None,
) -> list[tuple[Notification, datetime | None]]:
    """The person's notifications, newest first, a page by keyset (created_at, id), with the total.

    A person belongs to two audiences (their role's and their own); one ordered walk of an IN over
    both cannot follow an index that starts with the audience, so the database sorted every item of
    both (a supervisor's are most of them) to give a page.  Each audience's page is taken alone,
    in the index's order, and the page is the newest of those few rows.
    """

    def filtered(query: Select[Notification, datetime | None]) -> Select[Notification, datetime | None]:
        if unread:
            query = query.where(col(NotificationRead.read_at).is_(None))
        if open_only:
            query = query.where(col(Notification.handled_at).is_(None))
        if before is not None:
            query = query.where(col(Notification.created_at) < before)
        return query

    keys = (Key(col(Notification.created_at), descending=True), Key(col(Notification.id), descending=True))
    arms = [
        page.keyset(filtered(_mine(principal, [audience])).with_only_columns(col(Notification.id)), keys)
        for audience in audiences_of(principal)
    ]
    ids = union_all(*(select(arm.subquery().c.id) for arm in arms))
    query = _with_receipt(principal).where(col(Notification.id).in_(ids))
    # The total counts every open item of both audiences (54,000 of a supervisor's at a million
    # complaints): while their pages are not all-visible its cost estimate switches JIT on, 4 to
    # 13 ms of compiling per request (EXPLAIN ANALYZE on the benchmark's PostgreSQL data set).
    await without_jit(await session.connection())
    found = await page.rows(session, query, keys, counted=filtered(_mine(principal)))
    return [(row[0], row[1]) for row in found]


async def unread_count(*, session: AsyncSession, principal: Principal) -> int:
    """Unread items still open: the bell's number."""
    query = (
        select(func.count())
        .select_from(Notification)
        .outerjoin(
            NotificationRead,
            and_(
                col(NotificationRead.notification_id) == col(Notification.id),
                col(NotificationRead.username) == principal.username,
            ),
        )
        .where(
            col(Notification.audience).in_(audiences_of(principal)),
            col(NotificationRead.read_at).is_(None),
            col(Notification.handled_at).is_(None),
        )
    )
    return int((await session.exec(query)).one())


async def own_item(
    *, session: AsyncSession, principal: Principal, notification_id: str
) -> tuple[Notification, datetime | None]:
    """One of the person's notifications; anyone else's is not found (its existence is not told)."""
    found = (await session.exec(_mine(principal).where(col(Notification.id) == notification_id))).first()
    if found is None:
        raise NotFound("通知不存在")
    return found[0], found[1]


_NOTIFICATIONS = table_of(Notification)
_READ_AT = bindparam("read_at", type_=_NOTIFICATIONS.c.first_read_at.type)
# The earliest reading wins even when two people's readings commit out of order.  The figures'
# summary counts on this for days past their deadlines (``notification_summary.SETTLE_MARGIN``).
_FIRST_READ = (
    update(_NOTIFICATIONS)
    .where(
        _NOTIFICATIONS.c.id == bindparam("item_id"),
        or_(_NOTIFICATIONS.c.first_read_at.is_(None), _NOTIFICATIONS.c.first_read_at > _READ_AT),
    )
    .values(first_read_at=_READ_AT)
)


async def mark_read(
    *, session: AsyncSession, principal: Principal, notification_id: str
) -> tuple[Notification, datetime]:
    """Record that the person read the item (once: the first reading counts)."""
    item, read_at = await own_item(session=session, principal=principal, notification_id=notification_id)
    if read_at is not None:
        return item, read_at
    now = utcnow()
    table = table_of(NotificationRead)
    values = {"notification_id": item.id, "username": principal.username, "read_at": now}
    dialect = session.sync_session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    connection = await session.connection()
    inserted = await connection.execute(
        insert(table).values(values).on_conflict_do_nothing(index_elements=["notification_id", "username"])
    )
    if inserted.rowcount:
        await connection.execute(_FIRST_READ, {"item_id": item.id, "read_at": now})
    return item, now


async def mark_handled(
    *, session: AsyncSession, principal: Principal, notification_id: str
) -> tuple[Notification, datetime]:
    """The person dealt with the item: who and when are recorded; handling it also reads it."""
    item, read_at = await mark_read(session=session, principal=principal, notification_id=notification_id)
    if item.handled_at is None:
        item.handled_at = utcnow()
        item.handled_by = principal.username
        session.add(item)
    return item, read_at


# --- Statistics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindCount:
    county_code: str | None
    team_code: str | None
    kind: str
    sent: int
    unread_after_one_working_day: int


# (county or "", team or "", kind): [sent, unread]
_Counts = dict[tuple[str, str, str], list[int]]


def _raw_query(
    *, county: str | None, since: datetime, until: datetime | None, now: datetime
) -> CoreSelect[Any]:
    """The figures of the notifications sent in [since, until) (no end: from ``since`` on), from
    the notifications themselves: one aggregate over the ``stats`` index, which holds every column
    it reads (the deadline and the first reading are on each item)."""
    item = _NOTIFICATIONS.c
    keys = (item.county_code, item.team_code, item.kind)
    query = (
        sa_select(*keys, func.count(), func.sum(case((notification_summary.late(now), 1), else_=0)))
        .where(item.created_at >= since)
        .group_by(*keys)
    )
    if until is not None:
        query = query.where(item.created_at < until)
    if county:
        query = query.where(item.county_code == county)
    return query


def _add(counts: _Counts, rows: Iterable[Any]) -> None:
    # No code and an empty code are one group, sorted first on every database.
    for county_code, team_code, kind, sent, unread in rows:
        sent_unread = counts.setdefault((county_code or "", team_code or "", kind), [0, 0])
        sent_unread[0] += int(sent)
        sent_unread[1] += int(unread or 0)


def _kind_counts(counts: _Counts) -> list[KindCount]:
    return [
        KindCount(
            county_code=county_code or None,
            team_code=team_code or None,
            kind=kind,
            sent=sent,
            unread_after_one_working_day=unread,
        )
        for (county_code, team_code, kind), (sent, unread) in sorted(counts.items())
    ]


async def raw_statistics(
    *, session: AsyncSession, county: str | None, since: datetime, now: datetime
) -> list[KindCount]:
    """``statistics`` from the notifications alone, as it was before the summary: the reference
    the tests compare it with."""
    counts: _Counts = {}
    connection = await session.connection()
    _add(counts, await connection.execute(_raw_query(county=county, since=since, until=None, now=now)))
    return _kind_counts(counts)


async def statistics(
    *,
    session: AsyncSession,
    county: str | None,
    since: datetime,
    now: datetime,
    tz: ZoneInfo,
) -> list[KindCount]:
    """Per county, team and kind: notifications sent since ``since``, and those nobody had read
    one working day after they were sent (counted once that day is over).

    The whole local days (``tz``) of the window that are summarised come from the summary
    (``notification_summary``); the rest (the first day from ``since``, today, and the days not
    settled or not summarised yet) from the notifications, by the same aggregate as
    ``raw_statistics``, whose figures these equal.
    """
    runs = await notification_summary.summarised_runs(session, since=since, now=now, tz=tz)
    connection = await session.connection()
    counts: _Counts = {}
    if runs:
        _add(counts, await connection.execute(notification_summary.figures_query(runs, county)))
    for start, end in notification_summary.unsummarised_ranges(runs, since=since, tz=tz):
        _add(counts, await connection.execute(_raw_query(county=county, since=start, until=end, now=now)))
    return _kind_counts(counts)


def resolve_link(link: str | None, urls: dict[str, str]) -> str | None:
    """``<service>:<path>`` as the browser's address of that page."""
    if not link:
        return None
    service, _, path = link.partition(":")
    if service in urls and path.startswith("/"):
        return urls[service] + path
    return link


def stats_scope(principal: Principal, county: str | None) -> str | None:
    """The county whose figures the person may read: any for a supervisor, their own for a leader."""
    if principal.is_(Role.LEADER):
        if county and county != principal.county_code:
            raise Forbidden("分管领导只能查看本单位的通知统计")
        if not principal.county_code:
            raise Forbidden("该账号未关联县（市、区）公安机关")
        return principal.county_code
    return county or None
