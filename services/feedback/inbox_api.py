"""Feedback's HTTP API for the 待办 inbox: a person's notifications, reading and handling them, the figures.

HTTP only; included in ``router`` under its prefix.  A notification of someone else is not found.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from services.feedback import inbox
from services.feedback.context import FeedbackContext
from services.feedback.models import Notification
from services.feedback.schemas import (
    NOTIFICATION_KIND_LABELS,
    NotificationOut,
    NotificationStats,
    NotificationStatsRow,
    NotificationSummary,
)
from shared.db import utcnow
from shared.deps import Session, Signed, SupervisorOrLeader, app_state
from shared.pagination import Page, page_headers, paging
from shared.readmodel import read_model
from shared.validation import Line
from shared.web import service_urls

router = APIRouter()
Context = Annotated[FeedbackContext, Depends(app_state("feedback", FeedbackContext))]


def _notification_out(request: Request, item: Notification, read_at: datetime | None) -> NotificationOut:
    return read_model(
        NotificationOut,
        item,
        kind_label=NOTIFICATION_KIND_LABELS.get(item.kind, item.kind),
        link=inbox.resolve_link(item.link, service_urls(request.app.state.settings)),
        read_at=read_at,
    )


@router.get(
    "/notifications", response_model=list[NotificationOut], tags=["notifications"], responses=page_headers()
)
async def list_notifications(
    request: Request,
    session: Session,
    principal: Signed,
    page: Annotated[Page, Depends(paging(default=50, maximum=200, offset=False))],
    unread: bool = False,
    open: Annotated[bool, Query(description="only items nobody has handled yet (the 待办 list)")] = False,
    before: Annotated[datetime | None, Query(description="older than this: the next page")] = None,
) -> list[NotificationOut]:
    """The signed-in person's notifications, newest first; the next page by ``after`` (or ``before``)."""
    found = await inbox.own_items(
        session=session, principal=principal, unread=unread, open_only=open, page=page, before=before
    )
    return [_notification_out(request, item, read_at) for item, read_at in found]


@router.get("/notifications/summary", response_model=NotificationSummary, tags=["notifications"])
async def notification_summary(session: Session, principal: Signed) -> NotificationSummary:
    return NotificationSummary(unread=await inbox.unread_count(session=session, principal=principal))


@router.get("/notifications/stats", response_model=NotificationStats, tags=["notifications"])
async def notification_stats(
    session: Session,
    principal: SupervisorOrLeader,
    ctx: Context,
    county: Annotated[Line | None, Query(max_length=16)] = None,
    days: Annotated[int, Query(ge=1, le=730)] = 90,
) -> NotificationStats:
    """Per county, team and kind: sent, and unread one working day after sending."""
    scope = inbox.stats_scope(principal, county)
    now = utcnow()
    since = now - timedelta(days=days)
    rows = await inbox.statistics(session=session, county=scope, since=since, now=now, tz=ctx.calendar.tz)
    return NotificationStats(
        since=since,
        county=scope,
        rows=[
            NotificationStatsRow(
                county_code=row.county_code,
                team_code=row.team_code,
                kind=row.kind,
                kind_label=NOTIFICATION_KIND_LABELS.get(row.kind, row.kind),
                sent=row.sent,
                unread_after_one_working_day=row.unread_after_one_working_day,
            )
            for row in rows
        ],
    )


@router.post("/notifications/{notification_id}/read", response_model=NotificationOut, tags=["notifications"])
async def read_notification(
    notification_id: str, request: Request, session: Session, principal: Signed
) -> NotificationOut:
    """Its recipient read it (recorded once); anyone else: 404."""
    async with session.begin():
        item, read_at = await inbox.mark_read(
            session=session, principal=principal, notification_id=notification_id
        )
    return _notification_out(request, item, read_at)


@router.post(
    "/notifications/{notification_id}/handle", response_model=NotificationOut, tags=["notifications"]
)
async def handle_notification(
    notification_id: str, request: Request, session: Session, principal: Signed
) -> NotificationOut:
    """Its recipient dealt with it: who and when are recorded."""
    async with session.begin():
        item, read_at = await inbox.mark_handled(
            session=session, principal=principal, notification_id=notification_id
        )
    return _notification_out(request, item, read_at)
