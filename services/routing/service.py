"""Routing's logic: keep the organisation and rules, decide, record why, publish."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Update, bindparam, func
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from services.routing.models import Assignment, RoutedCase, RoutingRule, RuleChange, Team, Unit
from services.routing.rules import Decision, Facts, Rule, conflicted_teams, decide
from shared.audit import audit
from shared.auth import Principal
from shared.db import built_once, new_row, table_of, utcnow
from shared.deadlines import DeadlineBook
from shared.errors import FieldProblems
from shared.events import CaseAssigned, ClockSet
from shared.outbox import record_event
from shared.reference import County, Organisation
from shared.workcalendar import WorkCalendar

DEFAULT_RULES_FILE = Path(__file__).resolve().parent / "default_rules.json"


@dataclass
class RoutingContext:
    calendar: WorkCalendar
    deadlines: DeadlineBook
    max_returns: int
    seed_organisation: Organisation
    cache_seconds: float = 5.0
    _organisation: Organisation | None = field(default=None, repr=False)
    _rules: list[Rule] | None = field(default=None, repr=False)
    _loaded_at: float = 0.0

    def forget_cache(self) -> None:
        self._organisation = None
        self._rules = None

    def cache_fresh(self) -> bool:
        # Another instance may have edited rules or teams: re-read after a few seconds at most.
        if time.monotonic() - self._loaded_at > self.cache_seconds:
            self.forget_cache()
            self._loaded_at = time.monotonic()
            return False
        return True


async def seed_reference_data(*, session: AsyncSession, organisation: Organisation, rules_file: Path) -> None:
    if (await session.exec(select(func.count()).select_from(Team))).one() == 0:
        session.add(
            Team(
                code=organisation.city_team_code,
                name=organisation.city_team_name,
                level="city",
                area_code=organisation.city_code,
                bureau=organisation.city_bureau,
            )
        )
        session.add(
            Unit(
                code=organisation.city_code,
                name=organisation.city_bureau,
                area_code=organisation.city_code,
                kind="bureau",
            )
        )
        session.add(
            Unit(
                code=f"{organisation.city_code}-DC",
                name=organisation.city_team_name,
                area_code=organisation.city_code,
                kind="inspection_team",
            )
        )
        for code, name in organisation.city_units.items():
            session.add(Unit(code=code, name=name, area_code=organisation.city_code, kind="city_unit"))
        for county in organisation.counties.values():
            session.add(
                Team(
                    code=county.code,
                    name=county.inspection_team,
                    level="county",
                    area_code=county.code,
                    bureau=county.bureau,
                )
            )
            session.add(Unit(code=county.code, name=county.bureau, area_code=county.code, kind="bureau"))
            session.add(
                Unit(
                    code=f"{county.code}-DC",
                    name=county.inspection_team,
                    area_code=county.code,
                    kind="inspection_team",
                )
            )
            for index, alias in enumerate(county.aliases):
                session.add(
                    Unit(
                        code=f"{county.code}-A{index}", name=alias, area_code=county.code, kind="bureau_alias"
                    )
                )
    if (await session.exec(select(func.count()).select_from(RoutingRule))).one() == 0:
        # Read once at first start-up, before the service takes traffic.
        data = json.loads(rules_file.read_text(encoding="utf-8"))  # noqa: ASYNC240
        for raw in data["rules"]:
            session.add(
                RoutingRule(
                    name=raw["name"],
                    priority=raw["priority"],
                    case_kinds=raw["case_kinds"],
                    when=raw["when"],
                    assign=raw["assign"],
                    review=raw.get("review", False),
                    description=raw["description"],
                    enabled=raw.get("enabled", True),
                )
            )


async def organisation_from_db(*, session: AsyncSession, ctx: RoutingContext) -> Organisation:
    if ctx.cache_fresh() and ctx._organisation is not None:
        return ctx._organisation
    teams = list(await session.exec(select(Team).where(col(Team.active))))
    units = list(await session.exec(select(Unit).where(col(Unit.active))))
    city = next((t for t in teams if t.level == "city"), None)
    seed = ctx.seed_organisation
    counties: dict[str, County] = {}
    for team in teams:
        if team.level != "county":
            continue
        aliases = tuple(
            u.name for u in units if u.area_code == team.area_code and u.kind in ("bureau_alias",)
        )
        counties[team.area_code] = County(
            code=team.area_code,
            name=seed.counties[team.area_code].name if team.area_code in seed.counties else team.area_code,
            bureau=team.bureau,
            inspection_team=team.name,
            aliases=aliases,
        )
    organisation = Organisation(
        city_code=city.area_code if city else seed.city_code,
        city_name=seed.city_name,
        city_bureau=city.bureau if city else seed.city_bureau,
        city_team_code=city.code if city else seed.city_team_code,
        city_team_name=city.name if city else seed.city_team_name,
        city_units={u.code: u.name for u in units if u.kind == "city_unit"},
        counties=counties,
        unit_kinds=seed.unit_kinds,
    )
    ctx._organisation = organisation
    return organisation


async def rules_from_db(*, session: AsyncSession, ctx: RoutingContext) -> list[Rule]:
    if ctx.cache_fresh() and ctx._rules is not None:
        return ctx._rules
    rows = await session.exec(select(RoutingRule))
    ctx._rules = [
        Rule(
            name=r.name,
            priority=r.priority,
            case_kinds=tuple(r.case_kinds),
            when=tuple(r.when),
            assign=r.assign,
            review=r.review,
            description=r.description,
            enabled=r.enabled,
        )
        for r in rows
    ]
    return ctx._rules


class WorkloadNeeded(Exception):
    pass


class _NotFetched(Mapping[str, tuple[int, float]]):
    """Stands in for the workload until a decision actually looks at it."""

    def __getitem__(self, key: str) -> tuple[int, float]:
        raise WorkloadNeeded

    def get(self, key: str, default: Any = None) -> Any:
        raise WorkloadNeeded

    def __iter__(self) -> Iterator[str]:
        raise WorkloadNeeded

    def __len__(self) -> int:
        raise WorkloadNeeded


NOT_FETCHED = _NotFetched()


@built_once
def _open_work_query() -> Select[str, int]:
    return (
        select(Assignment.team_code, func.count()).where(col(Assignment.open)).group_by(Assignment.team_code)
    )


@built_once
def _rotation_query() -> Select[str, datetime] | Select[str, None]:
    return select(Team.code, Team.last_assigned_at)


async def workload(*, session: AsyncSession) -> dict[str, tuple[int, float]]:
    # Counts every team's open work, so the other matters' assignments of the slice must be in.
    await session.flush()
    counts = dict((await session.exec(_open_work_query())).all())
    result: dict[str, tuple[int, float]] = {}
    # Columns, not rows: route() moves last_assigned_at with an UPDATE that leaves loaded Team
    # rows as they were, so a row from the identity map could be stale within the transaction.
    for code, last_assigned_at in await session.exec(_rotation_query()):
        last = last_assigned_at.timestamp() if last_assigned_at else 0.0
        result[code] = (int(counts.get(code, 0)), last)
    return result


def facts_of(case: RoutedCase) -> Facts:
    return Facts(
        case_kind=case.case_kind,
        county_code=case.county_code,
        accused_unit=case.accused_unit,
        facts=frozenset(case.facts),
        previous_team_codes=tuple(case.previous_team_codes),
        lead_unit=case.lead_unit,
        co_units=tuple(case.co_units),
    )


def _traits(case: RoutedCase) -> set[str]:
    traits = set(case.facts)
    if case.complex_matter:
        traits.add("complex")
    return traits


async def current_assignment(*, session: AsyncSession, case_id: str) -> Assignment | None:
    return (
        await session.exec(
            select(Assignment)
            .where(Assignment.case_id == case_id, col(Assignment.current))
            .order_by(col(Assignment.created_at).desc())
        )
    ).first()


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
    organisation = await organisation_from_db(session=session, ctx=ctx)
    if decision is None:
        facts, rules = facts_of(case), await rules_from_db(session=session, ctx=ctx)
        # decide() is pure, so trying it without the workload first changes nothing; most matters
        # go to their own county's team and never compare workloads, which costs a scan of the
        # open assignments.
        try:
            decision = decide(facts=facts, rules=rules, organisation=organisation, workload=NOT_FETCHED)
        except WorkloadNeeded:
            decision = decide(
                facts=facts, rules=rules, organisation=organisation, workload=await workload(session=session)
            )
    now = utcnow()
    if not new_case:
        await session.exec(
            update(Assignment)
            .where(col(Assignment.case_id) == case.case_id, col(Assignment.current))
            .values(current=False, open=False)
        )
    clocks = (
        clocks
        if clocks is not None
        else ctx.deadlines.initial_clocks(
            calendar=ctx.calendar,
            case_kind=case.case_kind,
            received_at=case.received_at,
            assigned_at=now,
            traits=_traits(case),
            named_complainant=case.named_complainant,
            has_co_units=bool(case.co_units),
        )
    )
    assignment = new_row(
        Assignment,
        case_id=case.case_id,
        case_kind=case.case_kind,
        team_code=decision.team_code,
        kind=decision.kind,
        rule=decision.rule,
        reasons=decision.reasons,
        participants=decision.participants,
        review_required=decision.review_required,
        review_team_code=decision.review_team_code,
        key_clue=decision.key_clue,
        needs_supervisor=decision.needs_supervisor,
        round=case.round,
        clocks=[c.model_dump(mode="json") for c in clocks],
        assigned_by=actor,
        created_at=now,
    )
    session.add(assignment)
    await session.exec(_rotation_update(), params={"team_code": decision.team_code, "at": now})
    record_event(
        session,
        CaseAssigned(
            case_id=case.case_id,
            correlation_id=correlation_id,
            actor=actor,
            case_kind=case.case_kind,
            assignment_id=assignment.id,
            team_code=decision.team_code,
            team_name=organisation.team_name(decision.team_code),
            kind=decision.kind,
            rule=decision.rule,
            reasons=decision.reasons,
            participant_team_codes=decision.participants,
            review_required=decision.review_required,
            review_team_code=decision.review_team_code,
            key_clue=decision.key_clue,
            previous_team_codes=case.previous_team_codes,
            clocks=clocks,
            round=case.round,
        ),
    )
    await audit(
        session,
        new_case=new_case,
        case_id=case.case_id,
        action="assigned",
        actor=actor,
        reason="；".join(decision.reasons),
        detail={"team_code": decision.team_code, "kind": decision.kind, "rule": decision.rule},
    )
    return assignment


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
    case = await session.get(RoutedCase, case_id)
    if case is None:
        raise FieldProblems([("case_id", "该事项尚未分派或不存在", "unknown case")], status_code=404)
    organisation = await organisation_from_db(session=session, ctx=ctx)
    if team_code not in organisation.team_codes():
        raise FieldProblems([("team_code", f"不存在的督察队：{team_code}", f"unknown team {team_code}")])
    facts = facts_of(case)
    if team_code in conflicted_teams(facts, organisation):
        raise FieldProblems(
            [
                (
                    "team_code",
                    "回避：该队不得核查针对本单位领导或本队成员的投诉",
                    "recusal: this team may not verify this matter",
                )
            ]
        )
    current = await current_assignment(session=session, case_id=case_id)
    if current is not None and current.team_code == team_code:
        raise FieldProblems(
            [("team_code", "该事项已由该队办理", "the matter is already with this team")], status_code=409
        )
    if current is not None and current.team_code not in case.previous_team_codes:
        case.previous_team_codes = [*case.previous_team_codes, current.team_code]
    session.add(case)
    kind = (
        "city"
        if team_code == organisation.city_team_code
        else ("county" if team_code == case.county_code else "cross")
    )
    decision = Decision(
        team_code=team_code,
        kind=kind,
        rule="supervisor_reassignment",
        reasons=[f"督察支队改派：{reason}", f"改由{organisation.team_name(team_code)}办理"],
        review_required=bool(current and current.review_required),
        key_clue=bool(current and current.key_clue),
    )
    if decision.review_required:
        decision.review_team_code = (
            current.review_team_code if current and current.review_team_code != team_code else None
        ) or (organisation.city_team_code if team_code != organisation.city_team_code else None)
    return await route(
        session=session,
        ctx=ctx,
        case=case,
        actor=actor.username,
        correlation_id=correlation_id,
        decision=decision,
    )


async def update_rule(
    *,
    session: AsyncSession,
    ctx: RoutingContext,
    name: str,
    values: dict[str, Any],
    reason: str,
    actor: Principal,
) -> RoutingRule:
    rule = await session.get(RoutingRule, name)
    before = rule.model_dump(mode="json", exclude={"updated_at", "updated_by"}) if rule else None
    if rule is None:
        rule = RoutingRule(name=name, **values)
    else:
        for key, value in values.items():
            setattr(rule, key, value)
    rule.updated_at = utcnow()
    rule.updated_by = actor.username
    session.add(rule)
    session.add(
        RuleChange(
            rule_name=name,
            changed_by=actor.username,
            reason=reason,
            before=before,
            after=rule.model_dump(mode="json", exclude={"updated_at", "updated_by"}),
        )
    )
    return rule


async def audit_org_change(
    *, session: AsyncSession, actor: Principal, what: str, after: dict[str, Any]
) -> None:
    await audit(
        session, case_id=f"org:{what}", action="organisation_changed", actor=actor.username, detail=after
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
    if case is None or case.case_kind != "complaint":
        raise FieldProblems([("case_id", "该投诉尚未分派或不存在", "unknown complaint")], status_code=404)
    if "supervisor_flag" in case.facts:
        raise FieldProblems([("case_id", "该投诉已标记为重点线索", "already flagged")], status_code=409)
    current = await current_assignment(session=session, case_id=case_id)
    case.facts = [*case.facts, "supervisor_flag"]
    if current is not None and current.team_code not in case.previous_team_codes:
        # The team that had it as an ordinary complaint does not keep it as a key clue.
        case.previous_team_codes = [*case.previous_team_codes, current.team_code]
    session.add(case)
    await audit(session, case_id=case_id, action="flagged_key_clue", actor=actor.username, reason=reason)
    return await route(
        session=session, ctx=ctx, case=case, actor=actor.username, correlation_id=correlation_id
    )
