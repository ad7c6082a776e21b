"""Routing's event handlers: a new matter is routed; a returned or reopened one is routed again."""

from __future__ import annotations

from functools import partial

from sqlmodel import col, update
from sqlmodel.ext.asyncio.session import AsyncSession

from services.routing.models import Assignment, RoutedCase
from services.routing.rules import Decision
from services.routing.service import RoutingContext, current_assignment, organisation_from_db, route
from shared.bus import Subscription
from shared.db import lookup, new_row
from shared.events import (
    CaseClosed,
    CaseConcluded,
    CaseReopened,
    ComplaintReceived,
    MatterReclassified,
    SuggestionReceived,
    TaskReturned,
)
from shared.logging import get_logger

log = get_logger(__name__)


def complaint_facts(event: ComplaintReceived, *, city_code: str) -> list[str]:
    facts = []
    if any(o.leadership for o in event.officers):
        facts.append("accused_leadership")
    if event.accused_is_inspection_team:
        facts.append("accused_inspection_team")
    if any(a.serious for a in event.allegations):
        facts.append("serious_category")
    if event.injury_or_death:
        facts.append("injury_or_death")
    if event.repeat_after_rejection:
        facts.append("repeat_after_rejection")
    if event.supervisor_flag:
        facts.append("supervisor_flag")
    if event.county_code == city_code:
        facts.append("city_unit")
    if event.channel == "transfer_xinfang":
        facts.append("petition")
    return facts


async def _route_new_matter(
    *, session: AsyncSession, ctx: RoutingContext, case: RoutedCase, correlation_id: str | None
) -> None:
    session.add(case)
    await route(
        session=session, ctx=ctx, case=case, actor="routing", correlation_id=correlation_id, new_case=True
    )


async def on_complaint_received(
    *, session: AsyncSession, event: ComplaintReceived, ctx: RoutingContext
) -> None:
    if await lookup(session, RoutedCase, event.case_id) is not None:
        return
    case = new_row(
        RoutedCase,
        case_id=event.case_id,
        case_kind="complaint",
        tracking_code=event.tracking_code,
        county_code=event.county_code,
        accused_unit=event.accused_unit,
        facts=complaint_facts(event, city_code=ctx.seed_organisation.city_code),
        named_complainant=not event.anonymous,
        received_at=event.received_at,
    )
    await _route_new_matter(session=session, ctx=ctx, case=case, correlation_id=event.correlation_id)


async def on_suggestion_received(
    *, session: AsyncSession, event: SuggestionReceived, ctx: RoutingContext
) -> None:
    if await lookup(session, RoutedCase, event.case_id) is not None:
        return
    case = new_row(
        RoutedCase,
        case_id=event.case_id,
        case_kind="suggestion",
        tracking_code=event.tracking_code,
        county_code=ctx.seed_organisation.city_code,
        accused_unit="",
        facts=["suggestion"],
        lead_unit=event.lead_unit,
        co_units=event.co_units,
        complex_matter=event.complex_matter,
        received_at=event.received_at,
    )
    await _route_new_matter(session=session, ctx=ctx, case=case, correlation_id=event.correlation_id)


async def on_task_returned(*, session: AsyncSession, event: TaskReturned, ctx: RoutingContext) -> None:
    case = await session.get(RoutedCase, event.case_id)
    current = await current_assignment(session=session, case_id=event.case_id)
    if case is None or current is None or current.id != event.assignment_id:
        # A return of an assignment that is no longer current changes nothing.
        log.info("stale return ignored", assignment_id=event.assignment_id)
        return
    case.return_count += 1
    case.previous_team_codes = [*case.previous_team_codes, event.team_code]
    if case.return_count >= ctx.max_returns and "returned_twice" not in case.facts:
        case.facts = [*case.facts, "returned_twice"]
    session.add(case)
    await route(session=session, ctx=ctx, case=case, actor="routing", correlation_id=event.correlation_id)


async def on_case_reopened(*, session: AsyncSession, event: CaseReopened, ctx: RoutingContext) -> None:
    case = await session.get(RoutedCase, event.case_id)
    if case is None or case.round >= event.round:
        return
    current = await current_assignment(session=session, case_id=event.case_id)
    if case.case_kind == "suggestion" and current is not None:
        # A deputy not satisfied sends the suggestion back to the same handling unit (重新办理),
        # on the re-handling clock; it is not a complaint to be moved away from a team.
        case.round = event.round
        case.open = True
        session.add(case)
        organisation = await organisation_from_db(session=session, ctx=ctx)
        decision = Decision(
            team_code=current.team_code,
            kind=current.kind,
            rule="suggestion_rehandle",
            reasons=[
                f"代表（委员）对答复不满意：{event.reason}" if event.reason else "代表（委员）对答复不满意",
                f"退回{organisation.team_name(current.team_code)}重新办理并再次答复",
            ],
            participants=list(current.participants),
        )
        rehandle = ctx.deadlines.later_clock("rehandle", calendar=ctx.calendar, start=event.occurred_at)
        await route(
            session=session,
            ctx=ctx,
            case=case,
            actor="routing",
            correlation_id=event.correlation_id,
            decision=decision,
            clocks=[rehandle],
        )
        return
    previous = list(
        dict.fromkeys(
            [*case.previous_team_codes, *event.previous_team_codes, *([current.team_code] if current else [])]
        )
    )
    case.previous_team_codes = previous
    case.round = event.round
    case.open = True
    if "reopened" not in case.facts:
        case.facts = [*case.facts, "reopened"]
    session.add(case)
    await route(session=session, ctx=ctx, case=case, actor="routing", correlation_id=event.correlation_id)


async def _close_assignments(session: AsyncSession, case_id: str) -> None:
    await session.exec(
        update(Assignment).where(col(Assignment.case_id) == case_id, col(Assignment.open)).values(open=False)
    )


async def on_case_concluded(*, session: AsyncSession, event: CaseConcluded, ctx: RoutingContext) -> None:
    await _close_assignments(session, event.case_id)


async def on_case_closed(*, session: AsyncSession, event: CaseClosed, ctx: RoutingContext) -> None:
    await _close_assignments(session, event.case_id)
    case = await session.get(RoutedCase, event.case_id)
    if case is not None:
        case.open = False
        session.add(case)


async def on_matter_reclassified(
    *, session: AsyncSession, event: MatterReclassified, ctx: RoutingContext
) -> None:
    await on_case_closed(session=session, event=CaseClosed(case_id=event.case_id, note=event.reason), ctx=ctx)


def subscriptions(ctx: RoutingContext) -> list[Subscription]:
    return [
        Subscription(
            durable="routing-intake",
            handlers={
                ComplaintReceived: partial(on_complaint_received, ctx=ctx),
                SuggestionReceived: partial(on_suggestion_received, ctx=ctx),
                MatterReclassified: partial(on_matter_reclassified, ctx=ctx),
            },
            batched_writes=frozenset({ComplaintReceived, SuggestionReceived}),
            prefetch_by_case=(RoutedCase,),
        ),
        Subscription(
            durable="routing-progress",
            handlers={
                TaskReturned: partial(on_task_returned, ctx=ctx),
                CaseReopened: partial(on_case_reopened, ctx=ctx),
                CaseConcluded: partial(on_case_concluded, ctx=ctx),
                CaseClosed: partial(on_case_closed, ctx=ctx),
            },
        ),
    ]
