"""Feedback's pages: the public query (阳光警务查询, no sign-in) and the deputies' own suggestions.

Also the satisfaction figures of the supervisors' dashboard, a small JSON endpoint the
dashboard on verification fetches across origins (CORS is set up for every service in
``shared.web.mount_web``).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Query
from fastapi.responses import RedirectResponse, Response
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.ratings import satisfaction_by_team
from services.feedback.schemas import NOTIFICATION_KIND_LABELS
from shared.app import get_session
from shared.auth import Principal, Role, require_roles
from shared.db import utcnow
from shared.web import page_user
from shared.web.pages import ServicePages

pages = ServicePages(Path(__file__).resolve().parent / "templates")
web_router = pages.router

Session = Annotated[AsyncSession, Depends(get_session)]
DEPUTY = page_user(Role.DEPUTY)


@web_router.get("/")
async def root() -> Response:
    return RedirectResponse("/query", status_code=303)


def _deputy_data(principal: Annotated[Principal, Depends(DEPUTY)]) -> dict[str, object]:
    return {"deputy": {"name": principal.deputy_name, "delegation": principal.deputy_delegation}}


# Public: no sign-in, and nothing of a signed-in officer is shown even if a cookie is present.
pages.add("/query", "query.html", title="阳光警务查询", headers={"X-Robots-Tag": "noindex"})
pages.add("/deputy", "deputy.html", title="我的建议提案", user=DEPUTY, data=_deputy_data)
pages.add("/follow-ups", "follow_ups.html", title="回访", user=page_user(Role.OPERATOR))
pages.add("/deliveries", "deliveries.html", title="送达处理", user=page_user(Role.OPERATOR, Role.SUPERVISOR))
pages.add("/messages", "messages.html", title="消息记录", user=page_user(Role.SUPERVISOR))


async def _todo_data() -> dict[str, object]:
    return {"kinds": NOTIFICATION_KIND_LABELS}


# The 待办 inbox of everyone who works on matters (the deputies' notices are on their own page).
INBOX_USER = page_user(Role.OPERATOR, Role.INSPECTOR, Role.SUPERVISOR, Role.LEADER)
pages.add("/todo", "todo.html", title="待办", user=INBOX_USER, data=_todo_data)


@web_router.get("/api/v1/stats/satisfaction")
async def satisfaction_statistics(
    session: Session,
    principal: Annotated[Principal, Depends(require_roles(Role.SUPERVISOR))],
    weeks: Annotated[int, Query(ge=1, le=104)] = 12,
) -> dict[str, object]:
    """Ratings given in the last ``weeks`` weeks, per handling team (the team's code is its area's)."""
    since = utcnow() - timedelta(weeks=weeks)
    by_team = await satisfaction_by_team(session=session, since=since)
    return {"since": since.isoformat(), "weeks": weeks, "by_team": by_team}
