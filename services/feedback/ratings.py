"""Ratings and review requests (复查) of an answer, and what follows them: closing or reopening the matter."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.answers import current_answer
from services.feedback.cases import add_timeline, is_deputys_own, local_date, set_status
from services.feedback.context import FeedbackContext
from services.feedback.models import Answer, CaseStatus, CaseView, RatingRow, ReviewRequest, Source, Stage
from services.feedback.schemas import RATING_LABELS
from shared.audit import audit
from shared.auth import Principal, Role
from shared.db import utcnow
from shared.errors import FieldProblems, Forbidden, conflict
from shared.events import CaseClosed, CaseReopened, RatingRecorded
from shared.outbox import record_event
from shared.states import CaseKind, Rating


async def rating_of(*, session: AsyncSession, answer_id: str) -> RatingRow | None:
    return (
        await session.exec(
            select(RatingRow).where(RatingRow.answer_id == answer_id).order_by(col(RatingRow.at).desc())
        )
    ).first()


async def latest_rating(*, session: AsyncSession, case_id: str, round_: int) -> RatingRow | None:
    return (
        await session.exec(
            select(RatingRow)
            .where(RatingRow.case_id == case_id, RatingRow.round == round_)
            .order_by(col(RatingRow.at).desc())
        )
    ).first()


async def can_rate(*, session: AsyncSession, case: CaseView) -> bool:
    if case.status != CaseStatus.ANSWERED:
        return False
    answer = await current_answer(session=session, case=case)
    return answer is not None and await rating_of(session=session, answer_id=answer.id) is None


# --- Closing and reopening -----------------------------------------------------------------------


def close(
    session: AsyncSession, case: CaseView, *, note: str, actor: str, correlation_id: str | None, at: datetime
) -> None:
    set_status(case, CaseStatus.CLOSED)
    case.closed_note = note[:300]
    case.awaiting_follow_up = False
    session.add(case)
    add_timeline(session, case.case_id, Stage.CLOSED, f"已结案（{note}）", at)
    record_event(
        session, CaseClosed(case_id=case.case_id, correlation_id=correlation_id, actor=actor, note=note)
    )


def reopen_or_close(
    session: AsyncSession,
    *,
    ctx: FeedbackContext,
    case: CaseView,
    why: str,
    reason: str | None,
    actor: str,
    correlation_id: str | None,
    at: datetime,
) -> None:
    if case.reopen_count >= ctx.max_reopens:
        note = f"{why}；本件已重新办理{case.reopen_count}次，依规办结。如仍有异议，可向上一级机关反映"
        close(session, case, note=note, actor=actor, correlation_id=correlation_id, at=at)
        return
    case.reopen_count += 1
    case.round += 1
    case.awaiting_follow_up = False
    case.closed_note = None
    set_status(case, CaseStatus.REOPENED)
    session.add(case)
    handled_again = "已交承办单位重新办理" if case.case_kind == CaseKind.SUGGESTION else "已提级重新办理"
    add_timeline(session, case.case_id, Stage.REOPENED, f"{why}，{handled_again}", at)
    record_event(
        session,
        CaseReopened(
            case_id=case.case_id,
            correlation_id=correlation_id,
            actor=actor,
            case_kind=case.case_kind,
            # Routing words a deputy's re-handling itself; a complaint's reason says which route led here.
            reason=(reason or why)
            if case.case_kind == CaseKind.SUGGESTION
            else (f"{why}：{reason}" if reason else why),
            previous_team_codes=case.teams_so_far,
            round=case.round,
        ),
    )


# --- Ratings -------------------------------------------------------------------------------------


async def _rated_answer(session: AsyncSession, case: CaseView) -> Answer:
    """The answer a rating now would be about; refuses when there is none or it was rated."""
    if case.status == CaseStatus.REOPENED:
        raise conflict("rating", "本件正在重新办理，答复后可再评价", "the matter is being handled again")
    if case.status == CaseStatus.CLOSED:
        raise conflict("rating", "本件已结案，不能再评价", "the matter is closed")
    answer = await current_answer(session=session, case=case) if case.status == CaseStatus.ANSWERED else None
    if answer is None:
        raise conflict("rating", "答复后才能评价", "the matter can be rated once answered")
    if await rating_of(session=session, answer_id=answer.id) is not None:
        raise conflict("rating", "本次答复已评价", "this answer was already rated")
    return answer


def _after_rating(
    session: AsyncSession,
    *,
    ctx: FeedbackContext,
    case: CaseView,
    answer: Answer,
    rating: Rating,
    reason: str | None,
    actor: str,
    correlation_id: str | None,
    at: datetime,
) -> None:
    """Unsatisfied: handled again (or closed); a B-class reply: wait for the follow-up; else closed."""
    if rating == Rating.UNSATISFIED:
        reopen_or_close(
            session,
            ctx=ctx,
            case=case,
            why="不满意",
            reason=reason,
            actor=actor,
            correlation_id=correlation_id,
            at=at,
        )
    elif case.case_kind == CaseKind.SUGGESTION and answer.classification == "B" and not answer.follow_up:
        # B: being solved or planned; the suggestion stays on the ledger until the follow-up reply.
        case.awaiting_follow_up = True
        case.updated_at = at
        session.add(case)
        add_timeline(session, case.case_id, Stage.FOLLOW_UP, "B类事项，待承办单位落实后再次答复", at)
    else:
        note = f"评价{RATING_LABELS[rating]}"
        close(session, case, note=note, actor=actor, correlation_id=correlation_id, at=at)


def check_rater(*, case: CaseView, source: Source, rater: Principal | None) -> None:
    """Who may rate this matter: a suggestion only its own deputy; a complaint the holder of its
    public query (``rater`` None, the secret already checked) or an operator recording the
    follow-up call.  Anyone else is refused before anything is read or changed."""
    if case.case_kind == CaseKind.SUGGESTION:
        own = (
            source == Source.DEPUTY
            and rater is not None
            and rater.role == Role.DEPUTY
            and is_deputys_own(case, deputy=rater)
        )
        if not own:
            raise Forbidden("代表建议、委员提案只能由提出建议的代表（委员）本人评价")
        return
    if source == Source.PUBLIC and rater is None:
        return
    if source == Source.OPERATOR and rater is not None and rater.role == Role.OPERATOR:
        return
    raise Forbidden("投诉的答复由投诉人本人或回访的接线员评价")


async def rate(
    *,
    session: AsyncSession,
    ctx: FeedbackContext,
    case: CaseView,
    rating: Rating,
    reason: str | None,
    source: Source,
    rater: Principal | None,
    correlation_id: str | None,
) -> CaseView:
    """Records a rating of the current answer; ``rater`` is the signed-in person, None for the
    public query.  ``check_rater`` says who may; the answer's state says whether it can be rated."""
    check_rater(case=case, source=source, rater=rater)
    actor = rater.username if rater is not None else None
    who = actor or source
    answer = await _rated_answer(session, case)
    now = utcnow()
    row = RatingRow(
        case_id=case.case_id,
        answer_id=answer.id,
        round=case.round,
        rating=rating,
        reason=reason,
        source=source,
        recorded_by=actor,
    )
    session.add(row)
    add_timeline(session, case.case_id, Stage.RATED, f"评价：{RATING_LABELS[rating]}", now)
    recorded = row.model_dump(include={"case_id", "rating", "reason", "source", "round"})
    record_event(session, RatingRecorded(correlation_id=correlation_id, actor=who, **recorded))
    _after_rating(
        session,
        ctx=ctx,
        case=case,
        answer=answer,
        rating=rating,
        reason=reason,
        actor=who,
        correlation_id=correlation_id,
        at=now,
    )
    await audit(
        session,
        case_id=case.case_id,
        action="rated",
        actor=who,
        reason=reason,
        detail={"rating": rating, "source": source, "answer_id": answer.id},
    )
    return case


def rating_message(case: CaseView) -> str:
    """What the person who rated is told."""
    if case.status == CaseStatus.REOPENED:
        return "已收到您的意见，本件将提级重新办理"
    if case.status == CaseStatus.CLOSED:
        return f"感谢您的评价。{case.closed_note}" if case.reopen_count else "感谢您的评价"
    return "感谢您的评价"


def deputy_rating_message(case: CaseView) -> str:
    if case.status == CaseStatus.REOPENED:
        return "已收到您的意见，本件已退回承办单位重新办理"
    if case.awaiting_follow_up:
        return "感谢您的评价。本件为B类答复，承办单位落实后将再次答复您"
    return rating_message(case)


# --- Review requests -----------------------------------------------------------------------------


def review_due(ctx: FeedbackContext, answer: Answer) -> datetime | None:
    """Last moment to ask for a review; None while the written answer has not reached the person."""
    if answer.served_at is None:
        return None
    return ctx.deadlines.later_clock("review_request", calendar=ctx.calendar, start=answer.served_at).due_at


def _review_not_applicable(case: CaseView) -> FieldProblems | None:
    """Refusals that do not depend on the answer: the kind of matter and where it stands."""
    if case.case_kind != CaseKind.COMPLAINT:
        return conflict(
            "case_id",
            "代表建议、委员提案不适用复查程序，如不满意请由代表（委员）评价",
            "suggestions are rated by the deputy, not reviewed",
        )
    if case.status not in (CaseStatus.ANSWERED, CaseStatus.CLOSED):
        return conflict(
            "status",
            "本件尚未书面答复或正在重新办理，答复后方可申请复查",
            "a review can be asked once the matter is answered",
        )
    return None


def _review_too_late(
    *, ctx: FeedbackContext, case: CaseView, answer: Answer, now: datetime
) -> FieldProblems | None:
    if case.status == CaseStatus.CLOSED and case.reopen_count >= ctx.max_reopens:
        return conflict(
            "status",
            f"本件已重新办理{case.reopen_count}次并结案，不再受理复查申请；如仍有异议，可向上一级机关反映",
            "the matter was reopened as often as allowed and is closed",
        )
    due = review_due(ctx, answer)
    if due is not None and now > due:
        period = ctx.deadlines.later_period("review_request").describe()
        return conflict(
            "review_until",
            f"申请复查须在收到书面答复之日起{period}内提出，本件期限已于{local_date(due, ctx)}届满，不再受理复查申请",
            f"the review period ended on {due.date().isoformat()}",
        )
    return None


async def review_refusal(
    *, session: AsyncSession, ctx: FeedbackContext, case: CaseView, now: datetime
) -> tuple[FieldProblems | None, Answer | None]:
    """Why a review (复查) cannot be asked now, or None with the answer it would be about."""
    refusal = _review_not_applicable(case)
    if refusal is not None:
        return refusal, None
    answer = await current_answer(session=session, case=case)
    if answer is None:
        return conflict(
            "status", "本件没有可申请复查的书面答复", "there is no written answer to review"
        ), None
    return _review_too_late(ctx=ctx, case=case, answer=answer, now=now), answer


async def request_review(
    *,
    session: AsyncSession,
    ctx: FeedbackContext,
    case: CaseView,
    reason: str,
    source: Source,
    actor: str | None,
    correlation_id: str | None,
) -> CaseView:
    now = utcnow()
    refusal, answer = await review_refusal(session=session, ctx=ctx, case=case, now=now)
    if refusal is not None:
        raise refusal
    assert answer is not None
    who = actor or source
    session.add(
        ReviewRequest(
            case_id=case.case_id,
            answer_id=answer.id,
            round=case.round,
            reason=reason,
            source=source,
            recorded_by=actor,
        )
    )
    add_timeline(session, case.case_id, Stage.REVIEW, "已申请复查", now)
    reopen_or_close(
        session,
        ctx=ctx,
        case=case,
        why="申请复查",
        reason=reason,
        actor=who,
        correlation_id=correlation_id,
        at=now,
    )
    await audit(
        session,
        case_id=case.case_id,
        action="review_requested",
        actor=who,
        reason=reason,
        detail={"source": source, "answer_id": answer.id},
    )
    return case


def review_message(case: CaseView) -> str:
    """What the person who asked for a review is told."""
    if case.status == CaseStatus.REOPENED:
        return "已收到您的复查申请，本件将提级重新办理，办理结果将再次答复您"
    return f"已收到您的复查申请。{case.closed_note or ''}"


# --- Figures -------------------------------------------------------------------------------------


async def satisfaction_by_team(*, session: AsyncSession, since: datetime) -> dict[str, dict[str, int]]:
    """Ratings given since ``since``, counted per handling team (the team's code is its area's)."""
    rows = await session.exec(
        select(RatingRow.rating, CaseView.team_code)
        .join(CaseView, col(CaseView.case_id) == col(RatingRow.case_id))
        .where(col(RatingRow.at) >= since)
    )
    by_team: dict[str, dict[str, int]] = {}
    for rating, team_code in rows:
        counts = by_team.setdefault(
            team_code or "unassigned",
            {"rated": 0, **{value.value: 0 for value in Rating}},
        )
        counts["rated"] += 1
        if rating in counts:
            counts[rating] += 1
    return by_team
