"""Feedback's logic: the public projection, answers and their deliveries, ratings, review requests, reopening.

``AnswerDelivered`` means "the answer reached the person", published once per
answer: at approval when nobody is to be sent anything (an anonymous
complainant, a deputy who downloads the letter; channel ``none``), otherwise
when the first delivery succeeds (``sms``, ``email``, ``phone``, ``letter``).
The public query shows the answer from approval either way.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.context import FeedbackContext
from services.feedback.letters import CLASSIFICATION_LABELS, LetterContent, render_docx
from services.feedback.models import (
    Answer,
    CaseView,
    Delivery,
    Letter,
    RatingRow,
    ReviewRequest,
    TimelineEntry,
)
from services.feedback.schemas import RATING_LABELS, STATUS_LABELS
from shared.audit import audit
from shared.auth import query_secret_hash
from shared.db import CommitSignal, lookup, new_row, utcnow
from shared.errors import FieldProblems
from shared.events import (
    AnswerDelivered,
    CaseAssigned,
    CaseClosed,
    CaseConcluded,
    CaseReopened,
    ComplaintReceived,
    DeadlineExtended,
    FindingSentBack,
    MatterReclassified,
    RatingRecorded,
    ReviewStarted,
    SuggestionReceived,
    TaskClaimed,
)
from shared.logging import get_logger, mask_text
from shared.outbox import record_event
from shared.workcalendar import SHANGHAI

log = get_logger(__name__)

OUTCOME_PUBLIC = {
    "substantiated": "反映问题属实",
    "mostly_substantiated": "反映问题基本属实",
    "partly_substantiated": "反映问题部分属实",
    "unsubstantiated": "反映问题不属实",
    "unverifiable": "反映问题无法查实",
    "no_finding": "未作核查结论",
}
CHANNEL_LABELS = {"sms": "短信", "email": "电子邮件", "phone": "电话", "letter": "信函", "none": "查询平台"}
# Set on a session that added a delivery; the worker is woken after that session commits.
# The delivery worker wakes as soon as a transaction that queued a delivery commits.
delivery_queued = CommitSignal("feedback_delivery")
UNSENT = ("pending", "failed")


class NotYetKnown(Exception):
    """An event for a matter whose first event has not arrived yet: retry later."""


def conflict(field: str, chinese: str, english: str) -> FieldProblems:
    return FieldProblems([(field, chinese, english)], status_code=409)


def _timeline(
    session: AsyncSession, case_id: str, stage: str, label: str, at: datetime | None = None
) -> None:
    session.add(new_row(TimelineEntry, case_id=case_id, stage=stage, label=label, at=at or utcnow()))


async def _case(session: AsyncSession, case_id: str) -> CaseView:
    case = await lookup(session, CaseView, case_id)
    if case is None:
        raise NotYetKnown(case_id)
    return case


def _set_status(case: CaseView, status: str) -> None:
    case.status = status
    case.updated_at = utcnow()


def local_date(moment: datetime, ctx: FeedbackContext | None = None) -> str:
    return f"{moment.astimezone(ctx.calendar.tz if ctx else SHANGHAI):%Y年%m月%d日}"


# --- The projection of each matter, from the bus -------------------------------------------------


async def on_complaint_received(*, session: AsyncSession, event: ComplaintReceived) -> None:
    if await lookup(session, CaseView, event.case_id) is not None:
        return
    session.add(
        new_row(
            CaseView,
            case_id=event.case_id,
            case_kind="complaint",
            tracking_code=event.tracking_code,
            query_secret_hash=event.query_secret_hash,
            received_at=event.received_at,
            anonymous=event.anonymous,
            accused_unit=event.accused_unit,
            categories=[a.category for a in event.allegations],
        )
    )
    _timeline(session, event.case_id, "received", "投诉已受理", event.received_at)


async def on_suggestion_received(*, session: AsyncSession, event: SuggestionReceived) -> None:
    if await lookup(session, CaseView, event.case_id) is not None:
        return
    session.add(
        new_row(
            CaseView,
            case_id=event.case_id,
            case_kind="suggestion",
            tracking_code=event.tracking_code,
            query_secret_hash=event.query_secret_hash,
            received_at=event.received_at,
            title=event.title,
            session=event.session,
            number=event.number,
            suggestion_kind=event.kind,
            deputy_name=event.deputy_name,
            deputy_delegation=event.deputy_delegation,
            lead_unit=event.lead_unit,
        )
    )
    _timeline(session, event.case_id, "received", "建议（提案）已登记", event.received_at)


async def on_case_assigned(*, session: AsyncSession, event: CaseAssigned) -> None:
    case = await _case(session, event.case_id)
    case.team_code = event.team_code
    case.team_name = event.team_name
    case.teams_so_far = list(dict.fromkeys([*case.teams_so_far, event.team_code]))
    case.clocks = [c.model_dump(mode="json") for c in event.clocks]
    # After a reopen the public status stays "reopened" until the new team starts work.
    if case.status != "reopened":
        _set_status(case, "routed")
    session.add(case)
    label = "已分派督察部门核查" if case.case_kind == "complaint" else "已交承办单位办理"
    if event.round > 1:
        label = "已重新分派，提级核查" if case.case_kind == "complaint" else "已交承办单位重新办理"
    _timeline(session, case.case_id, "routed", label, event.occurred_at)


async def on_task_claimed(*, session: AsyncSession, event: TaskClaimed) -> None:
    case = await _case(session, event.case_id)
    _set_status(case, "verifying")
    session.add(case)
    _timeline(session, case.case_id, "verifying", "核查（办理）中", event.occurred_at)


async def on_review_started(*, session: AsyncSession, event: ReviewStarted) -> None:
    case = await _case(session, event.case_id)
    _set_status(case, "reviewing")
    session.add(case)
    _timeline(session, case.case_id, "reviewing", "核查结论复核中", event.occurred_at)


async def on_finding_sent_back(*, session: AsyncSession, event: FindingSentBack) -> None:
    case = await _case(session, event.case_id)
    _set_status(case, "verifying")
    session.add(case)
    _timeline(session, case.case_id, "verifying", "复核后补充核查", event.occurred_at)


async def on_matter_reclassified(*, session: AsyncSession, event: MatterReclassified) -> None:
    case = await _case(session, event.case_id)
    _set_status(case, "closed")
    session.add(case)
    if event.to_kind == "citizen_suggestion":
        label = f"经甄别不属于警务投诉，已作为群众建议转交{event.forwarded_to}办理"
    elif event.to_kind == "suggestion":
        label = "已转为代表建议（委员提案）办理"
    else:
        label = "已转为投诉办理"
    _timeline(session, case.case_id, "closed", label, event.occurred_at)


def draft_text(*, ctx: FeedbackContext, case: CaseView, event: CaseConcluded) -> str:
    if case.case_kind == "suggestion":
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


async def on_case_concluded(*, session: AsyncSession, event: CaseConcluded, ctx: FeedbackContext) -> None:
    case = await _case(session, event.case_id)
    if event.round < case.round or case.status == "closed":
        # A conclusion of an earlier round, or of a matter that has left this track: nothing to answer.
        log.info("conclusion of an earlier round or a closed matter ignored", round=event.round)
        return
    _set_status(case, "concluded")
    case.outcome = event.outcome
    if event.classification:
        case.classification = event.classification
    session.add(case)
    label = "后续办理已办结，待答复" if event.follow_up else "已办结，待答复"
    _timeline(session, case.case_id, "concluded", label, event.occurred_at)
    session.add(
        Answer(
            case_id=case.case_id,
            round=case.round,
            source_event_id=event.event_id,
            follow_up=event.follow_up,
            text=draft_text(ctx=ctx, case=case, event=event),
            outcome=event.outcome,
            classification=event.classification,
        )
    )


async def on_deadline_extended(
    *, session: AsyncSession, event: DeadlineExtended, ctx: FeedbackContext
) -> None:
    case = await _case(session, event.case_id)
    new_due = event.new_due_at.isoformat()
    clocks: list[dict[str, object]] = []
    found = False
    for clock in case.clocks:
        if clock.get("name") == event.clock:
            clock = {**clock, "due_at": new_due, "extended": True}
            found = True
        clocks.append(clock)
    if not found:
        label = next((c.label for c in ctx.deadlines.clocks if c.name == event.clock), "办理期限")
        clocks.append({"name": event.clock, "label": label, "due_at": new_due, "extended": True})
    case.clocks = clocks
    case.updated_at = utcnow()
    session.add(case)
    date_text = local_date(event.new_due_at, ctx)
    _timeline(session, case.case_id, "extended", f"办理期限已延长至{date_text}", event.occurred_at)
    if case.case_kind == "complaint" and not case.anonymous and case.status not in ("answered", "closed"):
        # The reason is the supervisor's internal note; the complainant is told the new date only.
        new_delivery(
            session,
            case_id=case.case_id,
            kind="notice",
            answer_id=None,
            subject=f"办理期限延长告知（查询码：{case.tracking_code}）",
            text=(
                f"您好！您反映的问题（查询码：{case.tracking_code}）经批准，办理期限依规延长至{date_text}。"
                "办理结果将及时告知您，您也可凭查询码和查询密码在“阳光警务查询”中查看办理进度。\n"
                f"{ctx.issuing_unit}"
            ),
            correlation_id=event.correlation_id,
        )
    await audit(
        session,
        case_id=case.case_id,
        action="deadline_extended",
        actor=event.actor or "verification",
        reason=event.reason,
        detail={"clock": event.clock, "new_due_at": new_due, "task_id": event.task_id},
    )


# --- Queries -------------------------------------------------------------------------------------


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


async def delivered_answer(*, session: AsyncSession, case_id: str) -> Answer | None:
    """The latest approved answer of any round: what the public query shows."""
    return (
        await session.exec(
            select(Answer)
            .where(Answer.case_id == case_id, Answer.status == "delivered")
            .order_by(col(Answer.delivered_at).desc())
        )
    ).first()


async def current_answer(*, session: AsyncSession, case: CaseView) -> Answer | None:
    """The latest approved answer of the matter's current round: the one a rating or review is about."""
    return (
        await session.exec(
            select(Answer)
            .where(Answer.case_id == case.case_id, Answer.status == "delivered", Answer.round == case.round)
            .order_by(col(Answer.delivered_at).desc())
        )
    ).first()


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
    if case.status != "answered":
        return False
    answer = await current_answer(session=session, case=case)
    return answer is not None and await rating_of(session=session, answer_id=answer.id) is None


async def deliveries_of(*, session: AsyncSession, answer_ids: list[str]) -> dict[str, list[Delivery]]:
    result: dict[str, list[Delivery]] = {answer_id: [] for answer_id in answer_ids}
    if not answer_ids:
        return result
    rows = await session.exec(
        select(Delivery)
        .where(col(Delivery.answer_id).in_(answer_ids))
        .order_by(col(Delivery.created_at))
        # The worker updates these rows through its own sessions: read them afresh.
        .execution_options(populate_existing=True)
    )
    for row in rows:
        result.setdefault(row.answer_id or "", []).append(row)
    return result


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status)


# --- Approval and delivery -----------------------------------------------------------------------


def new_delivery(
    session: AsyncSession,
    *,
    case_id: str,
    kind: str,
    answer_id: str | None,
    subject: str | None,
    text: str,
    correlation_id: str | None,
    lease_until: datetime | None = None,
) -> Delivery:
    """An automatic delivery, due now; the worker sends it (or the caller does, holding the lease)."""
    delivery = Delivery(
        case_id=case_id,
        answer_id=answer_id,
        kind=kind,
        mode="auto",
        subject=subject,
        text=text,
        idempotency_key="",
        next_attempt_at=utcnow(),
        lease_until=lease_until,
        correlation_id=correlation_id,
    )
    # One key per delivery, kept across its attempts: the gateway drops a repeated POST.
    delivery.idempotency_key = f"sv-delivery-{delivery.id}"
    session.add(delivery)
    delivery_queued.mark(session)
    return delivery


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


async def _serve(
    session: AsyncSession,
    *,
    case: CaseView,
    answer: Answer,
    channel: str,
    at: datetime,
    actor: str,
    correlation_id: str | None,
) -> None:
    """The answer reached the person: start the review window and announce it, once."""
    if answer.served_at is not None:
        return
    answer.served_at = at
    answer.channel = channel
    session.add(answer)
    if case.round != answer.round or case.status != "answered":
        # Rated or reopened before the delivery landed: announcing it now would set intake back to answered.
        log.info("answer reached the person after the matter moved on; not announced", channel=channel)
        return
    record_event(
        session,
        AnswerDelivered(
            case_id=case.case_id,
            correlation_id=correlation_id,
            actor=actor,
            answer_id=answer.id,
            channel=channel,
            delivered_at=at,
        ),
    )


async def approve(
    *, session: AsyncSession, ctx: FeedbackContext, answer: Answer, approver: str, correlation_id: str | None
) -> Delivery | None:
    """Publish the answer; returns the delivery to attempt at once (leased to the caller), if any."""
    if answer.status != "pending_approval":
        raise conflict("status", "该答复已审核发布", "the answer was already approved")
    case = await _case(session, answer.case_id)
    if answer.round != case.round:
        raise conflict("round", "该答复已被新一轮办理取代", "the answer belongs to an earlier round")
    if case.status == "closed":
        raise conflict("status", "本件已结案，不能再发布答复", "the matter is closed")
    now = utcnow()
    answer.approved_by = approver
    answer.approved_at = now
    answer.status = "delivered"
    answer.delivered_at = now
    session.add(answer)
    if answer.follow_up:
        # The follow-up reply is here: what remains is the deputy's rating of it, like any reply.
        case.awaiting_follow_up = False
    _set_status(case, "answered")
    session.add(case)
    _timeline(session, case.case_id, "answered", "已答复", now)
    delivery: Delivery | None = None
    if case.case_kind == "suggestion":
        content = letter_content(ctx=ctx, case=case, answer=answer, issued_at=now)
        session.add(
            Letter(
                answer_id=answer.id, case_id=case.case_id, title=content.title, content=render_docx(content)
            )
        )
    if case.case_kind == "suggestion" or case.anonymous:
        # Nobody to send it to: the deputy downloads the letter, the anonymous complainant queries.
        await _serve(
            session,
            case=case,
            answer=answer,
            channel="none",
            at=now,
            actor=approver,
            correlation_id=correlation_id,
        )
    else:
        delivery = new_delivery(
            session,
            case_id=case.case_id,
            kind="answer",
            answer_id=answer.id,
            subject=f"关于您反映问题的答复（查询码：{case.tracking_code}）",
            text=answer.text,
            correlation_id=correlation_id,
            lease_until=now + timedelta(seconds=ctx.delivery.lease_seconds),
        )
    await audit(
        session,
        case_id=case.case_id,
        action="answer_approved",
        actor=approver,
        detail={"answer_id": answer.id, "delivery_id": delivery.id if delivery else None},
    )
    return delivery


async def mark_sent(
    session: AsyncSession,
    *,
    delivery: Delivery,
    channel: str,
    at: datetime,
    actor: str,
) -> None:
    delivery.status = "sent"
    delivery.channel = channel
    delivery.sent_at = at
    delivery.lease_until = None
    delivery.next_attempt_at = None
    delivery.updated_at = at
    session.add(delivery)
    case = await _case(session, delivery.case_id)
    if delivery.kind == "answer" and delivery.answer_id:
        answer = await session.get(Answer, delivery.answer_id)
        if answer is not None:
            first = answer.served_at is None
            await _serve(
                session,
                case=case,
                answer=answer,
                channel=channel,
                at=at,
                actor=actor,
                correlation_id=delivery.correlation_id,
            )
            if first:
                _timeline(session, case.case_id, "delivered", f"答复已通过{CHANNEL_LABELS[channel]}送达", at)
        # The person has the answer: the other ways of sending it are no longer needed.
        for other in await session.exec(
            select(Delivery).where(
                Delivery.answer_id == delivery.answer_id,
                Delivery.id != delivery.id,
                col(Delivery.status).in_(UNSENT),
            )
        ):
            other.status = "cancelled"
            other.lease_until = None
            other.next_attempt_at = None
            other.updated_at = at
            session.add(other)
    await audit(
        session,
        case_id=case.case_id,
        action="delivery_sent",
        actor=actor,
        detail={"delivery_id": delivery.id, "kind": delivery.kind, "channel": channel, "mode": delivery.mode},
    )


async def record_failure(
    session: AsyncSession,
    *,
    ctx: FeedbackContext,
    delivery: Delivery,
    channel: str | None,
    error: str,
    permanent: bool,
    at: datetime,
) -> None:
    delivery.lease_until = None
    delivery.updated_at = at
    if delivery.status != "pending":
        # Cancelled (someone phoned the person) while this attempt was under way.
        session.add(delivery)
        return
    delivery.attempts += 1
    delivery.last_error = error[:300]
    if channel:
        delivery.channel = channel
    if permanent or delivery.attempts >= ctx.delivery.max_attempts:
        delivery.status = "failed"
        delivery.next_attempt_at = None
        log.warning("delivery failed; handed to a person", delivery_id=delivery.id, error=delivery.last_error)
        await audit(
            session,
            case_id=delivery.case_id,
            action="delivery_failed",
            actor="service:feedback",
            reason=delivery.last_error,
            detail={"delivery_id": delivery.id, "kind": delivery.kind, "attempts": delivery.attempts},
        )
    else:
        delivery.next_attempt_at = at + timedelta(seconds=ctx.delivery.backoff(delivery.attempts))
        log.info(
            "delivery attempt failed; will retry",
            delivery_id=delivery.id,
            attempts=delivery.attempts,
            error=delivery.last_error,
        )
    session.add(delivery)


async def record_manual_delivery(
    session: AsyncSession, *, answer: Answer, channel: str, note: str, actor: str, correlation_id: str | None
) -> Delivery:
    if answer.status != "delivered":
        raise conflict("status", "答复审核发布后才能登记送达", "the answer is not approved yet")
    case = await _case(session, answer.case_id)
    if case.anonymous:
        raise conflict("channel", "匿名投诉无法电话或信函告知", "an anonymous complainant cannot be reached")
    delivery = Delivery(
        case_id=case.case_id,
        answer_id=answer.id,
        kind="answer",
        mode="manual",
        channel=channel,
        text=answer.text,
        idempotency_key="",
        recorded_by=actor,
        # The note is free text: keep phone and ID numbers out of feedback's database.
        note=mask_text(note.strip()),
        correlation_id=correlation_id,
    )
    delivery.idempotency_key = f"sv-delivery-{delivery.id}"
    session.add(delivery)
    await mark_sent(session, delivery=delivery, channel=channel, at=utcnow(), actor=actor)
    return delivery


async def resolve_manually(
    session: AsyncSession, *, delivery: Delivery, channel: str, note: str, actor: str
) -> Delivery:
    if delivery.status not in UNSENT:
        raise conflict(
            "status",
            f"该送达记录状态为“{delivery.status}”，无需人工处理",
            f"the delivery is {delivery.status}",
        )
    delivery.mode = "manual"
    delivery.recorded_by = actor
    delivery.note = mask_text(note.strip())
    await mark_sent(session, delivery=delivery, channel=channel, at=utcnow(), actor=actor)
    return delivery


async def retry_delivery(
    session: AsyncSession, *, ctx: FeedbackContext, delivery: Delivery, actor: str
) -> Delivery:
    """A person asks for another series of automatic attempts; the caller makes the first one at once."""
    if delivery.status != "failed" or delivery.mode != "auto":
        raise conflict(
            "status",
            f"只有自动发送失败的记录可以重试（当前状态：{delivery.status}）",
            f"only a failed automatic delivery can be retried (it is {delivery.status})",
        )
    now = utcnow()
    delivery.status = "pending"
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.lease_until = now + timedelta(seconds=ctx.delivery.lease_seconds)
    delivery.updated_at = now
    session.add(delivery)
    delivery_queued.mark(session)
    await audit(
        session,
        case_id=delivery.case_id,
        action="delivery_retried",
        actor=actor,
        detail={"delivery_id": delivery.id, "last_error": delivery.last_error},
    )
    return delivery


# --- Ratings, review requests, reopening ---------------------------------------------------------


def _close(
    session: AsyncSession, case: CaseView, *, note: str, actor: str, correlation_id: str | None, at: datetime
) -> None:
    _set_status(case, "closed")
    case.closed_note = note[:300]
    case.awaiting_follow_up = False
    session.add(case)
    _timeline(session, case.case_id, "closed", f"已结案（{note}）", at)
    record_event(
        session, CaseClosed(case_id=case.case_id, correlation_id=correlation_id, actor=actor, note=note)
    )


def _reopen_or_close(
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
        _close(session, case, note=note, actor=actor, correlation_id=correlation_id, at=at)
        return
    case.reopen_count += 1
    case.round += 1
    case.awaiting_follow_up = False
    case.closed_note = None
    _set_status(case, "reopened")
    session.add(case)
    handled_again = "已交承办单位重新办理" if case.case_kind == "suggestion" else "已提级重新办理"
    label = f"{why}，{handled_again}"
    _timeline(session, case.case_id, "reopened", label, at)
    record_event(
        session,
        CaseReopened(
            case_id=case.case_id,
            correlation_id=correlation_id,
            actor=actor,
            case_kind=case.case_kind,
            # Routing words a deputy's re-handling itself; a complaint's reason says which route led here.
            reason=(reason or why)
            if case.case_kind == "suggestion"
            else (f"{why}：{reason}" if reason else why),
            previous_team_codes=case.teams_so_far,
            round=case.round,
        ),
    )


async def rate(
    *,
    session: AsyncSession,
    ctx: FeedbackContext,
    case: CaseView,
    rating: str,
    reason: str | None,
    source: str,
    actor: str | None,
    correlation_id: str | None,
) -> CaseView:
    who = actor or source
    if case.status == "reopened":
        raise conflict("rating", "本件正在重新办理，答复后可再评价", "the matter is being handled again")
    if case.status == "closed":
        raise conflict("rating", "本件已结案，不能再评价", "the matter is closed")
    answer = await current_answer(session=session, case=case) if case.status == "answered" else None
    if answer is None:
        raise conflict("rating", "答复后才能评价", "the matter can be rated once answered")
    if await rating_of(session=session, answer_id=answer.id) is not None:
        raise conflict("rating", "本次答复已评价", "this answer was already rated")
    now = utcnow()
    session.add(
        RatingRow(
            case_id=case.case_id,
            answer_id=answer.id,
            round=case.round,
            rating=rating,
            reason=reason,
            source=source,
            recorded_by=actor,
        )
    )
    _timeline(session, case.case_id, "rated", f"评价：{RATING_LABELS[rating]}", now)
    record_event(
        session,
        RatingRecorded(
            case_id=case.case_id,
            correlation_id=correlation_id,
            actor=who,
            rating=rating,
            reason=reason,
            source=source,
            round=case.round,
        ),
    )
    if rating == "unsatisfied":
        _reopen_or_close(
            session,
            ctx=ctx,
            case=case,
            why="不满意",
            reason=reason,
            actor=who,
            correlation_id=correlation_id,
            at=now,
        )
    elif case.case_kind == "suggestion" and answer.classification == "B" and not answer.follow_up:
        # B: being solved or planned; the suggestion stays on the ledger until the follow-up reply.
        case.awaiting_follow_up = True
        case.updated_at = now
        session.add(case)
        _timeline(session, case.case_id, "follow_up", "B类事项，待承办单位落实后再次答复", now)
    else:
        _close(
            session,
            case,
            note=f"评价{RATING_LABELS[rating]}",
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


def review_due(ctx: FeedbackContext, answer: Answer) -> datetime | None:
    """Last moment to ask for a review; None while the written answer has not reached the person."""
    if answer.served_at is None:
        return None
    return ctx.deadlines.later_clock("review_request", calendar=ctx.calendar, start=answer.served_at).due_at


async def review_refusal(
    *, session: AsyncSession, ctx: FeedbackContext, case: CaseView, now: datetime
) -> tuple[FieldProblems | None, Answer | None]:
    """Why a review (复查) cannot be asked now, or None with the answer it would be about."""
    if case.case_kind != "complaint":
        return (
            conflict(
                "case_id",
                "代表建议、委员提案不适用复查程序，如不满意请由代表（委员）评价",
                "suggestions are rated by the deputy, not reviewed",
            ),
            None,
        )
    if case.status not in ("answered", "closed"):
        return (
            conflict(
                "status",
                "本件尚未书面答复或正在重新办理，答复后方可申请复查",
                "a review can be asked once the matter is answered",
            ),
            None,
        )
    answer = await current_answer(session=session, case=case)
    if answer is None:
        return conflict(
            "status", "本件没有可申请复查的书面答复", "there is no written answer to review"
        ), None
    if case.status == "closed" and case.reopen_count >= ctx.max_reopens:
        return (
            conflict(
                "status",
                f"本件已重新办理{case.reopen_count}次并结案，不再受理复查申请；如仍有异议，可向上一级机关反映",
                "the matter was reopened as often as allowed and is closed",
            ),
            answer,
        )
    due = review_due(ctx, answer)
    if due is not None and now > due:
        period = ctx.deadlines.later_period("review_request").describe()
        return (
            conflict(
                "review_until",
                f"申请复查须在收到书面答复之日起{period}内提出，本件期限已于{local_date(due, ctx)}届满，不再受理复查申请",
                f"the review period ended on {due.date().isoformat()}",
            ),
            answer,
        )
    return None, answer


async def request_review(
    *,
    session: AsyncSession,
    ctx: FeedbackContext,
    case: CaseView,
    reason: str,
    source: str,
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
    _timeline(session, case.case_id, "review", "已申请复查", now)
    _reopen_or_close(
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


# --- Deputies ------------------------------------------------------------------------------------


async def deputy_suggestions(
    *, session: AsyncSession, deputy_name: str, deputy_delegation: str
) -> list[CaseView]:
    return list(
        await session.exec(
            select(CaseView)
            .where(
                CaseView.case_kind == "suggestion",
                CaseView.deputy_name == deputy_name,
                CaseView.deputy_delegation == deputy_delegation,
            )
            .order_by(col(CaseView.received_at).desc())
        )
    )


async def deputy_case(
    *, session: AsyncSession, case_id: str, deputy_name: str | None, deputy_delegation: str | None
) -> CaseView | None:
    """The suggestion if it is this deputy's own; None otherwise, indistinguishable from not existing."""
    case = await session.get(CaseView, case_id)
    if (
        case is None
        or case.case_kind != "suggestion"
        or not deputy_name
        or case.deputy_name != deputy_name
        or case.deputy_delegation != deputy_delegation
    ):
        return None
    return case


async def issued_letter(*, session: AsyncSession, case_id: str) -> Letter | None:
    answer = await delivered_answer(session=session, case_id=case_id)
    return await session.get(Letter, answer.id) if answer is not None else None


def classification_label(classification: str | None) -> str | None:
    return CLASSIFICATION_LABELS.get(classification) if classification else None
