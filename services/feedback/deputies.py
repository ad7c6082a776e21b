"""What a deputy (代表、委员) sees: their own suggestions, the replies and letters, their ratings."""

from __future__ import annotations

import structlog
from sqlalchemy import ColumnElement
from sqlmodel import and_, col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.answers import classification_label, delivered_answer, issued_letter
from services.feedback.cases import is_deputys_own, public_clocks, status_label
from services.feedback.models import CaseStatus, CaseView, Letter
from services.feedback.ratings import can_rate, latest_rating
from services.feedback.schemas import DeputySuggestionRead
from shared.auth import Principal, Role
from shared.errors import NotFound
from shared.states import CaseKind


async def deputy_suggestions(*, session: AsyncSession, deputy: Principal) -> list[CaseView]:
    """The deputy's own suggestions, newest first: the query form of ``is_deputys_own``."""
    own: ColumnElement[bool] = col(CaseView.deputy_account) == deputy.username
    if deputy.deputy_name_unique and deputy.deputy_name and deputy.deputy_delegation:
        own = or_(
            own,
            and_(
                col(CaseView.deputy_account).is_(None),
                CaseView.deputy_name == deputy.deputy_name,
                CaseView.deputy_delegation == deputy.deputy_delegation,
            ),
        )
    return list(
        await session.exec(
            select(CaseView)
            .where(CaseView.case_kind == CaseKind.SUGGESTION, own)
            .order_by(col(CaseView.received_at).desc())
        )
    )


async def deputy_case(*, session: AsyncSession, case_id: str, deputy: Principal) -> CaseView | None:
    """The suggestion if it is this deputy's own; None otherwise, indistinguishable from not existing."""
    case = await session.get(CaseView, case_id)
    if case is None or not is_deputys_own(case, deputy=deputy):
        return None
    return case


async def own_suggestion(
    *, session: AsyncSession, case_id: str, deputy: Principal, lock: bool = False
) -> CaseView:
    case = await deputy_case(session=session, case_id=case_id, deputy=deputy)
    if case is None:
        # Another deputy's suggestion answers exactly like one that does not exist.
        raise NotFound("建议（提案）不存在")
    if lock:
        await session.refresh(case, with_for_update=True)
    structlog.contextvars.bind_contextvars(case_id=case.case_id)
    return case


async def own_letter(*, session: AsyncSession, case: CaseView) -> Letter:
    letter = await issued_letter(session=session, case_id=case.case_id)
    if letter is None:
        raise NotFound("答复函尚未发出")
    return letter


def _deputy_status_label(case: CaseView) -> str:
    if case.awaiting_follow_up and case.status == CaseStatus.ANSWERED:
        return "已答复（B类，待落实后再次答复）"
    return status_label(case.status)


# What a deputy's view of a suggestion shows of the feedback's view of it, under the same names.
DEPUTY_VIEW_FIELDS = {
    "case_id",
    "tracking_code",
    "session",
    "number",
    "title",
    "status",
    "lead_unit",
    "team_code",
    "team_name",
    "classification",
    "awaiting_follow_up",
    "received_at",
}


async def suggestion_view(*, session: AsyncSession, case: CaseView) -> DeputySuggestionRead:
    answer = await delivered_answer(session=session, case_id=case.case_id)
    letter = await session.get(Letter, answer.id) if answer else None
    rating = await latest_rating(session=session, case_id=case.case_id, round_=case.round)
    clocks = public_clocks(case)
    return DeputySuggestionRead(
        **case.model_dump(include=DEPUTY_VIEW_FIELDS),
        kind=case.suggestion_kind,
        status_label=_deputy_status_label(case),
        due_at=next(
            (c.due_at for c in clocks if c.name == "deputy_reply"),
            clocks[0].due_at if clocks else None,
        ),
        clocks=clocks,
        reply=answer.text if answer else None,
        replied_at=answer.delivered_at if answer else None,
        classification_label=classification_label(case.classification),
        letter_url=f"/api/v1/deputy/suggestions/{case.case_id}/letter" if letter else None,
        can_rate=await can_rate(session=session, case=case),
        rating=rating.rating if rating else None,
    )


async def suggestion_views(*, session: AsyncSession, deputy: Principal) -> list[DeputySuggestionRead]:
    """The deputy's own suggestions, newest first; none for an account that is not a deputy's."""
    if deputy.role != Role.DEPUTY:
        return []
    cases = await deputy_suggestions(session=session, deputy=deputy)
    return [await suggestion_view(session=session, case=case) for case in cases]
