"""Feedback's HTTP API for its own clocks and the follow-up calls (回访).

HTTP only: the refusals are the domain modules' errors, answered by the app in one place.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from services.feedback import clocks, followups
from services.feedback.cases import status_label
from services.feedback.context import FeedbackContext
from services.feedback.schemas import ClockListRead, FollowUpOutcomeIn, FollowUpRead, FollowUpResult
from shared.app import current_correlation_id
from shared.auth import Role
from shared.db import utcnow
from shared.deps import Operator, OperatorOrSupervisor, Session, SupervisorOrLeader, app_state
from shared.pagination import Page, page_headers, paging

clock_router = APIRouter(prefix="/api/v1")
Context = Annotated[FeedbackContext, Depends(app_state("feedback", FeedbackContext))]
# What the list of clocks shows of a clock under the same names.
LISTED_FIELDS = {"case_id", "label", "due_at", "next_step", "next_step_at", "rule", "source"}


@clock_router.get("/clocks", response_model=list[ClockListRead], tags=["clocks"], responses=page_headers())
async def list_clocks(
    session: Session,
    principal: SupervisorOrLeader,
    page: Annotated[Page, Depends(paging(default=500, maximum=500, offset=False))],
    open_: Annotated[bool, Query(alias="open", description="only the running clocks")] = True,
) -> list[ClockListRead]:
    """Feedback's clocks (answer approval, 回访), soonest deadline first; a leader sees their county's."""
    county = principal.county_code if principal.role == Role.LEADER else None
    if principal.role == Role.LEADER and not county:
        return []
    found = await clocks.open_clocks(session, county_code=county, only_open=open_, page=page)
    return [
        ClockListRead(
            **item.clock.model_dump(include=LISTED_FIELDS),
            tracking_code=item.tracking_code,
            clock=item.clock.name,
            last_step=item.last_step,
        )
        for item in found
    ]


@clock_router.get(
    "/follow-ups", response_model=list[FollowUpRead], tags=["follow-up"], responses=page_headers()
)
async def list_follow_ups(
    session: Session,
    ctx: Context,
    principal: OperatorOrSupervisor,
    page: Annotated[Page, Depends(paging(default=500, maximum=500, offset=False))],
) -> list[FollowUpRead]:
    """The 回访 calls due, the longest waiting first; no contact (the operator calls through intake)."""
    now = utcnow()
    return [
        FollowUpRead(
            case_id=call.case.case_id,
            tracking_code=call.case.tracking_code,
            due_at=call.clock.due_at,
            started_at=call.clock.started_at,
            overdue=call.clock.due_at < now,
            attempts=call.clock.attempts,
            max_attempts=ctx.follow_up_max_attempts,
        )
        for call in await followups.due_calls(session=session, page=page)
    ]


@clock_router.post("/follow-ups/{case_id}/outcome", response_model=FollowUpResult, tags=["follow-up"])
async def record_follow_up(
    case_id: str, body: FollowUpOutcomeIn, session: Session, ctx: Context, principal: Operator
) -> FollowUpResult:
    async with session.begin():
        result = await followups.record_outcome(
            session=session,
            ctx=ctx,
            case_id=case_id,
            outcome=body.outcome,
            reason=(body.reason or "").strip() or None,
            operator=principal,
            correlation_id=current_correlation_id(),
        )
    return FollowUpResult(
        case_id=case_id,
        outcome=body.outcome,
        status=result.case.status,
        status_label=status_label(result.case.status),
        message=result.message,
        attempts=result.attempts,
        closed=result.closed,
    )
