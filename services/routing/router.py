"""Routing's HTTP API: assignments, reassignment, rules and organisation data."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Query, Response
from sqlmodel.ext.asyncio.session import AsyncSession

from services.routing import assignments, bureaus, organisation, rulebook
from services.routing.context import RoutingContext
from services.routing.models import Assignment
from services.routing.schemas import (
    AssignmentRead,
    BureauContactOut,
    BureauRead,
    BureauUpdate,
    FlagIn,
    ReassignIn,
    RuleChangeRead,
    RuleRead,
    RuleUpdate,
    TeamRead,
    TeamUpdate,
    UnitRead,
    UnitUpsert,
)
from services.routing.workload import workload
from shared.app import current_correlation_id
from shared.auth import BUREAU_CONTACT_AUDIENCE, Principal
from shared.deps import Session, Staff, Supervisor, app_state, feedback_caller_for
from shared.pagination import Page, page_headers, paging, whole
from shared.validation import CodePath, Line, RuleNamePath

router = APIRouter(prefix="/api/v1")

Context = Annotated[RoutingContext, Depends(app_state("routing", RoutingContext))]


async def assignment_read(session: AsyncSession, ctx: RoutingContext, a: Assignment) -> AssignmentRead:
    org = await organisation.organisation_from_db(session=session, ctx=ctx)
    return AssignmentRead.model_validate({**a.model_dump(), "team_name": org.team_name(a.team_code)})


@router.get("/assignments", response_model=AssignmentRead, tags=["assignments"])
async def get_assignment(
    session: Session,
    ctx: Context,
    principal: Supervisor,
    case_id: Annotated[Line, Query(min_length=1, max_length=64)],
) -> AssignmentRead:
    structlog.contextvars.bind_contextvars(case_id=case_id)
    current = await assignments.require_current_assignment(session=session, case_id=case_id)
    return await assignment_read(session, ctx, current)


@router.get(
    "/assignments/history",
    response_model=list[AssignmentRead],
    tags=["assignments"],
    responses=page_headers(),
)
async def assignment_history(
    session: Session,
    ctx: Context,
    principal: Supervisor,
    response: Response,
    case_id: Annotated[Line, Query(min_length=1, max_length=64)],
) -> list[AssignmentRead]:
    """One matter's assignments (a few), whole, with their total."""
    rows = await assignments.assignment_history(session=session, case_id=case_id)
    return whole(response, [await assignment_read(session, ctx, a) for a in rows])


@router.post("/assignments/{case_id}/reassign", response_model=AssignmentRead, tags=["assignments"])
async def reassign(
    case_id: str, body: ReassignIn, session: Session, ctx: Context, principal: Supervisor
) -> AssignmentRead:
    structlog.contextvars.bind_contextvars(case_id=case_id)
    async with session.begin():
        assignment = await assignments.reassign(
            session=session,
            ctx=ctx,
            case_id=case_id,
            team_code=body.team_code,
            reason=body.reason,
            actor=principal,
            correlation_id=current_correlation_id(),
        )
    return await assignment_read(session, ctx, assignment)


@router.post("/assignments/{case_id}/flag", response_model=AssignmentRead, tags=["assignments"])
async def flag_key_clue(
    case_id: str, body: FlagIn, session: Session, ctx: Context, principal: Supervisor
) -> AssignmentRead:
    structlog.contextvars.bind_contextvars(case_id=case_id)
    async with session.begin():
        assignment = await assignments.flag_key_clue(
            session=session,
            ctx=ctx,
            case_id=case_id,
            reason=body.reason,
            actor=principal,
            correlation_id=current_correlation_id(),
        )
    return await assignment_read(session, ctx, assignment)


@router.get("/rules", response_model=list[RuleRead], tags=["rules"], responses=page_headers())
async def list_rules(session: Session, principal: Supervisor, response: Response) -> list[RuleRead]:
    rows = await rulebook.list_rules(session=session)
    return whole(response, [RuleRead.model_validate(r, from_attributes=True) for r in rows])


@router.put("/rules/{name}", response_model=RuleRead, tags=["rules"])
async def put_rule(
    name: RuleNamePath, body: RuleUpdate, session: Session, ctx: Context, principal: Supervisor
) -> RuleRead:
    async with session.begin():
        rule = await rulebook.update_rule(
            session=session,
            name=name,
            values=body.model_dump(exclude={"reason"}),
            reason=body.reason,
            actor=principal,
        )
    # After the commit: a decision made meanwhile must not cache the old rules.
    ctx.forget_cache()
    return RuleRead.model_validate(rule, from_attributes=True)


@router.get("/rules/changes", response_model=list[RuleChangeRead], tags=["rules"], responses=page_headers())
async def rule_changes(
    session: Session,
    principal: Supervisor,
    page: Annotated[Page, Depends(paging(default=500, maximum=500, offset=False))],
) -> list[RuleChangeRead]:
    """The rules' change log, newest first, a page by keyset, with the total."""
    rows = await rulebook.rule_changes(session=session, page=page)
    return [RuleChangeRead.model_validate(r, from_attributes=True) for r in rows]


@router.get("/teams", response_model=list[TeamRead], tags=["organisation"], responses=page_headers())
async def list_teams(session: Session, principal: Staff, response: Response) -> list[TeamRead]:
    load = await workload(session=session)
    rows = await organisation.all_teams(session=session)
    return whole(
        response,
        [
            TeamRead(**t.model_dump(exclude={"last_assigned_at"}), open_tasks=load.get(t.code, (0, 0.0))[0])
            for t in rows
        ],
    )


@router.put("/teams/{code}", response_model=TeamRead, tags=["organisation"])
async def put_team(
    code: CodePath, body: TeamUpdate, session: Session, ctx: Context, principal: Supervisor
) -> TeamRead:
    async with session.begin():
        team = await organisation.put_team(
            session=session, code=code, values=body.model_dump(), actor=principal
        )
    ctx.forget_cache()
    return TeamRead(**team.model_dump(exclude={"last_assigned_at"}))


@router.get("/units", response_model=list[UnitRead], tags=["organisation"], responses=page_headers())
async def list_units(
    session: Session,
    principal: Staff,
    response: Response,
    q: Annotated[Line | None, Query(max_length=50, description="part of the unit's name")] = None,
) -> list[UnitRead]:
    units = await organisation.active_units(session=session, name_part=q)
    return whole(response, [UnitRead.model_validate(u, from_attributes=True) for u in units])


@router.put("/units/{code}", response_model=UnitRead, tags=["organisation"])
async def put_unit(
    code: CodePath, body: UnitUpsert, session: Session, ctx: Context, principal: Supervisor
) -> UnitRead:
    async with session.begin():
        unit = await organisation.put_unit(
            session=session, code=code, values=body.model_dump(), actor=principal
        )
    ctx.forget_cache()
    return UnitRead.model_validate(unit, from_attributes=True)


def _bureau_read(bureau: bureaus.Bureau) -> BureauRead:
    contact = bureau.contact
    if contact is None:
        return BureauRead(code=bureau.code, bureau_name=bureau.name)
    return BureauRead(code=bureau.code, **contact.model_dump(exclude={"bureau_code"}))


@router.get("/bureaus", response_model=list[BureauRead], tags=["organisation"], responses=page_headers())
async def list_bureaus(
    session: Session, ctx: Context, principal: Supervisor, response: Response
) -> list[BureauRead]:
    """Every bureau of the organisation with its 分管领导 and contact (empty where none is kept)."""
    org = await organisation.organisation_from_db(session=session, ctx=ctx)
    return whole(
        response, [_bureau_read(b) for b in await bureaus.list_bureaus(session=session, organisation=org)]
    )


@router.put("/bureaus/{code}", response_model=BureauRead, tags=["organisation"])
async def put_bureau(
    code: CodePath, body: BureauUpdate, session: Session, ctx: Context, principal: Supervisor
) -> BureauRead:
    """Set a bureau's leader and contact (a malformed phone or e-mail changes nothing); audited."""
    async with session.begin():
        org = await organisation.organisation_from_db(session=session, ctx=ctx)
        contact = await bureaus.put_bureau(
            session=session, organisation=org, code=code, values=body.model_dump(), actor=principal
        )
        read = _bureau_read(bureaus.Bureau(code=code, name=contact.bureau_name, contact=contact))
    return read


# --- Internal: feedback's delivery worker -------------------------------------------------------

internal_router = APIRouter(prefix="/internal")


feedback_caller = feedback_caller_for(BUREAU_CONTACT_AUDIENCE)


@internal_router.get("/bureaus/{code}/contact", response_model=BureauContactOut, tags=["internal"])
async def bureau_contact(
    code: CodePath, session: Session, principal: Annotated[Principal, Depends(feedback_caller)]
) -> BureauContactOut:
    """A bureau leader's name, phone and e-mail, for a notice feedback sends them; 404 for an unknown code."""
    contact = await bureaus.contact_of(session=session, code=code)
    return BureauContactOut(name=contact.leader_name, phone=contact.phone, email=contact.email)
