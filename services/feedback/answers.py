"""Answers: the draft from a conclusion, edits, approval (publication), and the reply letters to deputies.

An answer is ``pending_approval`` until a supervisor approves it and
``delivered`` from then on: the public query shows it at once, whether or not
it has reached the person yet (that is tracked by its deliveries).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import clocks, notifications
from services.feedback.cases import add_timeline, known_case, local_date, set_status
from services.feedback.context import FeedbackContext
from services.feedback.deliveries import deliver_to_repeats, new_delivery, serve_answer
from services.feedback.letters import CLASSIFICATION_LABELS, LetterContent, render_docx
from services.feedback.models import (
    Answer,
    AnswerStatus,
    CaseStatus,
    CaseView,
    Channel,
    Delivery,
    DeliveryKind,
    Letter,
    NotificationKind,
    Stage,
)
from shared.audit import audit
from shared.db import utcnow
from shared.errors import NotFound, conflict
from shared.events import CaseConcluded
from shared.pagination import Key, Page
from shared.states import CaseKind

OUTCOME_PUBLIC = {
    "substantiated": "反映问题属实",
    "mostly_substantiated": "反映问题基本属实",
    "partly_substantiated": "反映问题部分属实",
    "unsubstantiated": "反映问题不属实",
    "unverifiable": "反映问题无法查实",
    "no_finding": "未作核查结论",
}


def draft_text(*, ctx: FeedbackContext, case: CaseView, event: CaseConcluded) -> str:
    if case.case_kind == CaseKind.SUGGESTION:
        # The body of the reply letter; title, salutation, classification and closing are added in the letter.
        return event.summary.strip()
    return ctx.template.format(
        received_date=local_date(case.received_at, ctx),
        accused_unit=case.accused_unit or "",
        categories="（" + "、".join(case.categories) + "）" if case.categories else "",
        team_name=case.team_name or "督察部门",
        outcome_label=OUTCOME_PUBLIC.get(event.outcome, event.outcome),
        summary=event.summary,
        tracking_code=case.tracking_code,
        issuing_unit=ctx.issuing_unit,
        answer_date=local_date(utcnow(), ctx),
        # The period the answer promises is the one the review clock enforces (deadlines.json).
        review_period=ctx.deadlines.later_period("review_request").describe(),
    ).strip()


def draft_answer(*, ctx: FeedbackContext, case: CaseView, event: CaseConcluded) -> Answer:
    """The answer a supervisor reviews before it is published."""
    return Answer(
        case_id=case.case_id,
        round=case.round,
        source_event_id=event.event_id,
        follow_up=event.follow_up,
        text=draft_text(ctx=ctx, case=case, event=event),
        outcome=event.outcome,
        classification=event.classification,
    )


def classification_label(classification: str | None) -> str | None:
    return CLASSIFICATION_LABELS.get(classification) if classification else None


# --- Queries -------------------------------------------------------------------------------------


async def get_answer(*, session: AsyncSession, answer_id: str, lock: bool = False) -> Answer:
    answer = await session.get(Answer, answer_id, with_for_update=lock)
    if answer is None:
        raise NotFound("答复不存在")
    structlog.contextvars.bind_contextvars(case_id=answer.case_id)
    return answer


async def list_answers(
    *, session: AsyncSession, case_id: str | None, status: AnswerStatus | None, page: Page
) -> list[Answer]:
    """Answers, oldest first, a page by keyset (created_at, id), with the total."""
    query = select(Answer)
    if case_id:
        structlog.contextvars.bind_contextvars(case_id=case_id)
        query = query.where(Answer.case_id == case_id)
    if status:
        query = query.where(Answer.status == status)
    keys = (Key(col(Answer.created_at)), Key(col(Answer.id)))
    return await page.rows(session, query, keys)


async def delivered_answer(*, session: AsyncSession, case_id: str) -> Answer | None:
    """The latest approved answer of any round: what the public query shows."""
    return (
        await session.exec(
            select(Answer)
            .where(Answer.case_id == case_id, Answer.status == AnswerStatus.DELIVERED)
            .order_by(col(Answer.delivered_at).desc())
        )
    ).first()


async def current_answer(*, session: AsyncSession, case: CaseView) -> Answer | None:
    """The latest approved answer of the matter's current round: the one a rating or review is about."""
    return (
        await session.exec(
            select(Answer)
            .where(
                Answer.case_id == case.case_id,
                Answer.status == AnswerStatus.DELIVERED,
                Answer.round == case.round,
            )
            .order_by(col(Answer.delivered_at).desc())
        )
    ).first()


# --- Editing and approval ------------------------------------------------------------------------


async def edit(*, session: AsyncSession, answer: Answer, text: str, actor: str) -> Answer:
    """Change the draft's text; the audit trail keeps the text before and after."""
    if answer.status != AnswerStatus.PENDING_APPROVAL:
        raise conflict("status", "已发布的答复不能修改", "an approved answer cannot be edited")
    before, answer.text = answer.text, text.strip()
    await audit(
        session,
        case_id=answer.case_id,
        action="answer_edited",
        actor=actor,
        detail={"answer_id": answer.id, "before": before, "after": answer.text},
    )
    return answer


async def _approvable_case(session: AsyncSession, answer: Answer) -> CaseView:
    if answer.status != AnswerStatus.PENDING_APPROVAL:
        raise conflict("status", "该答复已审核发布", "the answer was already approved")
    case = await known_case(session, answer.case_id)
    if answer.round != case.round:
        raise conflict("round", "该答复已被新一轮办理取代", "the answer belongs to an earlier round")
    if case.status == CaseStatus.CLOSED:
        raise conflict("status", "本件已结案，不能再发布答复", "the matter is closed")
    return case


def _publish(session: AsyncSession, *, case: CaseView, answer: Answer, approver: str, at: datetime) -> None:
    answer.approved_by = approver
    answer.approved_at = at
    answer.status = AnswerStatus.DELIVERED
    answer.delivered_at = at
    session.add(answer)
    if answer.follow_up:
        # The follow-up reply is here: what remains is the deputy's rating of it, like any reply.
        case.awaiting_follow_up = False
    set_status(case, CaseStatus.ANSWERED)
    session.add(case)
    add_timeline(session, case.case_id, Stage.ANSWERED, "已答复", at)


async def approve(
    *, session: AsyncSession, ctx: FeedbackContext, answer: Answer, approver: str, correlation_id: str | None
) -> Delivery | None:
    """Publish the answer; returns the delivery to attempt at once (leased to the caller), if any."""
    case = await _approvable_case(session, answer)
    now = utcnow()
    _publish(session, case=case, answer=answer, approver=approver, at=now)
    # The answer-approval clock and the supervisors' items about it are done.
    await clocks.stop_clocks(
        session, case_id=case.case_id, names=(clocks.ClockName.ANSWER_APPROVAL,), at=now, note="已审核发布"
    )
    await notifications.close_items(
        session=session, case_id=case.case_id, kinds=(NotificationKind.APPROVAL_DUE,), by=approver, at=now
    )
    delivery: Delivery | None = None
    if case.case_kind == CaseKind.SUGGESTION:
        content = letter_content(ctx=ctx, case=case, answer=answer, issued_at=now)
        session.add(
            Letter(
                answer_id=answer.id, case_id=case.case_id, title=content.title, content=render_docx(content)
            )
        )
    if case.case_kind == CaseKind.SUGGESTION or case.anonymous:
        # Nobody to send it to: the deputy downloads the letter, the anonymous complainant queries.
        await serve_answer(
            session,
            case=case,
            answer=answer,
            channel=Channel.NONE,
            at=now,
            actor=approver,
            correlation_id=correlation_id,
        )
    else:
        delivery = new_delivery(
            session,
            case_id=case.case_id,
            kind=DeliveryKind.ANSWER,
            answer_id=answer.id,
            subject=f"关于您反映问题的答复（查询码：{case.tracking_code}）",
            text=answer.text,
            correlation_id=correlation_id,
            lease_until=now + timedelta(seconds=ctx.delivery.lease_seconds),
        )
    # The callers of repeats linked to this matter (重复件) get the answer too, each by their own code.
    await deliver_to_repeats(session, case=case, answer=answer, correlation_id=correlation_id)
    await audit(
        session,
        case_id=case.case_id,
        action="answer_approved",
        actor=approver,
        detail={"answer_id": answer.id, "delivery_id": delivery.id if delivery else None},
    )
    return delivery


# --- Reply letters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LetterFile:
    """A reply letter ready to download, with the suggestion it answers (which names the file)."""

    case: CaseView
    title: str
    content: bytes


def letter_content(
    *, ctx: FeedbackContext, case: CaseView, answer: Answer, issued_at: datetime
) -> LetterContent:
    return LetterContent(
        kind=case.suggestion_kind or "npc_suggestion",
        session=case.session or "",
        number=case.number or "",
        suggestion_title=case.title or "",
        member_name=case.deputy_name or "",
        body=answer.text,
        classification=answer.classification,
        issuing_unit=ctx.issuing_unit,
        issued_on=issued_at.astimezone(ctx.calendar.tz).date(),
        contact_name=ctx.letter_contact_name,
        contact_phone=ctx.letter_contact_phone,
        follow_up=answer.follow_up,
    )


async def answer_letter(*, session: AsyncSession, ctx: FeedbackContext, answer: Answer) -> LetterFile:
    """The reply letter to a deputy: as issued once approved, otherwise a preview dated today."""
    case = await session.get(CaseView, answer.case_id)
    if case is None or case.case_kind != CaseKind.SUGGESTION:
        raise NotFound("只有代表建议、委员提案的答复有答复函")
    letter = await session.get(Letter, answer.id)
    if letter is not None:
        return LetterFile(case=case, title=letter.title, content=letter.content)
    content = letter_content(ctx=ctx, case=case, answer=answer, issued_at=utcnow())
    return LetterFile(case=case, title=content.title, content=render_docx(content))


async def issued_letter(*, session: AsyncSession, case_id: str) -> Letter | None:
    answer = await delivered_answer(session=session, case_id=case_id)
    return await session.get(Letter, answer.id) if answer is not None else None
