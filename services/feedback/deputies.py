"""What a deputy (代表、委员) sees: their own suggestions, the replies and letters, their ratings."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from sqlalchemy import ColumnElement
from sqlmodel import and_, col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.answers import classification_label, issued_letter
from services.feedback.cases import is_deputys_own, public_clocks, status_label
from services.feedback.models import Answer, AnswerStatus, CaseStatus, CaseView, Letter, RatingRow
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


@dataclass
class _Replies:
    """What the deputy's view shows beside each suggestion, read for all of them at once."""

    delivered: dict[str, Answer] = field(default_factory=dict)  # the latest delivered answer
    current: dict[tuple[str, int], Answer] = field(default_factory=dict)  # per round, the latest
    letters: set[str] = field(default_factory=set)  # answers with an issued letter
    ratings: dict[tuple[str, int], RatingRow] = field(default_factory=dict)  # per round, the latest
    rated_answers: set[str] = field(default_factory=set)

    def can_rate(self, case: CaseView) -> bool:
        """``ratings.can_rate``, from the rows read."""
        if case.status != CaseStatus.ANSWERED:
            return False
        answer = self.current.get((case.case_id, case.round))
        return answer is not None and answer.id not in self.rated_answers


async def _replies(session: AsyncSession, case_ids: list[str]) -> _Replies:
    """Three queries for a deputy's suggestions, instead of four per suggestion."""
    replies = _Replies()
    # By matter only, the status checked here: with the status in the query SQLite read every
    # delivered answer by the status index (1.3 s at a million complaints).
    answers = await session.exec(
        select(Answer).where(col(Answer.case_id).in_(case_ids)).order_by(col(Answer.delivered_at).desc())
    )
    for answer in (a for a in answers if a.status == AnswerStatus.DELIVERED):
        replies.delivered.setdefault(answer.case_id, answer)
        replies.current.setdefault((answer.case_id, answer.round), answer)
    shown = [answer.id for answer in replies.delivered.values()]
    if shown:
        replies.letters = set(
            await session.exec(select(Letter.answer_id).where(col(Letter.answer_id).in_(shown)))
        )
    for rating in await session.exec(
        select(RatingRow).where(col(RatingRow.case_id).in_(case_ids)).order_by(col(RatingRow.at).desc())
    ):
        replies.ratings.setdefault((rating.case_id, rating.round), rating)
        if rating.answer_id:
            replies.rated_answers.add(rating.answer_id)
    return replies


def _suggestion_view(case: CaseView, replies: _Replies) -> DeputySuggestionRead:
    answer = replies.delivered.get(case.case_id)
    rating = replies.ratings.get((case.case_id, case.round))
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
        letter_url=(
            f"/api/v1/deputy/suggestions/{case.case_id}/letter"
            if answer and answer.id in replies.letters
            else None
        ),
        can_rate=replies.can_rate(case),
        rating=rating.rating if rating else None,
    )


async def suggestion_views(*, session: AsyncSession, deputy: Principal) -> list[DeputySuggestionRead]:
    """The deputy's own suggestions, newest first; none for an account that is not a deputy's."""
    if deputy.role != Role.DEPUTY:
        return []
    cases = await deputy_suggestions(session=session, deputy=deputy)
    if not cases:
        return []
    replies = await _replies(session, [case.case_id for case in cases])
    return [_suggestion_view(case, replies) for case in cases]
