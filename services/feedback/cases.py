"""The public-safe view of each matter: finding it, its status and timeline, dates as people read them."""

from __future__ import annotations

import hmac
from datetime import datetime

import structlog
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.context import FeedbackContext
from services.feedback.models import CaseStatus, CaseView, Stage, TimelineEntry
from services.feedback.schemas import STATUS_LABELS, PublicClock
from shared.auth import Principal, Role, query_secret_hash
from shared.db import new_row, utcnow
from shared.errors import NotFound
from shared.slice_rows import add_later, lookup
from shared.states import CaseKind
from shared.workcalendar import SHANGHAI


class NotYetKnown(Exception):
    """An event for a matter whose first event has not arrived yet: retry later."""


def add_timeline(
    session: AsyncSession, case_id: str, stage: Stage, label: str, at: datetime | None = None
) -> None:
    add_later(session, new_row(TimelineEntry, case_id=case_id, stage=stage, label=label, at=at or utcnow()))


async def known_case(session: AsyncSession, case_id: str) -> CaseView:
    """The matter an event or an answer is about; it must have arrived already."""
    case = await lookup(session, CaseView, case_id)
    if case is None:
        raise NotYetKnown(case_id)
    return case


async def case_for_update(*, session: AsyncSession, case_id: str) -> CaseView:
    case = await session.get(CaseView, case_id, with_for_update=True)
    if case is None:
        raise NotFound("事项不存在")
    structlog.contextvars.bind_contextvars(case_id=case.case_id)
    return case


def set_status(case: CaseView, status: CaseStatus) -> None:
    case.status = status
    case.updated_at = utcnow()


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status)


def local_date(moment: datetime, ctx: FeedbackContext | None = None) -> str:
    return f"{moment.astimezone(ctx.calendar.tz if ctx else SHANGHAI):%Y年%m月%d日}"


def public_clocks(case: CaseView) -> list[PublicClock]:
    return [
        PublicClock(name=c["name"], label=c["label"], due_at=c["due_at"], extended=bool(c.get("extended")))
        for c in case.clocks
    ]


async def find_by_code(
    *, session: AsyncSession, signing_key: str, tracking_code: str, query_secret: str
) -> CaseView | None:
    code = tracking_code.strip().upper()
    case = (await session.exec(select(CaseView).where(CaseView.tracking_code == code))).first()
    if case is None or case.query_secret_hash is None:
        return None
    expected = query_secret_hash(signing_key=signing_key, tracking_code=code, query_secret=query_secret)
    return case if hmac.compare_digest(expected, case.query_secret_hash) else None


async def timeline(*, session: AsyncSession, case_id: str) -> list[TimelineEntry]:
    return list(
        await session.exec(
            select(TimelineEntry)
            .where(TimelineEntry.case_id == case_id)
            .order_by(col(TimelineEntry.at), col(TimelineEntry.id))
        )
    )


def is_deputys_own(case: CaseView, *, deputy: Principal) -> bool:
    """The suggestion is this deputy's own: the one test for the deputy's view, letter and rating.

    Matched by account: two deputies of one name in one delegation are two people.  A suggestion
    recorded without an account is matched by name and delegation only when intake vouched, at
    sign-in, that no other deputy account has that pair (``deputy_name_unique``); else by nobody.
    """
    if case.case_kind != CaseKind.SUGGESTION or deputy.role != Role.DEPUTY:
        return False
    if case.deputy_account is not None:
        return case.deputy_account == deputy.username
    return (
        deputy.deputy_name_unique
        and bool(deputy.deputy_name)
        and case.deputy_name == deputy.deputy_name
        and case.deputy_delegation == deputy.deputy_delegation
    )
