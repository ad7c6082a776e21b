"""Intake's HTTP API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import structlog
from fastapi import APIRouter, Depends, Form, Header, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake import accounts, service
from services.intake.models import Complaint, Suggestion
from services.intake.schemas import (
    ComplaintCreate,
    ComplaintCreated,
    ComplaintRead,
    ContactRead,
    IdentityRead,
    MeRead,
    ReclassifyIn,
    ReclassifyOut,
    SuggestionCreate,
    SuggestionCreated,
    SuggestionRead,
    TokenResponse,
)
from services.intake.service import IntakeContext
from shared import idempotency
from shared.app import current_correlation_id, get_session, get_write_groups, runtime_of
from shared.auth import CurrentPrincipal, Principal, Role, require_roles
from shared.groupcommit import GroupCommitter

router = APIRouter(prefix="/api/v1")
Session = Annotated[AsyncSession, Depends(get_session)]
Operator = Annotated[Principal, Depends(require_roles(Role.OPERATOR))]
OperatorOrSupervisor = Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.SUPERVISOR))]
CaseReader = Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.SUPERVISOR, Role.INSPECTOR))]
ServiceCaller = Annotated[Principal, Depends(require_roles(Role.SERVICE))]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
WriteGroups = Annotated[GroupCommitter, Depends(get_write_groups)]
_Created = TypeVar("_Created", ComplaintCreated, SuggestionCreated)


# async: FastAPI runs a plain `def` dependency on its thread pool, a hop per request.
async def intake_context(request: Request) -> IntakeContext:
    ctx: IntakeContext = request.app.state.intake
    return ctx


Context = Annotated[IntakeContext, Depends(intake_context)]


@router.post("/auth/token", response_model=TokenResponse, tags=["auth"])
async def sign_in(
    request: Request,
    session: Session,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
) -> TokenResponse:
    user = await accounts.authenticate(session=session, username=username.strip(), password=password)
    if user is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="用户名或密码错误",
            headers={"WWW-Authenticate": "Bearer"},
        )
    settings = request.app.state.settings
    return TokenResponse(
        access_token=accounts.token_for(
            user, signing_key=settings.signing_key, ttl_minutes=settings.token_ttl_minutes
        ),
        expires_in=settings.token_ttl_minutes * 60,
        role=user.role,
        team_code=user.team_code,
        display_name=user.display_name,
    )


@router.get("/auth/me", response_model=MeRead, tags=["auth"])
async def me(principal: CurrentPrincipal) -> MeRead:
    return MeRead(
        username=principal.username,
        role=principal.role.value,
        team_code=principal.team_code,
        display_name=principal.display_name,
        deputy_name=principal.deputy_name,
        deputy_delegation=principal.deputy_delegation,
    )


@router.post(
    "/complaints", status_code=status.HTTP_201_CREATED, response_model=ComplaintCreated, tags=["complaints"]
)
async def create_complaint(
    complaint_in: ComplaintCreate,
    writes: WriteGroups,
    ctx: Context,
    principal: Operator,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> ComplaintCreated | JSONResponse:
    correlation_id = current_correlation_id()

    async def record(session: AsyncSession) -> ComplaintCreated:
        created = await service.create_complaint(
            session=session,
            ctx=ctx,
            complaint_in=complaint_in,
            actor=principal,
            correlation_id=correlation_id,
        )
        return ComplaintCreated(
            id=created.complaint.id,
            tracking_code=created.complaint.tracking_code,
            query_secret=created.query_secret,
            status=created.complaint.status,
            received_at=created.complaint.received_at,
            repeat_of=created.complaint.repeat_of,
            repeat_after_rejection=created.complaint.repeat_after_rejection,
            key_clue_hints=created.key_clue_hints,
            earlier_matters=created.earlier,
        )

    return await _create_once(
        request,
        writes,
        record,
        body_in=complaint_in,
        key=idempotency_key,
        principal=principal,
        endpoint="complaints",
    )


async def _create_once(
    request: Request,
    writes: GroupCommitter,
    record: Callable[[AsyncSession], Awaitable[_Created]],
    *,
    body_in: BaseModel,
    key: str | None,
    principal: Principal,
    endpoint: str,
) -> _Created | JSONResponse:
    """Run ``record`` unless ``key`` was seen with this body, and remember its answer under ``key``.

    The record, its events and the remembered answer commit together (in a group commit).
    """
    fingerprint = idempotency.request_fingerprint(body_in)

    async def write(session: AsyncSession) -> _Created | JSONResponse:
        replayed = await idempotency.replay(
            session, key=key, username=principal.username, endpoint=endpoint, fingerprint=fingerprint
        )
        if replayed is not None:
            return replayed
        body = await record(session)
        idempotency.remember(
            session,
            key=key,
            username=principal.username,
            endpoint=endpoint,
            fingerprint=fingerprint,
            status_code=201,
            body=body,
        )
        return body

    try:
        answer = await writes.run(write)
    except IntegrityError:
        # A concurrent request with the same key won the race: answer with what it stored.
        async with runtime_of(request).session_factory() as session, session.begin():
            replayed = await idempotency.replay(
                session, key=key, username=principal.username, endpoint=endpoint, fingerprint=fingerprint
            )
        if replayed is None:
            raise
        return replayed
    if not isinstance(answer, JSONResponse):
        structlog.contextvars.bind_contextvars(case_id=answer.id)
    return answer


def complaint_read(complaint: Complaint) -> ComplaintRead:
    return ComplaintRead(
        id=complaint.id,
        tracking_code=complaint.tracking_code,
        channel=complaint.channel,
        platform_ticket_no=complaint.platform_ticket_no,
        received_at=complaint.received_at,
        anonymous=complaint.anonymous,
        complainant_name=complaint.name_masked,
        complainant_phone=complaint.phone_masked,
        accused_unit=complaint.accused_unit,
        accused_unit_code=complaint.accused_unit_code,
        county_code=complaint.county_code,
        officers=complaint.officers,
        allegations=complaint.allegations,
        attachments=complaint.attachments,
        incident_at=complaint.incident_at,
        place=complaint.place,
        account=complaint.account,
        injury_or_death=complaint.injury_or_death,
        repeat_of=complaint.repeat_of,
        repeat_after_rejection=complaint.repeat_after_rejection,
        status=complaint.status,
        assigned_team_code=complaint.assigned_team_code,
        last_rating=complaint.last_rating,
        created_by=complaint.created_by,
        created_at=complaint.created_at,
    )


@router.get("/complaints", response_model=list[ComplaintRead], tags=["complaints"])
async def list_complaints(
    session: Session,
    ctx: Context,
    principal: OperatorOrSupervisor,
    phone: Annotated[str | None, Query(max_length=32)] = None,
    tracking_code: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[ComplaintRead]:
    rows = await service.list_complaints(
        session=session, vault=ctx.vault, phone=phone, tracking_code=tracking_code, limit=limit, offset=offset
    )
    return [complaint_read(c) for c in rows]


async def _visible_complaint(session: AsyncSession, complaint_id: str, principal: Principal) -> Complaint:
    complaint = await session.get(Complaint, complaint_id)
    if complaint is None:
        raise HTTPException(status_code=404, detail="投诉不存在")
    if principal.role == Role.INSPECTOR and complaint.assigned_team_code != principal.team_code:
        # Another team's matter does not exist as far as this inspector can tell.
        raise HTTPException(status_code=404, detail="投诉不存在")
    structlog.contextvars.bind_contextvars(case_id=complaint.id)
    return complaint


@router.get("/complaints/{complaint_id}", response_model=ComplaintRead, tags=["complaints"])
async def read_complaint(complaint_id: str, session: Session, principal: CaseReader) -> ComplaintRead:
    return complaint_read(await _visible_complaint(session, complaint_id, principal))


@router.get("/complaints/{complaint_id}/identity", response_model=IdentityRead, tags=["complaints"])
async def read_identity(
    complaint_id: str,
    session: Session,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.INSPECTOR))],
    purpose: Annotated[str, Query(min_length=2, max_length=200)] = "核查需要",
) -> IdentityRead:
    async with session.begin():
        complaint = await _visible_complaint(session, complaint_id, principal)
        identity = ctx.vault.open(complaint.identity_sealed) if complaint.identity_sealed else None
        await service.record_identity_access(
            session=session, complaint_id=complaint.id, principal=principal, purpose=purpose
        )
    return IdentityRead(
        complaint_id=complaint.id,
        anonymous=complaint.anonymous,
        name=identity.name if identity else None,
        phone=identity.phone if identity else None,
        id_number=identity.id_number if identity else None,
    )


@router.get("/complaints/{complaint_id}/contact", response_model=ContactRead, tags=["internal"])
async def read_contact(
    complaint_id: str,
    session: Session,
    ctx: Context,
    principal: ServiceCaller,
    purpose: Annotated[str, Query(min_length=2, max_length=200)],
) -> ContactRead:
    """For feedback, to deliver an answer; the read is recorded like a person's."""
    async with session.begin():
        complaint = await session.get(Complaint, complaint_id)
        if complaint is None:
            raise HTTPException(status_code=404, detail="投诉不存在")
        structlog.contextvars.bind_contextvars(case_id=complaint.id)
        identity = ctx.vault.open(complaint.identity_sealed) if complaint.identity_sealed else None
        await service.record_identity_access(
            session=session, complaint_id=complaint.id, principal=principal, purpose=purpose
        )
    return ContactRead(
        complaint_id=complaint.id,
        anonymous=complaint.anonymous,
        name=identity.name if identity else None,
        phone=identity.phone if identity else None,
        email=identity.email if identity else None,
        address=identity.address if identity else None,
    )


@router.get("/complaints/{complaint_id}/identity-accesses", tags=["complaints"])
async def list_identity_accesses(
    complaint_id: str,
    session: Session,
    principal: Annotated[Principal, Depends(require_roles(Role.SUPERVISOR))],
) -> list[dict[str, object]]:
    rows = await service.identity_accesses(session=session, complaint_id=complaint_id)
    return [
        {"accessor": r.accessor, "role": r.role, "purpose": r.purpose, "at": r.at.isoformat()} for r in rows
    ]


@router.post(
    "/suggestions",
    status_code=status.HTTP_201_CREATED,
    response_model=SuggestionCreated,
    tags=["suggestions"],
)
async def create_suggestion(
    suggestion_in: SuggestionCreate,
    request: Request,
    writes: WriteGroups,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> SuggestionCreated | JSONResponse:
    correlation_id = current_correlation_id()
    signing_key = request.app.state.settings.signing_key

    async def record(session: AsyncSession) -> SuggestionCreated:
        suggestion, query_secret = await service.create_suggestion(
            session=session,
            signing_key=signing_key,
            suggestion_in=suggestion_in,
            actor=principal,
            correlation_id=correlation_id,
        )
        return SuggestionCreated(
            id=suggestion.id,
            tracking_code=suggestion.tracking_code,
            query_secret=query_secret,
            kind=suggestion_in.kind,
            status=suggestion.status,
            received_at=suggestion.received_at,
        )

    return await _create_once(
        request,
        writes,
        record,
        body_in=suggestion_in,
        key=idempotency_key,
        principal=principal,
        endpoint="suggestions",
    )


def suggestion_read(s: Suggestion) -> SuggestionRead:
    return SuggestionRead.model_validate(s, from_attributes=True)


@router.get("/suggestions", response_model=list[SuggestionRead], tags=["suggestions"])
async def list_suggestions(
    session: Session,
    principal: OperatorOrSupervisor,
    tracking_code: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[SuggestionRead]:
    rows = await service.find_suggestions(
        session=session, tracking_code=tracking_code, limit=limit, offset=offset
    )
    return [suggestion_read(s) for s in rows]


@router.post("/complaints/{complaint_id}/reclassify", response_model=ReclassifyOut, tags=["complaints"])
async def reclassify_complaint(
    complaint_id: str, body: ReclassifyIn, session: Session, ctx: Context, principal: Operator
) -> ReclassifyOut:
    async with session.begin():
        complaint = await _visible_complaint(session, complaint_id, principal)
        return await service.reclassify(
            session=session,
            ctx=ctx,
            matter=complaint,
            reclassify_in=body,
            actor=principal,
            correlation_id=current_correlation_id(),
        )


@router.post("/suggestions/{suggestion_id}/reclassify", response_model=ReclassifyOut, tags=["suggestions"])
async def reclassify_suggestion(
    suggestion_id: str, body: ReclassifyIn, session: Session, ctx: Context, principal: Operator
) -> ReclassifyOut:
    async with session.begin():
        suggestion = await session.get(Suggestion, suggestion_id)
        if suggestion is None:
            raise HTTPException(status_code=404, detail="建议不存在")
        structlog.contextvars.bind_contextvars(case_id=suggestion.id)
        return await service.reclassify(
            session=session,
            ctx=ctx,
            matter=suggestion,
            reclassify_in=body,
            actor=principal,
            correlation_id=current_correlation_id(),
        )


@router.get("/stats", tags=["statistics"])
async def intake_stats(
    session: Session,
    principal: Annotated[Principal, Depends(require_roles(Role.SUPERVISOR))],
    weeks: Annotated[int, Query(ge=1, le=104)] = 12,
) -> dict[str, object]:
    """Complaints received and repeat complaints over the last ``weeks``, per county and per team.

    For the supervisors' dashboard (verification's page fetches it): only intake knows
    which complaints repeat an earlier one.
    """
    return await service.repeat_statistics(session=session, weeks=weeks)
