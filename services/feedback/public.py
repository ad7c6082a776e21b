"""The public query (阳光警务查询): a matter found by its tracking code and query secret, as the public sees it."""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.answers import delivered_answer
from services.feedback.cases import find_by_code, public_clocks, status_label, timeline
from services.feedback.context import FeedbackContext
from services.feedback.models import CaseView
from services.feedback.ratings import can_rate, latest_rating, review_due, review_refusal
from services.feedback.schemas import LookupOut, PublicClock, TimelineItem
from shared.db import utcnow
from shared.errors import NotFound

NOT_FOUND = "查询码或查询密码不正确"
NO_STORE = {"Cache-Control": "no-store"}


async def public_case(
    *,
    session: AsyncSession,
    engine: AsyncEngine,
    ctx: FeedbackContext,
    client_address: str,
    tracking_code: str,
    query_secret: str,
    lock: bool = False,
) -> CaseView:
    """The matter of the code and secret, within the public limits (``ratelimit`` says in what order).

    Must be the request's first use of ``session``: a failure ends its transaction.
    """
    await ctx.limiter.check_address(session=session, address=client_address)
    case = await find_by_code(
        session=session, signing_key=ctx.signing_key, tracking_code=tracking_code, query_secret=query_secret
    )
    if case is None:
        # The limiter counts on connections of its own, which on SQLite would wait for the write lock
        # this session's transaction holds (BEGIN IMMEDIATE); it has read, never written.
        await session.rollback()
        await ctx.limiter.count_failure(engine=engine, address=client_address, tracking_code=tracking_code)
        # The same answer for an unknown code and a wrong secret: the query reveals nothing.
        raise NotFound(NOT_FOUND, headers=NO_STORE)
    if lock:
        await session.refresh(case, with_for_update=True)
    structlog.contextvars.bind_contextvars(case_id=case.case_id)
    return case


async def repeat_view(*, session: AsyncSession, case: CaseView, primary: CaseView) -> LookupOut:
    """A linked repeat (重复件) as its caller sees it: the open matter's status, timeline and answer.

    Its own receipt is on the timeline too; rating and review are the open matter's complainant's.
    """
    answer = await delivered_answer(session=session, case_id=primary.case_id)
    entries = sorted(
        [
            *await timeline(session=session, case_id=case.case_id),
            *await timeline(session=session, case_id=primary.case_id),
        ],
        key=lambda e: (e.at, e.id or 0),
    )
    return LookupOut(
        tracking_code=case.tracking_code,
        kind=case.case_kind,
        status=primary.status,
        status_label=status_label(primary.status),
        received_at=case.received_at,
        timeline=[TimelineItem(stage=e.stage, label=e.label, at=e.at) for e in entries],
        clocks=public_clocks(primary),
        answer=answer.text.replace(primary.tracking_code, case.tracking_code) if answer else None,
        answered_at=answer.delivered_at if answer else None,
        can_rate=False,
        rating=None,
        can_request_review=False,
        review_until=None,
    )


async def lookup_view(*, session: AsyncSession, ctx: FeedbackContext, case: CaseView) -> LookupOut:
    if case.repeat_of is not None and (primary := await session.get(CaseView, case.repeat_of)) is not None:
        return await repeat_view(session=session, case=case, primary=primary)
    answer = await delivered_answer(session=session, case_id=case.case_id)
    rating = await latest_rating(session=session, case_id=case.case_id, round_=case.round)
    entries = await timeline(session=session, case_id=case.case_id)
    refusal, current = await review_refusal(session=session, ctx=ctx, case=case, now=utcnow())
    review_until = review_due(ctx, current) if current is not None else None
    clocks = public_clocks(case)
    if review_until is not None:
        label = ctx.deadlines.later["review_request"][0]
        clocks.append(PublicClock(name="review_request", label=label, due_at=review_until))
    return LookupOut(
        tracking_code=case.tracking_code,
        kind=case.case_kind,
        status=case.status,
        status_label=status_label(case.status),
        received_at=case.received_at,
        timeline=[TimelineItem(stage=e.stage, label=e.label, at=e.at) for e in entries],
        clocks=clocks,
        answer=answer.text if answer else None,
        answered_at=answer.delivered_at if answer else None,
        can_rate=await can_rate(session=session, case=case),
        rating=rating.rating if rating else None,
        can_request_review=refusal is None and current is not None,
        review_until=review_until,
    )
