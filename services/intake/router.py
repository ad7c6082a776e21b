"""Intake's HTTP API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake import (
    accounts,
    complaints,
    identity_access,
    reclassification,
    statistics,
    suggestions,
)
from services.intake.auth_router import feedback_caller
from services.intake.context import IntakeContext
from services.intake.earlier import as_earlier
from services.intake.identity import IdentityVault
from services.intake.models import Complaint, Suggestion
from services.intake.schemas import (
    ComplaintCreate,
    ComplaintCreated,
    ComplaintRead,
    ContactRead,
    DeputyAccountRead,
    IdentityRead,
    ReclassifyIn,
    ReclassifyOut,
    RepeatCheckIn,
    RepeatCheckOut,
    SuggestionCreate,
    SuggestionCreated,
    SuggestionRead,
)
from shared import idempotency
from shared.app import current_correlation_id, runtime_of
from shared.auth import Principal, Role, require_roles
from shared.deps import Operator, OperatorOrSupervisor, Session, Staff, app_state
from shared.groupcommit import GroupCommitter, get_write_groups
from shared.pagination import TOTAL_HEADER, Page, page_headers, paging, whole
from shared.readmodel import read_model
from shared.validation import Line

router = APIRouter(prefix="/api/v1")
ContactCaller = Annotated[Principal, Depends(feedback_caller)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
WriteGroups = Annotated[GroupCommitter, Depends(get_write_groups)]
_Created = TypeVar("_Created", ComplaintCreated, SuggestionCreated)
# Shown once to the person who filed the matter: never stored in clear, not even in a stored answer.
_SECRET_FIELDS = ("query_secret",)

Context = Annotated[IntakeContext, Depends(app_state("intake", IntakeContext))]
# Optional to the parser so that a missing one is refused by the domain check, naming it in Chinese.
PurposeParam = Annotated[
    Line | None,
    Query(max_length=50, description="required: one of GET /api/v1/identity-purposes (查阅事由)"),
]
ReasonParam = Annotated[
    Line | None,
    Query(max_length=200, description="required: why, in the reader's words, 2-200 characters (查阅说明)"),
]


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
        created = await complaints.create_complaint(
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
            linked_repeat=created.complaint.linked_repeat,
            repeat_after_rejection=created.complaint.repeat_after_rejection,
            key_clue_hints=created.key_clue_hints,
            earlier_matters=created.earlier,
        )

    return await _create_once(
        request,
        writes,
        record,
        vault=ctx.vault,
        body_in=complaint_in,
        key=idempotency_key,
        principal=principal,
        endpoint="complaints",
    )


@router.post("/complaints/repeat-check", response_model=RepeatCheckOut, tags=["complaints"])
async def check_repeat(
    check_in: RepeatCheckIn, session: Session, ctx: Context, principal: Operator
) -> RepeatCheckOut:
    """Before submitting: the caller's open complaint about this unit, which a new one would be linked to.

    A POST so that the phone and ID number stay out of addresses and access logs.
    """
    found = await complaints.check_repeat(session=session, ctx=ctx, check_in=check_in)
    earlier = as_earlier(found.earlier) if found.earlier else None
    return RepeatCheckOut(open_matter=earlier if found.linked else None, earlier=earlier)


async def _create_once(
    request: Request,
    writes: GroupCommitter,
    record: Callable[[AsyncSession], Awaitable[_Created]],
    *,
    vault: IdentityVault,
    body_in: BaseModel,
    key: str | None,
    principal: Principal,
    endpoint: str,
) -> _Created | JSONResponse:
    """Run ``record`` unless ``key`` was seen with this body, and remember its answer under ``key``.

    The record, its events and the remembered answer commit together (in a group commit).
    The query secret in the answer is remembered sealed with the identity key (issue 14, item 7):
    a retry after a lost answer still shows the complainant their secret, the table never holds it.
    """
    fingerprint = idempotency.request_fingerprint(body_in)

    async def write(session: AsyncSession) -> _Created | JSONResponse:
        replayed = await idempotency.replay(
            session,
            key=key,
            username=principal.username,
            endpoint=endpoint,
            fingerprint=fingerprint,
            sealer=vault,
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
            secret_fields=_SECRET_FIELDS,
            sealer=vault,
        )
        return body

    try:
        answer = await writes.run(write)
    except IntegrityError:
        # A concurrent request with the same key won the race: answer with what it stored.
        async with runtime_of(request).session_factory() as session, session.begin():
            replayed = await idempotency.replay(
                session,
                key=key,
                username=principal.username,
                endpoint=endpoint,
                fingerprint=fingerprint,
                sealer=vault,
            )
        if replayed is None:
            raise
        return replayed
    if not isinstance(answer, JSONResponse):
        structlog.contextvars.bind_contextvars(case_id=answer.id)
    return answer


def complaint_read(complaint: Complaint) -> ComplaintRead:
    return read_model(
        ComplaintRead,
        complaint,
        complainant_name=complaint.name_masked,
        complainant_phone=complaint.phone_masked,
    )


@router.get("/complaints", response_model=list[ComplaintRead], tags=["complaints"], responses=page_headers())
async def list_complaints(
    session: Session,
    ctx: Context,
    principal: OperatorOrSupervisor,
    page: Annotated[Page, Depends(paging(default=50, maximum=200))],
    phone: Annotated[Line | None, Query(max_length=32)] = None,
    tracking_code: Annotated[Line | None, Query(max_length=32)] = None,
) -> list[ComplaintRead]:
    rows = await complaints.list_complaints(
        session=session, vault=ctx.vault, phone=phone, tracking_code=tracking_code, page=page
    )
    return [complaint_read(c) for c in rows]


async def _visible_complaint(session: AsyncSession, complaint_id: str, principal: Principal) -> Complaint:
    complaint = await complaints.visible_complaint(
        session=session, complaint_id=complaint_id, principal=principal
    )
    structlog.contextvars.bind_contextvars(case_id=complaint.id)
    return complaint


@router.get("/complaints/{complaint_id}", response_model=ComplaintRead, tags=["complaints"])
async def read_complaint(complaint_id: str, session: Session, principal: Staff) -> ComplaintRead:
    return complaint_read(await _visible_complaint(session, complaint_id, principal))


@router.get("/complaints/{complaint_id}/identity", response_model=IdentityRead, tags=["complaints"])
async def read_identity(
    complaint_id: str,
    session: Session,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.INSPECTOR))],
    purpose: PurposeParam = None,
    reason: ReasonParam = None,
) -> IdentityRead:
    """The complainant's identity, for a purpose from the list and the reader's reason; both recorded."""
    async with session.begin():
        # Another team's complaint is 404 whatever the purpose, as everywhere.
        complaint = await _visible_complaint(session, complaint_id, principal)
        chosen, said = identity_access.check_purpose(
            purposes=ctx.identity_purposes, purpose=purpose, reason=reason
        )
        identity = await identity_access.read_identity(
            session=session,
            vault=ctx.vault,
            complaint=complaint,
            principal=principal,
            purpose=chosen,
            reason=said,
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
    principal: ContactCaller,
    purpose: PurposeParam = None,
    reason: ReasonParam = None,
) -> ContactRead:
    """For feedback, to deliver an answer; the read is recorded like a person's, purpose and all."""
    async with session.begin():
        complaint = await complaints.get_complaint(session=session, complaint_id=complaint_id)
        structlog.contextvars.bind_contextvars(case_id=complaint.id)
        chosen, said = identity_access.check_purpose(
            purposes=ctx.identity_purposes, purpose=purpose, reason=reason
        )
        identity = await identity_access.read_identity(
            session=session,
            vault=ctx.vault,
            complaint=complaint,
            principal=principal,
            purpose=chosen,
            reason=said,
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
    rows = await identity_access.identity_accesses(session=session, complaint_id=complaint_id)
    return [
        {
            "accessor": r.accessor,
            "role": r.role,
            "purpose": r.purpose,
            "reason": r.reason,
            "at": r.at.isoformat(),
        }
        for r in rows
    ]


@router.get("/identity-purposes", response_model=list[str], tags=["complaints"], responses=page_headers())
async def list_identity_purposes(
    ctx: Context,
    principal: Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.INSPECTOR))],
    response: Response,
) -> list[str]:
    """The purposes an identity read may give (``purpose``), for the pages' choice."""
    return whole(response, list(ctx.identity_purposes))


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
    ctx: Context,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> SuggestionCreated | JSONResponse:
    correlation_id = current_correlation_id()
    signing_key = request.app.state.settings.signing_key

    async def record(session: AsyncSession) -> SuggestionCreated:
        suggestion, query_secret = await suggestions.create_suggestion(
            session=session,
            signing_key=signing_key,
            received_at_max_age=request.app.state.intake.received_at_max_age,
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
        vault=ctx.vault,
        body_in=suggestion_in,
        key=idempotency_key,
        principal=principal,
        endpoint="suggestions",
    )


@router.get(
    "/deputies", response_model=list[DeputyAccountRead], tags=["suggestions"], responses=page_headers()
)
async def list_deputy_accounts(
    session: Session, principal: OperatorOrSupervisor, response: Response
) -> list[DeputyAccountRead]:
    """The deputies' accounts, for choosing whose suggestion is being recorded (``deputy.account``);
    a city's deputies are a few hundred, answered whole with their total."""
    rows = await accounts.deputy_accounts(session=session)
    response.headers[TOTAL_HEADER] = str(len(rows))
    return [
        DeputyAccountRead(
            username=u.username,
            name=u.deputy_name or "",
            delegation=u.deputy_delegation or "",
            display_name=u.display_name,
            active=u.active,
        )
        for u in rows
    ]


def suggestion_read(s: Suggestion) -> SuggestionRead:
    return SuggestionRead.model_validate(s, from_attributes=True)


@router.get(
    "/suggestions", response_model=list[SuggestionRead], tags=["suggestions"], responses=page_headers()
)
async def list_suggestions(
    session: Session,
    principal: OperatorOrSupervisor,
    page: Annotated[Page, Depends(paging(default=50, maximum=200))],
    tracking_code: Annotated[Line | None, Query(max_length=32)] = None,
) -> list[SuggestionRead]:
    rows = await suggestions.find_suggestions(session=session, tracking_code=tracking_code, page=page)
    return [suggestion_read(s) for s in rows]


@router.post("/complaints/{complaint_id}/reclassify", response_model=ReclassifyOut, tags=["complaints"])
async def reclassify_complaint(
    complaint_id: str, body: ReclassifyIn, session: Session, ctx: Context, principal: Operator
) -> ReclassifyOut:
    async with session.begin():
        complaint = await _visible_complaint(session, complaint_id, principal)
        return await reclassification.reclassify(
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
        suggestion = await suggestions.get_suggestion(session=session, suggestion_id=suggestion_id)
        structlog.contextvars.bind_contextvars(case_id=suggestion.id)
        return await reclassification.reclassify(
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
    return await statistics.repeat_statistics(session=session, weeks=weeks)
