"""Notifications (通知) and the 待办 inbox: every ladder step, notice and follow-up reaches people.

A notification is addressed to an audience, not copied per person: ``team:<code>`` (every
inspector of the team), ``role:supervisor`` (the city supervisors), ``role:operator``,
``leader:<county code>`` (that bureau's 分管领导) or ``user:<username>``.  A person's
notifications are those of the audiences they belong to; reading one is recorded per person.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.models import NotificationKind

SUPERVISORS = "role:supervisor"
OPERATORS = "role:operator"


def team(code: str) -> str:
    return f"team:{code}"


def leader(county_code: str) -> str:
    return f"leader:{county_code}"


def user(username: str) -> str:
    return f"user:{username}"


async def notify(
    *,
    session: AsyncSession,
    kind: NotificationKind,
    audiences: Sequence[str],
    dedupe_key: str,
    case_id: str | None,
    title: str,
    link: str | None = None,
    due_at: datetime | None = None,
    at: datetime,
) -> None:
    """Create one notification per audience, once: a second call with the same ``dedupe_key`` and
    audience (a redelivered event, a second scheduler) changes nothing.  Runs inside the caller's
    transaction, so the notification commits with the effect that caused it."""
    raise NotImplementedError  # filled in by the notifications work (issue 12)


async def close_items(
    *,
    session: AsyncSession,
    case_id: str,
    kinds: Sequence[NotificationKind],
    by: str,
    at: datetime,
) -> None:
    """Mark the open items of ``kinds`` on a matter handled (the thing they asked for was done)."""
    raise NotImplementedError  # filled in by the notifications work (issue 12)
