"""Feedback's HTTP API: the public query, answers and deliveries, follow-up, the deputies' view.

HTTP only: the refusals are the domain modules' errors, answered by the app in one place.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import answers, cases, deliveries, deputies, inbox_api, messages, public, ratings
from services.feedback.context import FeedbackContext
from services.feedback.letters import DOCX_MEDIA_TYPE
from services.feedback.models import (
    Answer,
    AnswerStatus,
    CaseView,
    Channel,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Source,
)
from services.feedback.schemas import (
    AnswerEdit,
    AnswerRead,
    AnswerStatusName,
    CaseRatingIn,
    CaseReviewRequestIn,
    DeliveryKindName,
    DeliveryRead,
    DeliveryStatusName,
    DeputySuggestionRead,
    LookupIn,
    LookupOut,
    ManualDeliveryIn,
    MessageRead,
    RatingIn,
    RatingOut,
    ReviewRequestIn,
)
from services.feedback.sending import DeliverySender
from shared.apidocs import attachment, file_route
from shared.app import current_correlation_id, runtime_of
from shared.auth import Principal
from shared.deps import Deputy, Operator, OperatorOrSupervisor, Session, Supervisor, app_state
from shared.pagination import Page, page_headers, paging, whole
from shared.states import Rating
from shared.validation import Line

router = APIRouter(prefix="/api/v1")


# async: FastAPI runs a plain `def` dependency on its thread pool, a hop per request.
async def delivery_sender(request: Request) -> DeliverySender:
    sender: DeliverySender | None = getattr(request.app.state, "delivery_sender", None)
    if sender is None:
        raise RuntimeError("delivery sender used before the service started")
    return sender


Context = Annotated[FeedbackContext, Depends(app_state("feedback", FeedbackContext))]
Sender = Annotated[DeliverySender, Depends(delivery_sender)]


def _reason(text: str | None) -> str | None:
    return (text or "").strip() or None


def _rating_out(case: CaseView, message: str) -> RatingOut:
    return RatingOut(status=case.status, status_label=cases.status_label(case.status), message=message)


# --- The public query ----------------------------------------------------------------------------


async def _public_case(
    session: AsyncSession, ctx: FeedbackContext, request: Request, body: LookupIn, *, lock: bool = False
) -> CaseView:
    return await public.public_case(
        session=session,
        engine=runtime_of(request).engine,
        ctx=ctx,
        client_address=ctx.limiter.client_address(
            peer=request.client.host if request.client else None,
            forwarded_for=request.headers.get("x-forwarded-for"),
        ),
        tracking_code=body.tracking_code,
        query_secret=body.query_secret,
        lock=lock,
    )


@router.post("/public/lookup", response_model=LookupOut, tags=["public"])
async def public_lookup(
    body: LookupIn, request: Request, response: Response, session: Session, ctx: Context
) -> LookupOut:
    response.headers["Cache-Control"] = "no-store"
    case = await _public_case(session, ctx, request, body)
    return await public.lookup_view(session=session, ctx=ctx, case=case)


@router.post("/public/rating", response_model=RatingOut, tags=["public"])
async def public_rating(
    body: RatingIn, request: Request, response: Response, session: Session, ctx: Context
) -> RatingOut:
    response.headers["Cache-Control"] = "no-store"
    async with session.begin():
        case = await _public_case(session, ctx, request, body, lock=True)
        case = await ratings.rate(
            session=session,
            ctx=ctx,
            case=case,
            rating=Rating(body.rating),
            reason=_reason(body.reason),
            source=Source.PUBLIC,
            rater=None,
            correlation_id=current_correlation_id(),
        )
    return _rating_out(case, ratings.rating_message(case))


@router.post("/public/review-request", response_model=RatingOut, tags=["public"])
async def public_review_request(
    body: ReviewRequestIn, request: Request, response: Response, session: Session, ctx: Context
) -> RatingOut:
    response.headers["Cache-Control"] = "no-store"
    async with session.begin():
        case = await _public_case(session, ctx, request, body, lock=True)
        case = await ratings.request_review(
            session=session,
            ctx=ctx,
            case=case,
            reason=body.reason.strip(),
            source=Source.PUBLIC,
            actor=None,
            correlation_id=current_correlation_id(),
        )
    return _rating_out(case, ratings.review_message(case))


# --- Operators: follow-up calls and review requests taken down -----------------------------------


@router.post("/cases/{case_id}/rating", response_model=RatingOut, tags=["follow-up"])
async def operator_rating(
    case_id: str, body: CaseRatingIn, session: Session, ctx: Context, principal: Operator
) -> RatingOut:
    async with session.begin():
        case = await cases.case_for_update(session=session, case_id=case_id)
        case = await ratings.rate(
            session=session,
            ctx=ctx,
            case=case,
            rating=Rating(body.rating),
            reason=_reason(body.reason),
            source=Source.OPERATOR,
            rater=principal,
            correlation_id=current_correlation_id(),
        )
    return _rating_out(case, ratings.rating_message(case))


@router.post("/cases/{case_id}/review-request", response_model=RatingOut, tags=["follow-up"])
async def operator_review_request(
    case_id: str, body: CaseReviewRequestIn, session: Session, ctx: Context, principal: Operator
) -> RatingOut:
    async with session.begin():
        case = await cases.case_for_update(session=session, case_id=case_id)
        case = await ratings.request_review(
            session=session,
            ctx=ctx,
            case=case,
            reason=body.reason.strip(),
            source=Source.OPERATOR,
            actor=principal.username,
            correlation_id=current_correlation_id(),
        )
    return _rating_out(case, ratings.review_message(case))


# --- Answers -------------------------------------------------------------------------------------


def delivery_read(delivery: Delivery) -> DeliveryRead:
    return DeliveryRead.model_validate(delivery, from_attributes=True)


def answer_read(answer: Answer, found: list[Delivery]) -> AnswerRead:
    read = AnswerRead.model_validate(answer, from_attributes=True)
    read.deliveries = [delivery_read(d) for d in found]
    return read


async def _answer_with_deliveries(session: AsyncSession, answer_id: str) -> AnswerRead:
    async with session.begin():
        answer = await session.get(Answer, answer_id, populate_existing=True)
        assert answer is not None
        found = await deliveries.deliveries_of(session=session, answer_ids=[answer.id])
    return answer_read(answer, found[answer.id])


@router.get("/answers", response_model=list[AnswerRead], tags=["answers"], responses=page_headers())
async def list_answers(
    session: Session,
    principal: Supervisor,
    page: Annotated[Page, Depends(paging(default=500, maximum=500, offset=False))],
    case_id: Annotated[Line | None, Query(max_length=64)] = None,
    status: AnswerStatusName | None = None,
) -> list[AnswerRead]:
    listed = await answers.list_answers(
        session=session, case_id=case_id, status=AnswerStatus(status) if status else None, page=page
    )
    found = await deliveries.deliveries_of(session=session, answer_ids=[a.id for a in listed])
    return [answer_read(a, found[a.id]) for a in listed]


@router.put("/answers/{answer_id}", response_model=AnswerRead, tags=["answers"])
async def edit_answer(
    answer_id: str, body: AnswerEdit, session: Session, principal: Supervisor
) -> AnswerRead:
    async with session.begin():
        answer = await answers.get_answer(session=session, answer_id=answer_id, lock=True)
        session.add(
            await answers.edit(session=session, answer=answer, text=body.text, actor=principal.username)
        )
    return answer_read(answer, [])


@router.post("/answers/{answer_id}/approve", response_model=AnswerRead, tags=["answers"])
async def approve_answer(
    answer_id: str, session: Session, ctx: Context, sender: Sender, principal: Supervisor
) -> AnswerRead:
    async with session.begin():
        answer = await answers.get_answer(session=session, answer_id=answer_id, lock=True)
        delivery = await answers.approve(
            session=session,
            ctx=ctx,
            answer=answer,
            approver=principal.username,
            correlation_id=current_correlation_id(),
        )
    if delivery is not None:
        # The first attempt now, so the supervisor sees whether it went out; retries are the worker's.
        await sender.attempt(delivery.id)
    return await _answer_with_deliveries(session, answer_id)


@router.get(
    "/answers/{answer_id}/letter",
    tags=["answers"],
    **file_route(DOCX_MEDIA_TYPE, "The reply letter (.docx)"),
)
async def answer_letter(answer_id: str, session: Session, ctx: Context, principal: Supervisor) -> Response:
    """The reply letter to a deputy: as issued once approved, otherwise a preview dated today."""
    answer = await answers.get_answer(session=session, answer_id=answer_id)
    letter = await answers.answer_letter(session=session, ctx=ctx, answer=answer)
    return _docx_response(letter.content, letter.title, letter.case)


@router.post(
    "/answers/{answer_id}/deliveries", response_model=DeliveryRead, status_code=201, tags=["answers"]
)
async def record_delivery(
    answer_id: str, body: ManualDeliveryIn, session: Session, principal: OperatorOrSupervisor
) -> DeliveryRead:
    async with session.begin():
        answer = await answers.get_answer(session=session, answer_id=answer_id, lock=True)
        delivery = await deliveries.record_manual_delivery(
            session,
            answer=answer,
            channel=Channel(body.channel),
            note=body.note,
            actor=principal.username,
            correlation_id=current_correlation_id(),
        )
    return delivery_read(delivery)


# --- Deliveries needing a person -----------------------------------------------------------------


@router.get("/deliveries", response_model=list[DeliveryRead], tags=["deliveries"], responses=page_headers())
async def list_deliveries(
    session: Session,
    principal: OperatorOrSupervisor,
    page: Annotated[Page, Depends(paging(default=100, maximum=500))],
    status: DeliveryStatusName | None = None,
    case_id: Annotated[Line | None, Query(max_length=64)] = None,
    kind: DeliveryKindName | None = None,
) -> list[DeliveryRead]:
    listed = await deliveries.list_deliveries(
        session=session,
        status=DeliveryStatus(status) if status else None,
        case_id=case_id,
        kind=DeliveryKind(kind) if kind else None,
        page=page,
    )
    return [delivery_read(d) for d in listed]


@router.post("/deliveries/{delivery_id}/retry", response_model=DeliveryRead, tags=["deliveries"])
async def retry_delivery(
    delivery_id: str, session: Session, ctx: Context, sender: Sender, principal: OperatorOrSupervisor
) -> DeliveryRead:
    async with session.begin():
        delivery = await deliveries.delivery_for_update(session=session, delivery_id=delivery_id)
        await deliveries.retry_delivery(session, ctx=ctx, delivery=delivery, actor=principal.username)
    await sender.attempt(delivery_id)
    async with session.begin():
        refreshed = await deliveries.fresh_delivery(session=session, delivery_id=delivery_id)
    return delivery_read(refreshed)


@router.post("/deliveries/{delivery_id}/resolve", response_model=DeliveryRead, tags=["deliveries"])
async def resolve_delivery(
    delivery_id: str, body: ManualDeliveryIn, session: Session, principal: OperatorOrSupervisor
) -> DeliveryRead:
    """A person reached the complainant another way (phone, letter): the delivery is done."""
    async with session.begin():
        delivery = await deliveries.delivery_for_update(session=session, delivery_id=delivery_id)
        await deliveries.resolve_manually(
            session,
            delivery=delivery,
            channel=Channel(body.channel),
            note=body.note,
            actor=principal.username,
        )
    return delivery_read(delivery)


# --- Deputies ------------------------------------------------------------------------------------


def _docx_response(content: bytes, title: str, case: CaseView) -> Response:
    ascii_name = f"reply-{case.number or case.case_id}.docx"
    return Response(
        content=content,
        media_type=DOCX_MEDIA_TYPE,
        headers={
            "Content-Disposition": attachment(title + ".docx", fallback=ascii_name),
            "Cache-Control": "private, no-store",
        },
    )


async def _own_suggestion(
    session: AsyncSession, principal: Principal, case_id: str, *, lock: bool = False
) -> CaseView:
    return await deputies.own_suggestion(session=session, case_id=case_id, deputy=principal, lock=lock)


@router.get(
    "/deputy/suggestions",
    response_model=list[DeputySuggestionRead],
    tags=["deputy"],
    responses=page_headers(),
)
async def deputy_suggestions(
    session: Session, principal: Deputy, response: Response
) -> list[DeputySuggestionRead]:
    """The deputy's own suggestions (a few a year), whole, with their total."""
    return whole(response, await deputies.suggestion_views(session=session, deputy=principal))


@router.get(
    "/deputy/suggestions/{case_id}/letter",
    tags=["deputy"],
    **file_route(DOCX_MEDIA_TYPE, "The reply letter (.docx)"),
)
async def deputy_letter(case_id: str, session: Session, principal: Deputy) -> Response:
    case = await _own_suggestion(session, principal, case_id)
    letter = await deputies.own_letter(session=session, case=case)
    return _docx_response(letter.content, letter.title, case)


@router.post("/deputy/suggestions/{case_id}/rating", response_model=RatingOut, tags=["deputy"])
async def deputy_rating(
    case_id: str, body: CaseRatingIn, session: Session, ctx: Context, principal: Deputy
) -> RatingOut:
    async with session.begin():
        case = await _own_suggestion(session, principal, case_id, lock=True)
        case = await ratings.rate(
            session=session,
            ctx=ctx,
            case=case,
            rating=Rating(body.rating),
            reason=_reason(body.reason),
            source=Source.DEPUTY,
            rater=principal,
            correlation_id=current_correlation_id(),
        )
    return _rating_out(case, ratings.deputy_rating_message(case))


# --- 消息记录 ---------------------------------------------------------------------------------------


@router.get("/messages", response_model=list[MessageRead], tags=["messages"], responses=page_headers())
async def list_messages(
    session: Session, principal: Supervisor, page: Annotated[Page, Depends(paging(default=50, maximum=500))]
) -> list[MessageRead]:
    """Every message sent, newest first: kind, channel, to whom (masked), tracking code, when."""
    rows = await messages.sent_messages(session=session, page=page)
    return [
        MessageRead(
            **vars(row),
            kind_label=messages.KIND_LABELS.get(row.kind, row.kind),
            channel_label=messages.CHANNEL_LABELS.get(row.channel or "", row.channel),
        )
        for row in rows
    ]


# --- Notifications and the 待办 inbox: their own module, under the same prefix ---------------------

router.include_router(inbox_api.router)
