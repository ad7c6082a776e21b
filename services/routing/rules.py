"""The routing decision: rules (data) choose, recusal (code) constrains.

``decide`` and ``reassignment`` are pure functions of the matter's facts, the rule set (or the
supervisor's choice), the organisation and the teams' workload, so the property test can throw any
of them at it.  Recusal is ``shared.recusal.may_take``, asked after the rules on every path:
whatever a rule or a supervisor says, a team never verifies its own bureau's leadership or its own
members, never checks a matter about its own bureau, and a returned, reopened or reassigned matter
never goes back to a team that had it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from services.routing.models import AssignKind, Fact, SystemRule
from shared.errors import FieldProblems
from shared.recusal import Duty, Matter, conflicted, may_take
from shared.reference import Organisation
from shared.states import CaseKind

FACT_LABELS: dict[str, str] = {
    Fact.ALWAYS: "所有事项",
    Fact.SUGGESTION: "代表建议或委员提案",
    Fact.REOPENED: "投诉人不满意或申请复查后重新办理",
    Fact.RETURNED_TWICE: "已被退回两次",
    Fact.ACCUSED_LEADERSHIP: "被投诉人为单位领导",
    Fact.ACCUSED_INSPECTION_TEAM: "被投诉单位为督察部门",
    Fact.SERIOUS_CATEGORY: "属严重问题类别",
    Fact.INJURY_OR_DEATH: "陈述中提及受伤或死亡",
    Fact.REPEAT_AFTER_REJECTION: "不满意答复后再次投诉",
    Fact.SUPERVISOR_FLAG: "督察支队标记为重点",
    Fact.CITY_UNIT: "被投诉单位为市局直属单位",
}
ASSIGN_KINDS = tuple(AssignKind)
KEY_CLUE_FACTS = frozenset(
    {
        Fact.ACCUSED_LEADERSHIP,
        Fact.ACCUSED_INSPECTION_TEAM,
        Fact.SERIOUS_CATEGORY,
        Fact.INJURY_OR_DEATH,
        Fact.REPEAT_AFTER_REJECTION,
        Fact.SUPERVISOR_FLAG,
    }
)


@dataclass(frozen=True)
class Rule:
    name: str
    priority: int
    case_kinds: tuple[str, ...]
    when: tuple[str, ...]
    assign: str
    review: bool
    description: str
    enabled: bool = True


@dataclass(frozen=True)
class Facts:
    case_kind: str
    county_code: str
    accused_unit: str = ""
    facts: frozenset[str] = frozenset()
    previous_team_codes: tuple[str, ...] = ()
    lead_unit: str | None = None
    co_units: tuple[str, ...] = ()

    def has(self, fact: str) -> bool:
        return (
            fact == Fact.ALWAYS
            or fact in self.facts
            or (fact == Fact.SUGGESTION and self.case_kind == CaseKind.SUGGESTION)
        )


@dataclass
class Decision:
    team_code: str
    kind: str
    rule: str
    reasons: list[str]
    participants: list[str] = field(default_factory=list)
    review_required: bool = False
    review_team_code: str | None = None
    key_clue: bool = False
    needs_supervisor: bool = False


def recusal_matter(facts: Facts) -> Matter:
    """The matter as recusal sees it: its accused bureau, and the teams that already had it."""
    return Matter(
        case_kind=facts.case_kind,
        accused_area=facts.county_code,
        against_own_people=facts.has(Fact.ACCUSED_LEADERSHIP) or facts.has(Fact.ACCUSED_INSPECTION_TEAM),
        had_by=frozenset(facts.previous_team_codes),
    )


def conflicted_teams(facts: Facts, organisation: Organisation) -> set[str]:
    """Teams that may never verify this matter, whatever else is exhausted: recusal (回避)."""
    return conflicted(matter=recusal_matter(facts), organisation=organisation)


def refused_teams(matter: Matter, organisation: Organisation, duty: Duty = Duty.HANDLE) -> set[str]:
    """Every team recusal refuses for ``duty`` (codes outside the organisation included, if had)."""
    refused = {
        code
        for code in organisation.team_codes()
        if not may_take(matter=matter, team_code=code, duty=duty, organisation=organisation).allowed
    }
    return refused | set(matter.had_by)


def _least_loaded(candidates: Sequence[str], workload: Mapping[str, tuple[int, float]]) -> str:
    # Fewest open tasks first; among equals the team that was given work longest ago, so work rotates.
    return min(candidates, key=lambda code: (*workload.get(code, (0, 0.0)), code))


def _team_for_unit(unit: str, organisation: Organisation) -> str | None:
    if unit.startswith(organisation.city_bureau) or unit in organisation.city_units.values():
        return organisation.city_team_code
    county = organisation.county_of_unit(unit)
    return county.code if county else None


def decide(
    *,
    facts: Facts,
    rules: Sequence[Rule],
    organisation: Organisation,
    workload: Mapping[str, tuple[int, float]],
) -> Decision:
    rule = next(
        (
            r
            for r in sorted(rules, key=lambda r: (r.priority, r.name))
            if r.enabled and facts.case_kind in r.case_kinds and any(facts.has(f) for f in r.when)
        ),
        None,
    )
    city = organisation.city_team_code
    home = (
        city
        if facts.county_code == organisation.city_code or facts.county_code not in organisation.counties
        else facts.county_code
    )
    excluded = refused_teams(recusal_matter(facts), organisation)
    key_clue = facts.case_kind == CaseKind.COMPLAINT and bool(KEY_CLUE_FACTS & facts.facts)
    reasons: list[str] = []
    matched = [
        FACT_LABELS.get(f, f) for f in (rule.when if rule else ()) if f != Fact.ALWAYS and facts.has(f)
    ]

    if rule is None:
        decision = Decision(
            team_code=home,
            kind=AssignKind.COUNTY if home != city else AssignKind.CITY,
            rule=SystemRule.NO_RULE_MATCHED,
            reasons=["没有启用的规则适用，按属地管理分派"],
        )
    else:
        reasons.append(f"适用规则“{rule.name}”：{rule.description}")
        if matched:
            reasons.append("依据：" + "、".join(matched))
        decision = _apply(rule, facts, organisation, workload, excluded, home, reasons)
        decision.review_required = rule.review or key_clue
    decision.key_clue = key_clue
    _enforce_recusal(decision, facts, organisation, workload, excluded)
    if decision.review_required:
        decision.review_team_code = reviewer_for(
            matter=recusal_matter(facts),
            handling=[decision.team_code, *decision.participants],
            organisation=organisation,
            workload=workload,
        )
    return decision


def _apply(
    rule: Rule,
    facts: Facts,
    organisation: Organisation,
    workload: Mapping[str, tuple[int, float]],
    excluded: set[str],
    home: str,
    reasons: list[str],
) -> Decision:
    city = organisation.city_team_code
    if rule.assign == AssignKind.LEAD_UNIT:
        lead = _team_for_unit(facts.lead_unit or "", organisation) or city
        participants = []
        for unit in facts.co_units:
            team = _team_for_unit(unit, organisation)
            if team and team != lead and team not in participants:
                participants.append(team)
            elif team is None:
                reasons.append(f"协办单位“{unit}”不在本系统，由主办单位书面征求意见")
        reasons.append(f"主办单位：{facts.lead_unit}，由{organisation.team_name(lead)}承办")
        return Decision(
            team_code=lead,
            kind=AssignKind.CITY if lead == city else AssignKind.COUNTY,
            rule=rule.name,
            reasons=reasons,
            participants=participants,
        )
    if rule.assign == AssignKind.COUNTY:
        kind = AssignKind.CITY if home == city else AssignKind.COUNTY
        reasons.append(
            f"被投诉单位属{organisation.area_name(facts.county_code)}，由{organisation.team_name(home)}核查"
        )
        return Decision(team_code=home, kind=kind, rule=rule.name, reasons=reasons)
    if rule.assign == AssignKind.CITY:
        reasons.append(f"由{organisation.team_name(city)}核查")
        return Decision(team_code=city, kind=AssignKind.CITY, rule=rule.name, reasons=reasons)
    if rule.assign == AssignKind.JOINT:
        participants = [home] if home != city and home not in excluded else []
        reasons.append(
            f"市县联合核查：{organisation.team_name(city)}牵头"
            + (f"，{organisation.team_name(home)}参与" if participants else "")
        )
        return Decision(
            team_code=city, kind=AssignKind.JOINT, rule=rule.name, reasons=reasons, participants=participants
        )
    # cross
    candidates = [c for c in organisation.counties if c != home and c not in excluded]
    if not candidates:
        reasons.append(f"没有可交叉核查的其他县级督察大队，改由{organisation.team_name(city)}核查")
        return Decision(team_code=city, kind=AssignKind.CITY, rule=rule.name, reasons=reasons)
    chosen = _least_loaded(candidates, workload)
    reasons.append(
        f"交叉互查：由{organisation.team_name(chosen)}核查（在可选的{len(candidates)}个县级督察大队中在办件最少、轮转在前）"
    )
    return Decision(team_code=chosen, kind=AssignKind.CROSS, rule=rule.name, reasons=reasons)


def _enforce_recusal(
    decision: Decision,
    facts: Facts,
    organisation: Organisation,
    workload: Mapping[str, tuple[int, float]],
    excluded: set[str],
) -> None:
    matter = recusal_matter(facts)
    never = conflicted(matter=matter, organisation=organisation)
    city = organisation.city_team_code
    if facts.has(Fact.RETURNED_TWICE) and decision.team_code == city and city not in never:
        # Returned twice: the city team's leadership decides where it goes, even if the city team
        # already had it once; that is a decision for a person, so it is flagged as one.
        decision.needs_supervisor = True
        decision.reasons.append("已两次退回，由市局督察支队领导决定承办单位")
        excluded = excluded - {city}
    if decision.team_code in excluded:
        _move_away(decision, matter, organisation, workload, excluded, home=facts.county_code)
    decision.participants = [
        p
        for p in decision.participants
        if p != decision.team_code
        and may_take(matter=matter, team_code=p, duty=Duty.HANDLE, organisation=organisation).allowed
    ]
    if decision.kind == AssignKind.JOINT and not decision.participants:
        decision.kind = AssignKind.CITY if decision.team_code == city else decision.kind


def _move_away(
    decision: Decision,
    matter: Matter,
    organisation: Organisation,
    workload: Mapping[str, tuple[int, float]],
    excluded: set[str],
    *,
    home: str,
) -> None:
    """The chosen team may not take the matter: the city team, else another county's, crossed."""
    verdict = may_take(
        matter=matter, team_code=decision.team_code, duty=Duty.HANDLE, organisation=organisation
    )
    why = verdict.chinese or f"回避：{organisation.team_name(decision.team_code)}已办理过本件，不再由其办理"
    city = organisation.city_team_code
    if city not in excluded:
        decision.team_code, decision.kind = city, AssignKind.CITY
        decision.reasons.append(f"{why}，改由{organisation.team_name(city)}核查")
        return
    candidates = [c for c in organisation.counties if c not in excluded and c != home]
    candidates = candidates or [c for c in organisation.counties if c not in excluded]
    if candidates:
        decision.team_code, decision.kind = _least_loaded(candidates, workload), AssignKind.CROSS
        decision.reasons.append(f"{why}，改由{organisation.team_name(decision.team_code)}交叉核查")
        return
    # Every team free of conflict has had it already: one of them holds it for now and a supervisor
    # decides (and a supervisor's reassignment is refused any team that had it).  A team refused on
    # the ground of its own bureau never holds it, whatever else is exhausted.
    never = conflicted(matter=matter, organisation=organisation)
    allowed = [c for c in organisation.team_codes() if c not in never]
    decision.team_code = city if city in allowed else _least_loaded(allowed, workload)
    decision.kind = AssignKind.CITY if decision.team_code == city else AssignKind.CROSS
    decision.needs_supervisor = True
    decision.reasons.append(
        f"{why}；其他督察队均已办理过，暂由{organisation.team_name(decision.team_code)}承办，请督察支队指定"
    )


def reviewer_for(
    *,
    matter: Matter,
    handling: Collection[str],
    organisation: Organisation,
    workload: Mapping[str, tuple[int, float]],
) -> str | None:
    """A second team for the cross-check (复核): the city team if recusal allows, else the least
    loaded county that may check; never a team handling it or that had it, nor the accused bureau's."""
    checking = matter.with_had_by(handling)
    city = organisation.city_team_code
    if may_take(matter=checking, team_code=city, duty=Duty.CHECK, organisation=organisation).allowed:
        return city
    candidates = [
        c
        for c in organisation.counties
        if may_take(matter=checking, team_code=c, duty=Duty.CHECK, organisation=organisation).allowed
    ]
    return _least_loaded(candidates, workload) if candidates else None


def refusal(*, matter: Matter, team_code: str, duty: Duty, field: str, organisation: Organisation) -> None:
    """Raises the field error a person reads when recusal refuses the team they named."""
    if team_code not in organisation.team_codes():
        raise FieldProblems([(field, f"不存在的督察队：{team_code}", f"unknown team {team_code}")])
    verdict = may_take(matter=matter, team_code=team_code, duty=duty, organisation=organisation)
    if not verdict.allowed:
        raise FieldProblems([(field, verdict.chinese, verdict.english)])


def reassignment(
    *,
    facts: Facts,
    team_code: str,
    reason: str,
    review_required: bool,
    review_team_code: str | None,
    key_clue: bool,
    organisation: Organisation,
    workload: Mapping[str, tuple[int, float]],
) -> Decision:
    """A supervisor's reassignment to ``team_code``, refused (422 on ``team_code``) when recusal
    refuses the team; the reviewer is kept if recusal still allows it, else picked again."""
    matter = recusal_matter(facts)
    refusal(
        matter=matter, team_code=team_code, duty=Duty.HANDLE, field="team_code", organisation=organisation
    )
    city = organisation.city_team_code
    # The city team first: it wins should its code also be the matter's area.
    kinds = {facts.county_code: AssignKind.COUNTY, city: AssignKind.CITY}
    decision = Decision(
        team_code=team_code,
        kind=kinds.get(team_code, AssignKind.CROSS),
        rule=SystemRule.SUPERVISOR_REASSIGNMENT,
        reasons=[f"督察支队改派：{reason}", f"改由{organisation.team_name(team_code)}办理"],
        review_required=review_required,
        key_clue=key_clue,
    )
    if review_required:
        checking = matter.with_had_by([team_code])
        keep = (
            review_team_code is not None
            and may_take(
                matter=checking, team_code=review_team_code, duty=Duty.CHECK, organisation=organisation
            ).allowed
        )
        decision.review_team_code = (
            review_team_code
            if keep
            else reviewer_for(
                matter=matter, handling=[team_code], organisation=organisation, workload=workload
            )
        )
    return decision
