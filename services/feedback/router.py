"""Feedback's HTTP API: the public query and rating, answers for supervisors, the deputies' view."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import service
from services.feedback.models import Answer, CaseView
from services.feedback.schemas import (
    AnswerEdit,
    AnswerRead,
    DeputySuggestionRead,
    LookupIn,
    LookupOut,
    PublicClock,
    RatingIn,
    RatingOut,
    TimelineItem,
)
from services.feedback.service import FeedbackContext
from shared.app import current_correlation_id, get_session
from shared.auth import Principal, Role, require_roles

router = APIRouter(prefix="/api/v1")
Session = Annotated[AsyncSession, Depends(get_session)]
Supervisor = Annotated[Principal, Depends(require_roles(Role.SUPERVISOR))]
Deputy = Annotated[Principal, Depends(require_roles(Role.DEPUTY))]

NOT_FOUND = "查询码或查询密码不正确"


def feedback_context(request: Request) -> FeedbackContext:
    ctx: FeedbackContext = request.app.state.feedback
    return ctx


Context = Annotated[FeedbackContext, Depends(feedback_context)]


def public_clocks(case: CaseView) -> list[PublicClock]:
    return [PublicClock(name=c["name"], label=c["label"], due_at=c["due_at"]) for c in case.clocks]


@router.post("/public/lookup", response_model=LookupOut, tags=["public"])
async def public_lookup(body: LookupIn, response: Response, session: Session, ctx: Context) -> LookupOut:
    response.headers["Cache-Control"] = "no-store"
    case = await service.find_by_code(
        session=session,
        signing_key=ctx.signing_key,
        tracking_code=body.tracking_code,
        query_secret=body.query_secret,
    )
    if case is None:
        # The same answer for an unknown code and a wrong secret: the query reveals nothing.
        raise HTTPException(status_code=404, detail=NOT_FOUND, headers={"Cache-Control": "no-store"})
    structlog.contextvars.bind_contextvars(case_id=case.case_id)
    answer = await service.delivered_answer(session=session, case_id=case.case_id)
    rating = await service.latest_rating(session=session, case_id=case.case_id, round_=case.round)
    entries = await service.timeline(session=session, case_id=case.case_id)
    return LookupOut(
        tracking_code=case.tracking_code,
        kind=case.case_kind,
        status=case.status,
        status_label=service.status_label(case.status),
        received_at=case.received_at,
        timeline=[TimelineItem(stage=e.stage, label=e.label, at=e.at) for e in entries],
        clocks=public_clocks(case),
        answer=answer.text if answer else None,
        answered_at=answer.delivered_at if answer else None,
        can_rate=case.status == "answered",
        rating=rating.rating if rating else None,
    )


@router.post("/public/rating", response_model=RatingOut, tags=["public"])
async def public_rating(body: RatingIn, response: Response, session: Session, ctx: Context) -> RatingOut:
    response.headers["Cache-Control"] = "no-store"
    async with session.begin():
        case = await service.find_by_code(
            session=session,
            signing_key=ctx.signing_key,
            tracking_code=body.tracking_code,
            query_secret=body.query_secret,
        )
        if case is None:
            raise HTTPException(status_code=404, detail=NOT_FOUND, headers={"Cache-Control": "no-store"})
        structlog.contextvars.bind_contextvars(case_id=case.case_id)
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
    message = "感谢您的评价" if case.status == "closed" else "已收到您的意见，本件将提级重新办理"
    return RatingOut(status=case.status, status_label=service.status_label(case.status), message=message)


@router.get("/answers", response_model=list[AnswerRead], tags=["answers"])
async def list_answers(
    session: Session,
    principal: Supervisor,
    case_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
) -> list[AnswerRead]:
    query = select(Answer).order_by(col(Answer.created_at))
    if case_id:
        structlog.contextvars.bind_contextvars(case_id=case_id)
        query = query.where(Answer.case_id == case_id)
    if status:
        query = query.where(Answer.status == status)
    return [AnswerRead.model_validate(a, from_attributes=True) for a in await session.exec(query)]


async def _answer(session: AsyncSession, answer_id: str) -> Answer:
    answer = await session.get(Answer, answer_id)
    if answer is None:
        raise HTTPException(status_code=404, detail="答复不存在")
    structlog.contextvars.bind_contextvars(case_id=answer.case_id)
    return answer


@router.put("/answers/{answer_id}", response_model=AnswerRead, tags=["answers"])
async def edit_answer(
    answer_id: str, body: AnswerEdit, session: Session, principal: Supervisor
) -> AnswerRead:
    async with session.begin():
        answer = await _answer(session, answer_id)
        if answer.status != "pending_approval":
            raise HTTPException(status_code=409, detail="已发送的答复不能修改")
        answer.text = body.text.strip()
        session.add(answer)
    return AnswerRead.model_validate(answer, from_attributes=True)


@router.post("/answers/{answer_id}/approve", response_model=AnswerRead, tags=["answers"])
async def approve_answer(answer_id: str, session: Session, ctx: Context, principal: Supervisor) -> AnswerRead:
    async with session.begin():
        answer = await _answer(session, answer_id)
        answer = await service.approve_and_deliver(
            session=session,
            ctx=ctx,
            answer=answer,
            approver=principal.username,
            correlation_id=current_correlation_id(),
        )
    return AnswerRead.model_validate(answer, from_attributes=True)


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
                status_label=service.status_label(case.status),
                lead_unit=case.lead_unit,
                team_code=case.team_code,
                team_name=case.team_name,
                due_at=next(
                    (c.due_at for c in clocks if c.name == "deputy_reply"),
                    clocks[0].due_at if clocks else None,
                ),
                clocks=clocks,
                reply=answer.text if answer else None,
                classification=case.classification,
                received_at=case.received_at,
            )
        )
    return result
