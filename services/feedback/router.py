"""Feedback's HTTP API: the public query, answers and deliveries, follow-up, the deputies' view."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import service
from services.feedback.context import FeedbackContext
from services.feedback.delivery import DeliveryWorker
from services.feedback.letters import DOCX_MEDIA_TYPE, render_docx
from services.feedback.models import Answer, CaseView, Delivery, Letter
from services.feedback.schemas import (
    AnswerEdit,
    AnswerRead,
    CaseRatingIn,
    CaseReviewRequestIn,
    DeliveryRead,
    DeliveryStatus,
    DeputySuggestionRead,
    LookupIn,
    LookupOut,
    ManualDeliveryIn,
    PublicClock,
    RatingIn,
    RatingOut,
    ReviewRequestIn,
    TimelineItem,
)
from shared.app import current_correlation_id, get_session
from shared.auth import Principal, Role, require_roles
from shared.db import utcnow

router = APIRouter(prefix="/api/v1")
Session = Annotated[AsyncSession, Depends(get_session)]
Supervisor = Annotated[Principal, Depends(require_roles(Role.SUPERVISOR))]
Operator = Annotated[Principal, Depends(require_roles(Role.OPERATOR))]
OperatorOrSupervisor = Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.SUPERVISOR))]
Deputy = Annotated[Principal, Depends(require_roles(Role.DEPUTY))]

NOT_FOUND = "查询码或查询密码不正确"
NO_STORE = {"Cache-Control": "no-store"}


# async: FastAPI runs a plain `def` dependency on its thread pool, a hop per request.
async def feedback_context(request: Request) -> FeedbackContext:
    ctx: FeedbackContext = request.app.state.feedback
    return ctx


async def delivery_worker(request: Request) -> DeliveryWorker:
    worker: DeliveryWorker = request.app.state.delivery_worker
    return worker


Context = Annotated[FeedbackContext, Depends(feedback_context)]
Worker = Annotated[DeliveryWorker, Depends(delivery_worker)]


def public_clocks(case: CaseView) -> list[PublicClock]:
    return [
        PublicClock(name=c["name"], label=c["label"], due_at=c["due_at"], extended=bool(c.get("extended")))
        for c in case.clocks
    ]


# --- The public query ----------------------------------------------------------------------------


async def _public_case(
    session: AsyncSession, ctx: FeedbackContext, request: Request, body: LookupIn, *, lock: bool = False
) -> CaseView:
    ctx.limiter.check(request, body.tracking_code)
    case = await service.find_by_code(
        session=session,
        signing_key=ctx.signing_key,
        tracking_code=body.tracking_code,
        query_secret=body.query_secret,
    )
    if case is None:
        # The same answer for an unknown code and a wrong secret: the query reveals nothing.
        raise HTTPException(status_code=404, detail=NOT_FOUND, headers=NO_STORE)
    if lock:
        await session.refresh(case, with_for_update=True)
    structlog.contextvars.bind_contextvars(case_id=case.case_id)
    return case


@router.post("/public/lookup", response_model=LookupOut, tags=["public"])
async def public_lookup(
    body: LookupIn, request: Request, response: Response, session: Session, ctx: Context
) -> LookupOut:
    response.headers["Cache-Control"] = "no-store"
    case = await _public_case(session, ctx, request, body)
    answer = await service.delivered_answer(session=session, case_id=case.case_id)
    rating = await service.latest_rating(session=session, case_id=case.case_id, round_=case.round)
    entries = await service.timeline(session=session, case_id=case.case_id)
    refusal, current = await service.review_refusal(session=session, ctx=ctx, case=case, now=utcnow())
    review_until = service.review_due(ctx, current) if current is not None else None
    clocks = public_clocks(case)
    if review_until is not None:
        label = ctx.deadlines.later["review_request"][0]
        clocks.append(PublicClock(name="review_request", label=label, due_at=review_until))
    return LookupOut(
        tracking_code=case.tracking_code,
        kind=case.case_kind,
        status=case.status,
        status_label=service.status_label(case.status),
        received_at=case.received_at,
        timeline=[TimelineItem(stage=e.stage, label=e.label, at=e.at) for e in entries],
        clocks=clocks,
        answer=answer.text if answer else None,
        answered_at=answer.delivered_at if answer else None,
        can_rate=await service.can_rate(session=session, case=case),
        rating=rating.rating if rating else None,
        can_request_review=refusal is None and current is not None,
        review_until=review_until,
    )


def _rating_message(case: CaseView) -> str:
    if case.status == "reopened":
        return "已收到您的意见，本件将提级重新办理"
    if case.status == "closed":
        return f"感谢您的评价。{case.closed_note}" if case.reopen_count else "感谢您的评价"
    return "感谢您的评价"


@router.post("/public/rating", response_model=RatingOut, tags=["public"])
async def public_rating(
    body: RatingIn, request: Request, response: Response, session: Session, ctx: Context
) -> RatingOut:
    response.headers["Cache-Control"] = "no-store"
    async with session.begin():
        case = await _public_case(session, ctx, request, body, lock=True)
        case = await service.rate(
            session=session,
            ctx=ctx,
            case=case,
            rating=body.rating,
            reason=(body.reason or "").strip() or None,
            source="public",
            actor=None,
            correlation_id=current_correlation_id(),
        )
    return RatingOut(
        status=case.status, status_label=service.status_label(case.status), message=_rating_message(case)
    )


def _review_message(case: CaseView) -> str:
    if case.status == "reopened":
        return "已收到您的复查申请，本件将提级重新办理，办理结果将再次答复您"
    return f"已收到您的复查申请。{case.closed_note or ''}"


@router.post("/public/review-request", response_model=RatingOut, tags=["public"])
async def public_review_request(
    body: ReviewRequestIn, request: Request, response: Response, session: Session, ctx: Context
) -> RatingOut:
    response.headers["Cache-Control"] = "no-store"
    async with session.begin():
        case = await _public_case(session, ctx, request, body, lock=True)
        case = await service.request_review(
            session=session,
            ctx=ctx,
            case=case,
            reason=body.reason.strip(),
            source="public",
            actor=None,
            correlation_id=current_correlation_id(),
        )
    return RatingOut(
        status=case.status, status_label=service.status_label(case.status), message=_review_message(case)
    )


# --- Operators: follow-up calls and review requests taken down -----------------------------------


async def _case_for_update(session: AsyncSession, case_id: str) -> CaseView:
    case = await session.get(CaseView, case_id, with_for_update=True)
    if case is None:
        raise HTTPException(status_code=404, detail="事项不存在")
    structlog.contextvars.bind_contextvars(case_id=case.case_id)
    return case


@router.post("/cases/{case_id}/rating", response_model=RatingOut, tags=["follow-up"])
async def operator_rating(
    case_id: str, body: CaseRatingIn, session: Session, ctx: Context, principal: Operator
) -> RatingOut:
    async with session.begin():
        case = await _case_for_update(session, case_id)
        case = await service.rate(
            session=session,
            ctx=ctx,
            case=case,
            rating=body.rating,
            reason=(body.reason or "").strip() or None,
            source="operator",
            actor=principal.username,
            correlation_id=current_correlation_id(),
        )
    return RatingOut(
        status=case.status, status_label=service.status_label(case.status), message=_rating_message(case)
    )


@router.post("/cases/{case_id}/review-request", response_model=RatingOut, tags=["follow-up"])
async def operator_review_request(
    case_id: str, body: CaseReviewRequestIn, session: Session, ctx: Context, principal: Operator
) -> RatingOut:
    async with session.begin():
        case = await _case_for_update(session, case_id)
        case = await service.request_review(
            session=session,
            ctx=ctx,
            case=case,
            reason=body.reason.strip(),
            source="operator",
            actor=principal.username,
            correlation_id=current_correlation_id(),
        )
    return RatingOut(
        status=case.status, status_label=service.status_label(case.status), message=_review_message(case)
    )


# --- Answers -------------------------------------------------------------------------------------


def delivery_read(delivery: Delivery) -> DeliveryRead:
    return DeliveryRead.model_validate(delivery, from_attributes=True)


def answer_read(answer: Answer, deliveries: list[Delivery]) -> AnswerRead:
    read = AnswerRead.model_validate(answer, from_attributes=True)
    read.deliveries = [delivery_read(d) for d in deliveries]
    return read


async def _answer(session: AsyncSession, answer_id: str, *, lock: bool = False) -> Answer:
    answer = await session.get(Answer, answer_id, with_for_update=lock)
    if answer is None:
        raise HTTPException(status_code=404, detail="答复不存在")
    structlog.contextvars.bind_contextvars(case_id=answer.case_id)
    return answer


async def _answer_with_deliveries(session: AsyncSession, answer_id: str) -> AnswerRead:
    async with session.begin():
        answer = await session.get(Answer, answer_id, populate_existing=True)
        assert answer is not None
        found = await service.deliveries_of(session=session, answer_ids=[answer.id])
    return answer_read(answer, found[answer.id])


@router.get("/answers", response_model=list[AnswerRead], tags=["answers"])
async def list_answers(
    session: Session,
    principal: Supervisor,
    case_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["pending_approval", "delivered"] | None = None,
) -> list[AnswerRead]:
    query = select(Answer).order_by(col(Answer.created_at))
    if case_id:
        structlog.contextvars.bind_contextvars(case_id=case_id)
        query = query.where(Answer.case_id == case_id)
    if status:
        query = query.where(Answer.status == status)
    answers = list(await session.exec(query))
    found = await service.deliveries_of(session=session, answer_ids=[a.id for a in answers])
    return [answer_read(a, found[a.id]) for a in answers]


@router.put("/answers/{answer_id}", response_model=AnswerRead, tags=["answers"])
async def edit_answer(
    answer_id: str, body: AnswerEdit, session: Session, principal: Supervisor
) -> AnswerRead:
    async with session.begin():
        answer = await _answer(session, answer_id, lock=True)
        if answer.status != "pending_approval":
            raise service.conflict("status", "已发布的答复不能修改", "an approved answer cannot be edited")
        answer.text = body.text.strip()
        session.add(answer)
    return answer_read(answer, [])


@router.post("/answers/{answer_id}/approve", response_model=AnswerRead, tags=["answers"])
async def approve_answer(
    answer_id: str, session: Session, ctx: Context, worker: Worker, principal: Supervisor
) -> AnswerRead:
    async with session.begin():
        answer = await _answer(session, answer_id, lock=True)
        delivery = await service.approve(
            session=session,
            ctx=ctx,
            answer=answer,
            approver=principal.username,
            correlation_id=current_correlation_id(),
        )
    if delivery is not None:
        # The first attempt now, so the supervisor sees whether it went out; retries are the worker's.
        await worker.attempt(delivery.id)
    return await _answer_with_deliveries(session, answer_id)


@router.get("/answers/{answer_id}/letter", tags=["answers"])
async def answer_letter(answer_id: str, session: Session, ctx: Context, principal: Supervisor) -> Response:
    """The reply letter to a deputy: as issued once approved, otherwise a preview dated today."""
    answer = await _answer(session, answer_id)
    case = await session.get(CaseView, answer.case_id)
    if case is None or case.case_kind != "suggestion":
        raise HTTPException(status_code=404, detail="只有代表建议、委员提案的答复有答复函")
    letter = await session.get(Letter, answer.id)
    if letter is not None:
        return _docx_response(letter.content, letter.title, case)
    content = service.letter_content(ctx=ctx, case=case, answer=answer, issued_at=utcnow())
    return _docx_response(render_docx(content), content.title, case)


@router.post(
    "/answers/{answer_id}/deliveries", response_model=DeliveryRead, status_code=201, tags=["answers"]
)
async def record_delivery(
    answer_id: str, body: ManualDeliveryIn, session: Session, principal: OperatorOrSupervisor
) -> DeliveryRead:
    async with session.begin():
        answer = await _answer(session, answer_id, lock=True)
        delivery = await service.record_manual_delivery(
            session,
            answer=answer,
            channel=body.channel,
            note=body.note,
            actor=principal.username,
            correlation_id=current_correlation_id(),
        )
    return delivery_read(delivery)


# --- Deliveries needing a person -----------------------------------------------------------------


async def _delivery(session: AsyncSession, delivery_id: str) -> Delivery:
    delivery = await session.get(Delivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise HTTPException(status_code=404, detail="送达记录不存在")
    structlog.contextvars.bind_contextvars(case_id=delivery.case_id)
    return delivery


@router.get("/deliveries", response_model=list[DeliveryRead], tags=["deliveries"])
async def list_deliveries(
    session: Session,
    principal: OperatorOrSupervisor,
    status: DeliveryStatus | None = None,
    case_id: Annotated[str | None, Query(max_length=64)] = None,
    kind: Literal["answer", "notice"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[DeliveryRead]:
    query = select(Delivery).order_by(col(Delivery.updated_at).desc()).limit(limit).offset(offset)
    if status:
        query = query.where(Delivery.status == status)
    if case_id:
        query = query.where(Delivery.case_id == case_id)
    if kind:
        query = query.where(Delivery.kind == kind)
    return [delivery_read(d) for d in await session.exec(query)]


@router.post("/deliveries/{delivery_id}/retry", response_model=DeliveryRead, tags=["deliveries"])
async def retry_delivery(
    delivery_id: str, session: Session, ctx: Context, worker: Worker, principal: OperatorOrSupervisor
) -> DeliveryRead:
    async with session.begin():
        delivery = await _delivery(session, delivery_id)
        await service.retry_delivery(session, ctx=ctx, delivery=delivery, actor=principal.username)
    await worker.attempt(delivery_id)
    async with session.begin():
        refreshed = await session.get(Delivery, delivery_id, populate_existing=True)
        assert refreshed is not None
    return delivery_read(refreshed)


@router.post("/deliveries/{delivery_id}/resolve", response_model=DeliveryRead, tags=["deliveries"])
async def resolve_delivery(
    delivery_id: str, body: ManualDeliveryIn, session: Session, principal: OperatorOrSupervisor
) -> DeliveryRead:
    """A person reached the complainant another way (phone, letter): the delivery is done."""
    async with session.begin():
        delivery = await _delivery(session, delivery_id)
        await service.resolve_manually(
            session, delivery=delivery, channel=body.channel, note=body.note, actor=principal.username
        )
    return delivery_read(delivery)


# --- Deputies ------------------------------------------------------------------------------------


def _docx_response(content: bytes, title: str, case: CaseView) -> Response:
    ascii_name = f"reply-{case.number or case.case_id}.docx"
    return Response(
        content=content,
        media_type=DOCX_MEDIA_TYPE,
        headers={
            "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(title + '.docx')}",
            "Cache-Control": "private, no-store",
        },
    )


async def _own_suggestion(
    session: AsyncSession, principal: Principal, case_id: str, *, lock: bool = False
) -> CaseView:
    case = await service.deputy_case(
        session=session,
        case_id=case_id,
        deputy_name=principal.deputy_name,
        deputy_delegation=principal.deputy_delegation,
    )
    if case is None:
        # Another deputy's suggestion answers exactly like one that does not exist.
        raise HTTPException(status_code=404, detail="建议（提案）不存在")
    if lock:
        await session.refresh(case, with_for_update=True)
    structlog.contextvars.bind_contextvars(case_id=case.case_id)
    return case


@router.get("/deputy/suggestions", response_model=list[DeputySuggestionRead], tags=["deputy"])
async def deputy_suggestions(session: Session, principal: Deputy) -> list[DeputySuggestionRead]:
    if not principal.deputy_name or not principal.deputy_delegation:
        return []
    cases = await service.deputy_suggestions(
        session=session, deputy_name=principal.deputy_name, deputy_delegation=principal.deputy_delegation
    )
    result = []
    for case in cases:
        answer = await service.delivered_answer(session=session, case_id=case.case_id)
        letter = await session.get(Letter, answer.id) if answer else None
        rating = await service.latest_rating(session=session, case_id=case.case_id, round_=case.round)
        clocks = public_clocks(case)
        result.append(
            DeputySuggestionRead(
                case_id=case.case_id,
                tracking_code=case.tracking_code,
                kind=case.suggestion_kind,
                session=case.session,
                number=case.number,
                title=case.title,
                status=case.status,
                status_label=(
                    "已答复（B类，待落实后再次答复）"
                    if case.awaiting_follow_up and case.status == "answered"
                    else service.status_label(case.status)
                ),
                lead_unit=case.lead_unit,
                team_code=case.team_code,
                team_name=case.team_name,
                due_at=next(
                    (c.due_at for c in clocks if c.name == "deputy_reply"),
                    clocks[0].due_at if clocks else None,
                ),
                clocks=clocks,
                reply=answer.text if answer else None,
                replied_at=answer.delivered_at if answer else None,
                classification=case.classification,
                classification_label=service.classification_label(case.classification),
                letter_url=f"/api/v1/deputy/suggestions/{case.case_id}/letter" if letter else None,
                can_rate=await service.can_rate(session=session, case=case),
                rating=rating.rating if rating else None,
                awaiting_follow_up=case.awaiting_follow_up,
                received_at=case.received_at,
            )
        )
    return result


@router.get("/deputy/suggestions/{case_id}/letter", tags=["deputy"])
async def deputy_letter(case_id: str, session: Session, principal: Deputy) -> Response:
    case = await _own_suggestion(session, principal, case_id)
    letter = await service.issued_letter(session=session, case_id=case.case_id)
    if letter is None:
        raise HTTPException(status_code=404, detail="答复函尚未发出")
    return _docx_response(letter.content, letter.title, case)


@router.post("/deputy/suggestions/{case_id}/rating", response_model=RatingOut, tags=["deputy"])
async def deputy_rating(
    case_id: str, body: CaseRatingIn, session: Session, ctx: Context, principal: Deputy
) -> RatingOut:
    async with session.begin():
        case = await _own_suggestion(session, principal, case_id, lock=True)
        case = await service.rate(
            session=session,
            ctx=ctx,
            case=case,
            rating=body.rating,
            reason=(body.reason or "").strip() or None,
            source="deputy",
            actor=principal.username,
            correlation_id=current_correlation_id(),
        )
    if case.status == "reopened":
        message = "已收到您的意见，本件已退回承办单位重新办理"
    elif case.awaiting_follow_up:
        message = "感谢您的评价。本件为B类答复，承办单位落实后将再次答复您"
    else:
        message = _rating_message(case)
    return RatingOut(status=case.status, status_label=service.status_label(case.status), message=message)
