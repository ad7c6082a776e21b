"""Assignments: a matter is routed when it arrives, and again after a return, a reopen, a flag or a
supervisor's reassignment; a concluded or closed matter's assignments close."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import Update, bindparam, event
from sqlalchemy.orm import Session
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from services.routing.context import RoutingContext
from services.routing.facts import (
    add_fact,
    complaint_case,
    deadline_traits,
    facts_of,
    remember_teams_of,
    suggestion_case,
)
from services.routing.models import Assignment, Fact, RoutedCase, SystemRule, Team
from services.routing.organisation import organisation_from_db
from services.routing.rulebook import rules_from_db
from services.routing.rules import Decision, decide, reassignment, recusal_matter, refusal
from services.routing.workload import NOT_FETCHED, WorkloadNeeded, workload
from shared.audit import audit
from shared.auth import Principal
from shared.db import built_once, new_row, table_of, utcnow
from shared.errors import FieldProblems, NotFound, conflict
from shared.events import (
    CaseAssigned,
    CaseReopened,
    ClockSet,
    ComplaintReceived,
    SuggestionReceived,
    TaskReturned,
)
from shared.logging import get_logger
from shared.outbox import record_event
from shared.recusal import Duty, may_take
from shared.reference import Organisation
from shared.slice_rows import add_later, lookup
from shared.states import CaseKind

log = get_logger(__name__)

# The actor routing's own decisions are recorded under, in the audit trail and the events.
ROUTING_ACTOR = "routing"


# --------------------------------------------------------------------------- reading


async def current_assignment(*, session: AsyncSession, case_id: str) -> Assignment | None:
    return (
        await session.exec(
            select(Assignment)
            .where(Assignment.case_id == case_id, col(Assignment.current))
            .order_by(col(Assignment.created_at).desc())
        )
    ).first()


async def require_current_assignment(*, session: AsyncSession, case_id: str) -> Assignment:
    current = await current_assignment(session=session, case_id=case_id)
    if current is None:
        raise NotFound("该事项尚未分派或不存在")
    return current


async def assignment_history(*, session: AsyncSession, case_id: str) -> list[Assignment]:
    return list(
        await session.exec(
            select(Assignment).where(Assignment.case_id == case_id).order_by(col(Assignment.created_at))
        )
    )


async def find_case(*, session: AsyncSession, case_id: str) -> RoutedCase | None:
    return await session.get(RoutedCase, case_id)


# --------------------------------------------------------------------------- routing one matter


@built_once
def _rotation_update() -> Update:
    # One UPDATE instead of loading the team first; the rotation only needs the time, and
    # workload() reads it as a column.  A Core statement on the table: the ORM's version
    # searched the slice's whole identity map for Team rows on every assignment (a quarter of
    # routing's CPU, measured) and still cost a tenth without that search.
    teams = table_of(Team)
    return (
        update(teams).where(teams.c.code == bindparam("team_code")).values(last_assigned_at=bindparam("at"))
    )


_ROTATION = "routing_rotation"


def _note_rotation(session: AsyncSession, *, team_code: str, at: datetime) -> None:
    """Move the team's ``last_assigned_at`` at the session's next flush, with the others noted.

    One UPDATE per assignment was the only statement of a routed complaint the slice did not
    batch; noted here, a flush writes each team's latest time at once (one executemany), so a
    slice costs one statement per team instead of one per matter.  The flush that writes the
    assignment writes its rotation: workload() flushes before it reads, a commit flushes, and a
    rolled-back savepoint (an event redone alone) drops what it noted.
    """
    sync_session = session.sync_session
    pending: dict[str, datetime] | None = sync_session.info.get(_ROTATION)
    if pending is None:
        pending = sync_session.info[_ROTATION] = {}
        event.listen(sync_session, "before_flush", _write_rotation)
        event.listen(sync_session, "after_soft_rollback", _forget_rotation)
    pending[team_code] = at


def _write_rotation(sync_session: Session, _context: object, _instances: object) -> None:
    pending: dict[str, datetime] = sync_session.info[_ROTATION]
    if pending:
        params = [{"team_code": code, "at": at} for code, at in pending.items()]
        pending.clear()
        sync_session.execute(_rotation_update(), params)


def _forget_rotation(sync_session: Session, _transaction: object) -> None:
    sync_session.info[_ROTATION].clear()


async def _decide(
    *, session: AsyncSession, ctx: RoutingContext, case: RoutedCase, organisation: Organisation
) -> Decision:
    facts, rules = facts_of(case), await rules_from_db(session=session, ctx=ctx)
    # decide() is pure, so trying it without the workload first changes nothing; most matters
    # go to their own county's team and never compare workloads, which costs a scan of the
    # open assignments.
    try:
        return decide(facts=facts, rules=rules, organisation=organisation, workload=NOT_FETCHED)
    except WorkloadNeeded:
        return decide(
            facts=facts, rules=rules, organisation=organisation, workload=await workload(session=session)
        )


async def _retire_current(*, session: AsyncSession, case_id: str) -> None:
    await session.exec(
        update(Assignment)
        .where(col(Assignment.case_id) == case_id, col(Assignment.current))
        .values(current=False, open=False)
    )


def _initial_clocks(*, ctx: RoutingContext, case: RoutedCase, assigned_at: datetime) -> list[ClockSet]:
    return ctx.deadlines.initial_clocks(
        calendar=ctx.calendar,
        case_kind=case.case_kind,
        received_at=case.received_at,
        assigned_at=assigned_at,
        traits=deadline_traits(case),
        named_complainant=case.named_complainant,
        has_co_units=bool(case.co_units),
    )


def _fields_of(decision: Decision) -> dict[str, Any]:
    # dataclasses.asdict copies every field deeply, twice per routed matter (2 % of routing's
    # CPU, py-spy).  The fields as they are will do: a decision is made for one route() and
    # never changed after, the row keeps its lists, and the event validates copies of its own.
    return {f.name: getattr(decision, f.name) for f in fields(decision)}


def _new_assignment(
    *, case: RoutedCase, decision: Decision, clocks: list[ClockSet], actor: str, now: datetime
) -> Assignment:
    return new_row(
        Assignment,
        case_id=case.case_id,
        case_kind=case.case_kind,
        **_fields_of(decision),
        round=case.round,
        clocks=[c.model_dump(mode="json") for c in clocks],
        assigned_by=actor,
        created_at=now,
    )


def _assigned_event(
    *,
    case: RoutedCase,
    assignment: Assignment,
    decision: Decision,
    organisation: Organisation,
    clocks: list[ClockSet],
    actor: str,
    correlation_id: str | None,
) -> CaseAssigned:
    decided = _fields_of(decision)
    participants = decided.pop("participants")
    return CaseAssigned(
        case_id=case.case_id,
        correlation_id=correlation_id,
        actor=actor,
        case_kind=case.case_kind,
        assignment_id=assignment.id,
        team_name=organisation.team_name(decision.team_code),
        participant_team_codes=participants,
        **decided,
        previous_team_codes=case.previous_team_codes,
        clocks=clocks,
        round=case.round,
    )


async def route(
    *,
    session: AsyncSession,
    ctx: RoutingContext,
    case: RoutedCase,
    actor: str,
    correlation_id: str | None,
    decision: Decision | None = None,
    clocks: list[ClockSet] | None = None,
    new_case: bool = False,
) -> Assignment:
    """Decides (unless the caller has), replaces the current assignment, and publishes CaseAssigned."""
    organisation = await organisation_from_db(session=session, ctx=ctx)
    if decision is None:
        decision = await _decide(session=session, ctx=ctx, case=case, organisation=organisation)
    now = utcnow()
    if not new_case:
        await _retire_current(session=session, case_id=case.case_id)
    if clocks is None:
        clocks = _initial_clocks(ctx=ctx, case=case, assigned_at=now)
    assignment = _new_assignment(case=case, decision=decision, clocks=clocks, actor=actor, now=now)
    # In a slice it waits for the slice's flush with the others (workload() counts it then).
    add_later(session, assignment)
    _note_rotation(session, team_code=decision.team_code, at=now)
    event = _assigned_event(
        case=case,
        assignment=assignment,
        decision=decision,
        organisation=organisation,
        clocks=clocks,
        actor=actor,
        correlation_id=correlation_id,
    )
    record_event(session, event)
    await audit(
        session,
        case_id=case.case_id,
        action="assigned",
        actor=actor,
        reason="；".join(decision.reasons),
        detail={"team_code": decision.team_code, "kind": decision.kind, "rule": decision.rule},
    )
    return assignment


# --------------------------------------------------------------------------- events from the other services


async def _route_new_matter(
    *, session: AsyncSession, ctx: RoutingContext, case: RoutedCase, correlation_id: str | None
) -> None:
    session.add(case)
    await route(
        session=session,
        ctx=ctx,
        case=case,
        actor=ROUTING_ACTOR,
        correlation_id=correlation_id,
        new_case=True,
    )


async def receive_complaint(*, session: AsyncSession, ctx: RoutingContext, event: ComplaintReceived) -> None:
    if event.linked_repeat:
        # A repeat call about an open matter (重复件) is worked with that matter, not routed on its own.
        log.info("linked repeat not routed", repeat_of=event.repeat_of)
        return
    if await lookup(session, RoutedCase, event.case_id) is not None:
        return
    case = complaint_case(event=event, city_code=ctx.seed_organisation.city_code)
    await _route_new_matter(session=session, ctx=ctx, case=case, correlation_id=event.correlation_id)


async def receive_suggestion(
    *, session: AsyncSession, ctx: RoutingContext, event: SuggestionReceived
) -> None:
    if await lookup(session, RoutedCase, event.case_id) is not None:
        return
    case = suggestion_case(event=event, city_code=ctx.seed_organisation.city_code)
    await _route_new_matter(session=session, ctx=ctx, case=case, correlation_id=event.correlation_id)


async def return_task(*, session: AsyncSession, ctx: RoutingContext, event: TaskReturned) -> None:
    case = await session.get(RoutedCase, event.case_id)
    current = await current_assignment(session=session, case_id=event.case_id)
    if case is None or current is None or current.id != event.assignment_id:
        # A return of an assignment that is no longer current changes nothing.
        log.info("stale return ignored", assignment_id=event.assignment_id)
        return
    case.return_count += 1
    remember_teams_of(case, current)
    if case.return_count >= ctx.max_returns:
        add_fact(case, Fact.RETURNED_TWICE)
    session.add(case)
    await route(session=session, ctx=ctx, case=case, actor=ROUTING_ACTOR, correlation_id=event.correlation_id)


async def reopen_case(*, session: AsyncSession, ctx: RoutingContext, event: CaseReopened) -> None:
    case = await session.get(RoutedCase, event.case_id)
    if case is None or case.round >= event.round:
        return
    current = await current_assignment(session=session, case_id=event.case_id)
    if case.case_kind == CaseKind.SUGGESTION and current is not None:
        await _rehandle_suggestion(session=session, ctx=ctx, case=case, current=current, event=event)
        return
    previous = [
        *case.previous_team_codes,
        *event.previous_team_codes,
        *([current.team_code] if current else []),
    ]
    case.previous_team_codes = list(dict.fromkeys(previous))
    case.round = event.round
    case.open = True
    add_fact(case, Fact.REOPENED)
    session.add(case)
    await route(session=session, ctx=ctx, case=case, actor=ROUTING_ACTOR, correlation_id=event.correlation_id)


async def _rehandle_suggestion(
    *, session: AsyncSession, ctx: RoutingContext, case: RoutedCase, current: Assignment, event: CaseReopened
) -> None:
    # A deputy not satisfied sends the suggestion back to the same handling unit (重新办理),
    # on the re-handling clock; it is not a complaint to be moved away from a team.  Recusal still
    # has the last word: a unit it refuses is replaced by the rules, as after a return.
    case.round = event.round
    case.open = True
    session.add(case)
    organisation = await organisation_from_db(session=session, ctx=ctx)
    matter = recusal_matter(facts_of(case))

    def allowed(team_code: str) -> bool:
        return may_take(
            matter=matter, team_code=team_code, duty=Duty.HANDLE, organisation=organisation
        ).allowed

    if not allowed(current.team_code):
        await route(
            session=session, ctx=ctx, case=case, actor=ROUTING_ACTOR, correlation_id=event.correlation_id
        )
        return
    decision = Decision(
        team_code=current.team_code,
        kind=current.kind,
        rule=SystemRule.SUGGESTION_REHANDLE,
        reasons=[
            f"代表（委员）对答复不满意：{event.reason}" if event.reason else "代表（委员）对答复不满意",
            f"退回{organisation.team_name(current.team_code)}重新办理并再次答复",
        ],
        participants=[p for p in current.participants if allowed(p)],
    )
    rehandle = ctx.deadlines.later_clock("rehandle", calendar=ctx.calendar, start=event.occurred_at)
    await route(
        session=session,
        ctx=ctx,
        case=case,
        actor=ROUTING_ACTOR,
        correlation_id=event.correlation_id,
        decision=decision,
        clocks=[rehandle],
    )


async def close_assignments(*, session: AsyncSession, case_id: str) -> None:
    """The matter is concluded: its assignments are no longer open work for any team."""
    await session.exec(
        update(Assignment).where(col(Assignment.case_id) == case_id, col(Assignment.open)).values(open=False)
    )


async def close_case(*, session: AsyncSession, case_id: str) -> None:
    await close_assignments(session=session, case_id=case_id)
    case = await session.get(RoutedCase, case_id)
    if case is not None:
        case.open = False
        session.add(case)


# --------------------------------------------------------------------------- a supervisor's decisions


async def _routed_case(*, session: AsyncSession, case_id: str) -> RoutedCase:
    case = await session.get(RoutedCase, case_id)
    if case is None:
        raise FieldProblems([("case_id", "该事项尚未分派或不存在", "unknown case")], status_code=404)
    return case


async def _reassignment_decision(
    *,
    session: AsyncSession,
    case: RoutedCase,
    team_code: str,
    reason: str,
    current: Assignment | None,
    organisation: Organisation,
) -> Decision:
    def decide_with(load: Mapping[str, tuple[int, float]]) -> Decision:
        return reassignment(
            facts=facts_of(case),
            team_code=team_code,
            reason=reason,
            review_required=bool(current and current.review_required),
            review_team_code=current.review_team_code if current else None,
            key_clue=bool(current and current.key_clue),
            organisation=organisation,
            workload=load,
        )

    # As in _decide: the workload is read only when a new reviewer has to be chosen among counties.
    try:
        return decide_with(NOT_FETCHED)
    except WorkloadNeeded:
        return decide_with(await workload(session=session))


async def reassign(
    *,
    session: AsyncSession,
    ctx: RoutingContext,
    case_id: str,
    team_code: str,
    reason: str,
    actor: Principal,
    correlation_id: str | None,
) -> Assignment:
    """A supervisor moves the matter to ``team_code``; recusal refuses the accused bureau's team
    (when it may not handle the matter) and every team that already had it, and nothing changes."""
    case = await _routed_case(session=session, case_id=case_id)
    organisation = await organisation_from_db(session=session, ctx=ctx)
    refusal(
        matter=recusal_matter(facts_of(case)),
        team_code=team_code,
        duty=Duty.HANDLE,
        field="team_code",
        organisation=organisation,
    )
    current = await current_assignment(session=session, case_id=case_id)
    if current is not None and current.team_code == team_code:
        raise conflict("team_code", "该事项已由该队办理", "the matter is already with this team")
    if current is not None:
        remember_teams_of(case, current)
    session.add(case)
    decision = await _reassignment_decision(
        session=session,
        case=case,
        team_code=team_code,
        reason=reason,
        current=current,
        organisation=organisation,
    )
    return await route(
        session=session,
        ctx=ctx,
        case=case,
        actor=actor.username,
        correlation_id=correlation_id,
        decision=decision,
    )


async def flag_key_clue(
    *,
    session: AsyncSession,
    ctx: RoutingContext,
    case_id: str,
    reason: str,
    actor: Principal,
    correlation_id: str | None,
) -> Assignment:
    """A supervisor marks a complaint as a key clue (重点线索): the rules decide again with that fact."""
    case = await session.get(RoutedCase, case_id)
    if case is None or case.case_kind != CaseKind.COMPLAINT:
        raise FieldProblems([("case_id", "该投诉尚未分派或不存在", "unknown complaint")], status_code=404)
    if Fact.SUPERVISOR_FLAG in case.facts:
        raise conflict("case_id", "该投诉已标记为重点线索", "already flagged")
    current = await current_assignment(session=session, case_id=case_id)
    add_fact(case, Fact.SUPERVISOR_FLAG)
    if current is not None:
        # The team that had it as an ordinary complaint does not keep it as a key clue.
        remember_teams_of(case, current)
    session.add(case)
    await audit(session, case_id=case_id, action="flagged_key_clue", actor=actor.username, reason=reason)
    return await route(
        session=session, ctx=ctx, case=case, actor=actor.username, correlation_id=correlation_id
    )
