"""Feedback's logic: the public projection, answers, ratings and reopening."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.models import Answer, CaseView, RatingRow, TimelineEntry
from services.feedback.schemas import RATING_LABELS, STATUS_LABELS
from shared.audit import audit
from shared.auth import query_secret_hash, service_token
from shared.db import utcnow
from shared.errors import FieldProblems
from shared.events import (
    AnswerDelivered,
    CaseAssigned,
    CaseClosed,
    CaseConcluded,
    CaseReopened,
    ComplaintReceived,
    FindingSentBack,
    MatterReclassified,
    RatingRecorded,
    ReviewStarted,
    SuggestionReceived,
    TaskClaimed,
)
from shared.logging import get_logger
from shared.outbox import record_event
from shared.workcalendar import SHANGHAI

log = get_logger(__name__)

DEFAULT_TEMPLATE = Path(__file__).resolve().parent / "templates" / "answer_complaint.txt"
OUTCOME_PUBLIC = {
    "substantiated": "反映问题属实",
    "mostly_substantiated": "反映问题基本属实",
    "partly_substantiated": "反映问题部分属实",
    "unsubstantiated": "反映问题不属实",
    "unverifiable": "反映问题无法查实",
    "no_finding": "未作核查结论",
}
CLASSIFICATION_LABELS = {
    "A": "A类（已解决或基本解决）",
    "B": "B类（正在解决或列入计划解决）",
    "C": "C类（因条件限制需以后解决）",
    "D": "D类（留作参考）",
}


class NotYetKnown(Exception):
    """An event for a matter whose first event has not arrived yet: retry later."""


@dataclass(frozen=True)
class FeedbackContext:
    signing_key: str
    intake_url: str
    template: str
    issuing_unit: str
    max_reopens: int
    sms_gateway_url: str | None
    intake_timeout: float


def _timeline(
    session: AsyncSession, case_id: str, stage: str, label: str, at: datetime | None = None
) -> None:
    session.add(TimelineEntry(case_id=case_id, stage=stage, label=label, at=at or utcnow()))


async def _case(session: AsyncSession, case_id: str) -> CaseView:
    case = await session.get(CaseView, case_id)
    if case is None:
        raise NotYetKnown(case_id)
    return case


def _set_status(case: CaseView, status: str) -> None:
    case.status = status
    case.updated_at = utcnow()


async def on_complaint_received(*, session: AsyncSession, event: ComplaintReceived) -> None:
    if await session.get(CaseView, event.case_id) is not None:
        return
    session.add(
        CaseView(
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
    if await session.get(CaseView, event.case_id) is not None:
        return
    session.add(
        CaseView(
            case_id=event.case_id,
            case_kind="suggestion",
            tracking_code=event.tracking_code,
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
        label = "已重新分派，提级核查"
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
        return (
            f"{case.deputy_name}代表：您提出的《{case.title}》（{case.session}第{case.number}号）收悉。"
            f"经研究办理，现答复如下：{event.summary}\n办理类别：{CLASSIFICATION_LABELS.get(event.classification or '', '')}\n"
            f"{ctx.issuing_unit}\n{utcnow().astimezone(SHANGHAI):%Y年%m月%d日}"
        )
    return ctx.template.format(
        received_date=f"{case.received_at.astimezone(SHANGHAI):%Y年%m月%d日}",
        accused_unit=case.accused_unit or "",
        categories="（" + "、".join(case.categories) + "）" if case.categories else "",
        team_name=case.team_name or "督察部门",
        outcome_label=OUTCOME_PUBLIC.get(event.outcome, event.outcome),
        summary=event.summary,
        tracking_code=case.tracking_code,
        issuing_unit=ctx.issuing_unit,
        answer_date=f"{utcnow().astimezone(SHANGHAI):%Y年%m月%d日}",
    ).strip()


async def on_case_concluded(*, session: AsyncSession, event: CaseConcluded, ctx: FeedbackContext) -> None:
    case = await _case(session, event.case_id)
    _set_status(case, "concluded")
    case.outcome = event.outcome
    case.classification = event.classification
    session.add(case)
    _timeline(session, case.case_id, "concluded", "已办结，待答复", event.occurred_at)
    session.add(
        Answer(
            case_id=case.case_id,
            round=case.round,
            source_event_id=event.event_id,
            text=draft_text(ctx=ctx, case=case, event=event),
            outcome=event.outcome,
            classification=event.classification,
        )
    )


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
    return (
        await session.exec(
            select(Answer)
            .where(Answer.case_id == case_id, Answer.status == "delivered")
            .order_by(col(Answer.delivered_at).desc())
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


async def fetch_contact(*, ctx: FeedbackContext, case_id: str, purpose: str) -> dict[str, object]:
    token = service_token(service="feedback", signing_key=ctx.signing_key)
    async with httpx.AsyncClient(base_url=ctx.intake_url, timeout=ctx.intake_timeout) as client:
        response = await client.get(
            f"/api/v1/complaints/{case_id}/contact",
            params={"purpose": purpose},
            headers={"Authorization": f"Bearer {token}"},
        )
        response.raise_for_status()
        data: dict[str, object] = response.json()
        return data


async def send_sms(*, ctx: FeedbackContext, answer: Answer, phone: str) -> None:
    assert ctx.sms_gateway_url
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.post(
            ctx.sms_gateway_url,
            json={"to": phone, "text": answer.text, "reference": answer.id},
            headers={"Idempotency-Key": f"answer-{answer.id}"},
        )
        response.raise_for_status()


async def approve_and_deliver(
    *, session: AsyncSession, ctx: FeedbackContext, answer: Answer, approver: str, correlation_id: str | None
) -> Answer:
    if answer.status == "delivered":
        raise FieldProblems([("status", "该答复已发送", "the answer was already delivered")], status_code=409)
    case = await _case(session, answer.case_id)
    if answer.round != case.round:
        raise FieldProblems(
            [("round", "该答复已被新一轮办理取代", "the answer belongs to an earlier round")], status_code=409
        )
    now = utcnow()
    answer.approved_by = approver
    answer.approved_at = now
    channel = "public"
    if case.case_kind == "complaint" and not case.anonymous:
        answer.delivery_attempts += 1
        try:
            contact = await fetch_contact(ctx=ctx, case_id=case.case_id, purpose="发送答复")
            phone = contact.get("phone")
            if ctx.sms_gateway_url and isinstance(phone, str) and phone:
                await send_sms(ctx=ctx, answer=answer, phone=phone)
                channel = "sms"
        except httpx.HTTPError as exc:
            # The answer still reaches the public query; the failed delivery is shown for a person to retry.
            answer.last_error = f"短信发送失败：{type(exc).__name__}"
            log.warning("answer delivery failed", error=type(exc).__name__)
    answer.status = "delivered"
    answer.channel = channel
    answer.delivered_at = now
    session.add(answer)
    _set_status(case, "answered")
    session.add(case)
    _timeline(session, case.case_id, "answered", "已答复", now)
    record_event(
        session,
        AnswerDelivered(
            case_id=case.case_id,
            correlation_id=correlation_id,
            actor=approver,
            answer_id=answer.id,
            channel="none" if channel == "public" else channel,
            delivered_at=now,
        ),
    )
    await audit(
        session,
        case_id=case.case_id,
        action="answer_approved",
        actor=approver,
        detail={"answer_id": answer.id, "channel": channel},
    )
    return answer


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
    if case.status != "answered":
        raise FieldProblems(
            [("rating", "答复送达后才能评价", "the matter can be rated once answered")], status_code=409
        )
    now = utcnow()
    session.add(
        RatingRow(
            case_id=case.case_id,
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
            actor=actor or "public",
            rating=rating,
            reason=reason,
            source=source,
            round=case.round,
        ),
    )
    if rating == "unsatisfied" and case.reopen_count < ctx.max_reopens:
        case.reopen_count += 1
        case.round += 1
        _set_status(case, "reopened")
        _timeline(session, case.case_id, "reopened", "不满意，已提级重新办理", now)
        record_event(
            session,
            CaseReopened(
                case_id=case.case_id,
                correlation_id=correlation_id,
                actor=actor or "public",
                case_kind=case.case_kind,
                reason=reason or "",
                previous_team_codes=case.teams_so_far,
                round=case.round,
            ),
        )
    else:
        note = (
            "评价满意，结案"
            if rating != "unsatisfied"
            else f"不满意，已重新办理{case.reopen_count}次，依规结案"
        )
        _set_status(case, "closed")
        _timeline(session, case.case_id, "closed", "已结案", now)
        record_event(
            session,
            CaseClosed(
                case_id=case.case_id, correlation_id=correlation_id, actor=actor or "public", note=note
            ),
        )
    session.add(case)
    await audit(
        session,
        case_id=case.case_id,
        action="rated",
        actor=actor or "public",
        reason=reason,
        detail={"rating": rating},
    )
    return case


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


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status)
