"""The routing decision: rules (data) choose, recusal (code) constrains.

``decide`` is a pure function of the matter's facts, the rule set, the
organisation and the teams' workload, so the property test can throw any of
them at it.  Recusal is applied after the rules on every path: whatever a rule
says, a team never verifies its own bureau's leadership or its own members,
and a reopened or returned matter never goes back to a team that had it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.reference import Organisation

FACT_LABELS = {
    "always": "所有事项",
    "suggestion": "代表建议或委员提案",
    "reopened": "投诉人不满意或申请复查后重新办理",
    "returned_twice": "已被退回两次",
    "accused_leadership": "被投诉人为单位领导",
    "accused_inspection_team": "被投诉单位为督察部门",
    "serious_category": "属严重问题类别",
    "injury_or_death": "陈述中提及受伤或死亡",
    "repeat_after_rejection": "不满意答复后再次投诉",
    "supervisor_flag": "督察支队标记为重点",
    "city_unit": "被投诉单位为市局直属单位",
}
ASSIGN_KINDS = ("county", "city", "joint", "cross", "lead_unit")
KEY_CLUE_FACTS = frozenset(
    {
        "accused_leadership",
        "accused_inspection_team",
        "serious_category",
        "injury_or_death",
        "repeat_after_rejection",
        "supervisor_flag",
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
            fact == "always"
            or fact in self.facts
            or (fact == "suggestion" and self.case_kind == "suggestion")
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


def conflicted_teams(facts: Facts, organisation: Organisation) -> set[str]:
    """Teams that may not verify this matter: recusal (回避), not negotiable."""
    conflicted: set[str] = set()
    if facts.case_kind != "complaint":
        return conflicted
    own_team = (
        organisation.city_team_code if facts.county_code == organisation.city_code else facts.county_code
    )
    if facts.has("accused_leadership") or facts.has("accused_inspection_team"):
        conflicted.add(own_team)
    return conflicted


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
    excluded = conflicted_teams(facts, organisation) | set(facts.previous_team_codes)
    key_clue = facts.case_kind == "complaint" and bool(KEY_CLUE_FACTS & facts.facts)
    reasons: list[str] = []
    matched = [FACT_LABELS.get(f, f) for f in (rule.when if rule else ()) if f != "always" and facts.has(f)]

    if rule is None:
        decision = Decision(
            team_code=home,
            kind="county" if home != city else "city",
            rule="no_rule_matched",
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
        decision.review_team_code = _reviewer(decision, facts, organisation, workload, excluded)
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
    if rule.assign == "lead_unit":
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
            kind="city" if lead == city else "county",
            rule=rule.name,
            reasons=reasons,
            participants=participants,
        )
    if rule.assign == "county":
        kind = "city" if home == city else "county"
        reasons.append(
            f"被投诉单位属{organisation.area_name(facts.county_code)}，由{organisation.team_name(home)}核查"
        )
        return Decision(team_code=home, kind=kind, rule=rule.name, reasons=reasons)
    if rule.assign == "city":
        reasons.append(f"由{organisation.team_name(city)}核查")
        return Decision(team_code=city, kind="city", rule=rule.name, reasons=reasons)
    if rule.assign == "joint":
        participants = [home] if home != city and home not in excluded else []
        reasons.append(
            f"市县联合核查：{organisation.team_name(city)}牵头"
            + (f"，{organisation.team_name(home)}参与" if participants else "")
        )
        return Decision(
            team_code=city, kind="joint", rule=rule.name, reasons=reasons, participants=participants
        )
    # cross
    candidates = [c for c in organisation.counties if c != home and c not in excluded]
    if not candidates:
        reasons.append(f"没有可交叉核查的其他县级督察大队，改由{organisation.team_name(city)}核查")
        return Decision(team_code=city, kind="city", rule=rule.name, reasons=reasons)
    chosen = _least_loaded(candidates, workload)
    reasons.append(
        f"交叉互查：由{organisation.team_name(chosen)}核查（在可选的{len(candidates)}个县级督察大队中在办件最少、轮转在前）"
    )
    return Decision(team_code=chosen, kind="cross", rule=rule.name, reasons=reasons)


def _enforce_recusal(
    decision: Decision,
    facts: Facts,
    organisation: Organisation,
    workload: Mapping[str, tuple[int, float]],
    excluded: set[str],
) -> None:
    conflicted = conflicted_teams(facts, organisation)
    city = organisation.city_team_code
    if facts.has("returned_twice") and decision.team_code == city and city not in conflicted:
        # Returned twice: the city team's leadership decides where it goes, even if the city team
        # already had it once; that is a decision for a person, so it is flagged as one.
        decision.needs_supervisor = True
        decision.reasons.append("已两次退回，由市局督察支队领导决定承办单位")
        excluded = excluded - {city}
    if decision.team_code in excluded:
        why = (
            "回避：该队为被投诉单位本身或其领导所在单位"
            if decision.team_code in conflicted
            else "该队已办理过本件，不再由其办理"
        )
        home = facts.county_code
        if city not in excluded:
            decision.team_code, decision.kind = city, "city"
            decision.reasons.append(f"{why}，改由{organisation.team_name(city)}核查")
        else:
            candidates = [c for c in organisation.counties if c not in excluded and c != home]
            candidates = candidates or [c for c in organisation.counties if c not in excluded]
            if candidates:
                decision.team_code, decision.kind = _least_loaded(candidates, workload), "cross"
                decision.reasons.append(f"{why}，改由{organisation.team_name(decision.team_code)}交叉核查")
            else:
                # Every team free of conflict has had it already: one of them takes it for now and a
                # supervisor decides.  A conflicted team never does, whatever else is exhausted.
                allowed = [c for c in organisation.team_codes() if c not in conflicted]
                decision.team_code = city if city in allowed else _least_loaded(allowed, workload)
                decision.kind = "city" if decision.team_code == city else "cross"
                decision.needs_supervisor = True
                decision.reasons.append(
                    f"{why}；其他督察队均已办理过，暂由{organisation.team_name(decision.team_code)}承办，请督察支队指定"
                )
    decision.participants = [
        p for p in decision.participants if p not in conflicted and p != decision.team_code
    ]
    if decision.kind == "joint" and not decision.participants:
        decision.kind = "city" if decision.team_code == city else decision.kind


def _reviewer(
    decision: Decision,
    facts: Facts,
    organisation: Organisation,
    workload: Mapping[str, tuple[int, float]],
    excluded: set[str],
) -> str | None:
    """A second team for the cross-check (复核): never the team that verified, nor a conflicted one."""
    conflicted = conflicted_teams(facts, organisation)
    blocked = conflicted | {decision.team_code, *decision.participants}
    city = organisation.city_team_code
    if city not in blocked:
        return city
    candidates = [c for c in organisation.counties if c not in blocked and c != facts.county_code]
    return _least_loaded(candidates, workload) if candidates else None
