"""Deliveries of answers and notices: queued, sent, failed, recorded by a person, retried.

``AnswerDelivered`` means "the answer reached the person", published once per
answer: at approval when nobody is to be sent anything (an anonymous
complainant, a deputy who downloads the letter; channel ``none``), otherwise
when the first delivery succeeds (``sms``, ``email``, ``phone``, ``letter``).
Sending itself (the gateway, SMTP, the background worker) is in ``sending``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import acceptance, clocks, notifications
from services.feedback.cases import add_timeline, known_case
from services.feedback.context import FeedbackContext
from services.feedback.models import (
    UNSENT,
    Answer,
    AnswerStatus,
    CaseStatus,
    CaseView,
    Channel,
    Delivery,
    DeliveryKind,
    DeliveryMode,
    DeliveryStatus,
    Stage,
)
from shared.audit import audit
from shared.db import CommitSignal, utcnow, where_given
from shared.errors import NotFound, conflict
from shared.events import AnswerDelivered
from shared.logging import get_logger, mask_text
from shared.outbox import record_event
from shared.pagination import Key, Page

log = get_logger(__name__)

CHANNEL_LABELS = {
    Channel.SMS: "短信",
    Channel.EMAIL: "电子邮件",
    Channel.PHONE: "电话",
    Channel.LETTER: "信函",
    Channel.NONE: "查询平台",
}
WORKER_ACTOR = "service:feedback"
# Set on a session that added a delivery: the delivery worker wakes as soon as that transaction commits.
delivery_queued = CommitSignal("feedback_delivery")


def new_delivery(
    session: AsyncSession,
    *,
    case_id: str,
    kind: DeliveryKind,
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
        mode=DeliveryMode.AUTO,
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


async def serve_answer(
    session: AsyncSession,
    *,
    case: CaseView,
    answer: Answer,
    channel: Channel,
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
    if case.round != answer.round or case.status != CaseStatus.ANSWERED:
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


def deliver_to_repeat(
    session: AsyncSession, *, case: CaseView, repeat: CaseView, answer: Answer, correlation_id: str | None
) -> Delivery:
    """The answer of ``case`` to the caller of ``repeat``, a repeat linked to it (重复件), by their own code."""
    return new_delivery(
        session,
        case_id=repeat.case_id,
        kind=DeliveryKind.ANSWER,
        answer_id=answer.id,
        subject=f"关于您反映问题的答复（查询码：{repeat.tracking_code}）",
        text=answer.text.replace(case.tracking_code, repeat.tracking_code),
        correlation_id=correlation_id,
    )


async def deliver_to_repeats(
    session: AsyncSession, *, case: CaseView, answer: Answer, correlation_id: str | None
) -> list[Delivery]:
    """The answer of ``case`` to the callers of every repeat linked to it, each a delivery of its own."""
    repeats = await session.exec(
        select(CaseView).where(CaseView.repeat_of == case.case_id, col(CaseView.anonymous).is_(False))
    )
    return [
        deliver_to_repeat(session, case=case, repeat=repeat, answer=answer, correlation_id=correlation_id)
        for repeat in repeats
    ]


def _settle(delivery: Delivery, status: DeliveryStatus, at: datetime) -> None:
    """Nothing more is attempted automatically: no lease, no next attempt."""
    delivery.status = status
    delivery.lease_until = None
    delivery.next_attempt_at = None
    delivery.updated_at = at


async def _cancel_other_deliveries(session: AsyncSession, *, delivery: Delivery, at: datetime) -> None:
    for other in await session.exec(
        select(Delivery).where(
            Delivery.answer_id == delivery.answer_id,
            # The same answer to a linked repeat's caller (重复件) is another person's delivery.
            Delivery.case_id == delivery.case_id,
            Delivery.id != delivery.id,
            col(Delivery.status).in_(UNSENT),
        )
    ):
        _settle(other, DeliveryStatus.CANCELLED, at)
        session.add(other)
        await notifications.close_item(
            session=session, dedupe_key=notifications.delivery_key(other.id), by=WORKER_ACTOR, at=at
        )


async def mark_sent(
    session: AsyncSession,
    *,
    delivery: Delivery,
    channel: Channel,
    at: datetime,
    actor: str,
) -> None:
    _settle(delivery, DeliveryStatus.SENT, at)
    delivery.channel = channel
    delivery.sent_at = at
    session.add(delivery)
    # A failed delivery's 待办 item is done once it went out (again, or by a person).
    await notifications.close_item(
        session=session, dedupe_key=notifications.delivery_key(delivery.id), by=actor, at=at
    )
    case = await known_case(session, delivery.case_id)
    if delivery.kind == DeliveryKind.ANSWER and delivery.answer_id:
        answer = await session.get(Answer, delivery.answer_id)
        if answer is not None and case.repeat_of is not None:
            # A linked repeat's caller has the open matter's answer; whether that matter's own
            # complainant has it (the review window, AnswerDelivered) is that matter's delivery.
            add_timeline(
                session, case.case_id, Stage.DELIVERED, f"答复已通过{CHANNEL_LABELS[channel]}送达", at
            )
        elif answer is not None:
            first = answer.served_at is None
            await serve_answer(
                session,
                case=case,
                answer=answer,
                channel=channel,
                at=at,
                actor=actor,
                correlation_id=delivery.correlation_id,
            )
            if first:
                label = f"答复已通过{CHANNEL_LABELS[channel]}送达"
                add_timeline(session, case.case_id, Stage.DELIVERED, label, at)
        # The person has the answer: the other ways of sending it are no longer needed.
        await _cancel_other_deliveries(session, delivery=delivery, at=at)
    # The acceptance notice (告知受理) reached the person: verification's acceptance clock stops.
    await clocks.acceptance_notice_sent(session, delivery=delivery, channel=channel, at=at, actor=actor)
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
    channel: Channel | None,
    error: str,
    permanent: bool,
    at: datetime,
) -> None:
    delivery.lease_until = None
    delivery.updated_at = at
    if delivery.status != DeliveryStatus.PENDING:
        # Cancelled (someone phoned the person) while this attempt was under way.
        session.add(delivery)
        return
    delivery.attempts += 1
    delivery.last_error = error[:300]
    if channel:
        delivery.channel = channel
    if permanent or delivery.attempts >= ctx.delivery.max_attempts:
        _settle(delivery, DeliveryStatus.FAILED, at)
        log.warning("delivery failed; handed to a person", delivery_id=delivery.id, error=delivery.last_error)
        await audit(
            session,
            case_id=delivery.case_id,
            action="delivery_failed",
            actor=WORKER_ACTOR,
            reason=delivery.last_error,
            detail={"delivery_id": delivery.id, "kind": delivery.kind, "attempts": delivery.attempts},
        )
        case = await known_case(session, delivery.case_id)
        await notifications.delivery_failed(
            session=session, delivery=delivery, tracking_code=case.tracking_code, at=at, calendar=ctx.calendar
        )
        await acceptance.notice_undeliverable(
            session=session, delivery=delivery, tracking_code=case.tracking_code, at=at, calendar=ctx.calendar
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


async def cancel_delivery(session: AsyncSession, *, delivery: Delivery, reason: str, at: datetime) -> None:
    """Nobody to send it to (a staff message to a bureau with no contact on file): nothing more is tried."""
    if delivery.status != DeliveryStatus.PENDING:
        session.add(delivery)
        return
    delivery.last_error = reason[:300]
    _settle(delivery, DeliveryStatus.CANCELLED, at)
    session.add(delivery)
    log.info("delivery cancelled: nobody to send it to", delivery_id=delivery.id, error=delivery.last_error)


async def record_manual_delivery(
    session: AsyncSession,
    *,
    answer: Answer,
    channel: Channel,
    note: str,
    actor: str,
    correlation_id: str | None,
) -> Delivery:
    if answer.status != AnswerStatus.DELIVERED:
        raise conflict("status", "答复审核发布后才能登记送达", "the answer is not approved yet")
    case = await known_case(session, answer.case_id)
    if case.anonymous:
        raise conflict("channel", "匿名投诉无法电话或信函告知", "an anonymous complainant cannot be reached")
    delivery = Delivery(
        case_id=case.case_id,
        answer_id=answer.id,
        kind=DeliveryKind.ANSWER,
        mode=DeliveryMode.MANUAL,
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
    session: AsyncSession, *, delivery: Delivery, channel: Channel, note: str, actor: str
) -> Delivery:
    if delivery.status not in UNSENT:
        raise conflict(
            "status",
            f"该送达记录状态为“{delivery.status}”，无需人工处理",
            f"the delivery is {delivery.status}",
        )
    delivery.mode = DeliveryMode.MANUAL
    delivery.recorded_by = actor
    delivery.note = mask_text(note.strip())
    await mark_sent(session, delivery=delivery, channel=channel, at=utcnow(), actor=actor)
    return delivery


async def retry_delivery(
    session: AsyncSession, *, ctx: FeedbackContext, delivery: Delivery, actor: str
) -> Delivery:
    """A person asks for another series of automatic attempts; the caller makes the first one at once."""
    if delivery.status != DeliveryStatus.FAILED or delivery.mode != DeliveryMode.AUTO:
        raise conflict(
            "status",
            f"只有自动发送失败的记录可以重试（当前状态：{delivery.status}）",
            f"only a failed automatic delivery can be retried (it is {delivery.status})",
        )
    now = utcnow()
    delivery.status = DeliveryStatus.PENDING
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


async def delivery_for_update(*, session: AsyncSession, delivery_id: str) -> Delivery:
    delivery = await session.get(Delivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise NotFound("送达记录不存在")
    structlog.contextvars.bind_contextvars(case_id=delivery.case_id)
    return delivery


async def fresh_delivery(*, session: AsyncSession, delivery_id: str) -> Delivery:
    """The row as stored now: the worker updates deliveries through its own sessions."""
    delivery = await session.get(Delivery, delivery_id, populate_existing=True)
    if delivery is None:
        raise NotFound("送达记录不存在")
    return delivery


async def list_deliveries(
    *,
    session: AsyncSession,
    status: DeliveryStatus | None,
    case_id: str | None,
    kind: DeliveryKind | None,
    page: Page,
) -> list[Delivery]:
    """Deliveries, latest changed first, a page by keyset (updated_at, id), with the total."""
    filtered = where_given(
        select(Delivery), (Delivery.status, status), (Delivery.case_id, case_id), (Delivery.kind, kind)
    )
    keys = (Key(col(Delivery.updated_at), descending=True), Key(col(Delivery.id), descending=True))
    return await page.rows(session, filtered, keys)


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
