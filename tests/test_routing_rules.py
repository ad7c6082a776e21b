"""``services.routing.rules.decide``: the sample decisions, and recusal as a property no rule set breaks."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.routing.rulebook import DEFAULT_RULES_FILE
from services.routing.rules import (
    ASSIGN_KINDS,
    FACT_LABELS,
    Decision,
    Facts,
    Rule,
    conflicted_teams,
    decide,
    reassignment,
    recusal_matter,
)
from shared.errors import FieldProblems
from shared.recusal import Duty, may_take
from shared.reference import load_organisation

ORGANISATION = load_organisation()
CITY = ORGANISATION.city_team_code
CITY_AREA = ORGANISATION.city_code
COUNTIES = tuple(ORGANISATION.counties)
TEAM_CODES = tuple(ORGANISATION.team_codes())
FACT_NAMES = tuple(FACT_LABELS)
CJK = re.compile(r"[\u4e00-\u9fff]")


def default_rules() -> list[Rule]:
    data = json.loads(DEFAULT_RULES_FILE.read_text(encoding="utf-8"))
    return [
        Rule(
            name=r["name"],
            priority=r["priority"],
            case_kinds=tuple(r["case_kinds"]),
            when=tuple(r["when"]),
            assign=r["assign"],
            review=r.get("review", False),
            description=r["description"],
            enabled=r.get("enabled", True),
        )
        for r in data["rules"]
    ]


DEFAULT_RULES = default_rules()


def known_unit_names() -> list[str]:
    names = [ORGANISATION.city_bureau, ORGANISATION.city_team_name, *ORGANISATION.city_units.values()]
    for county in ORGANISATION.counties.values():
        names += [county.bureau, county.inspection_team, *county.aliases, f"{county.bureau}城关派出所"]
    return names


UNIT_NAMES = known_unit_names()


def complaint(county: str, *facts: str, previous: Sequence[str] = (), unit: str = "") -> Facts:
    return Facts(
        case_kind="complaint",
        county_code=county,
        accused_unit=unit,
        facts=frozenset(facts),
        previous_team_codes=tuple(previous),
    )


def idle() -> dict[str, tuple[int, float]]:
    """Every team with no open work, last given work long ago, in code order."""
    return {code: (0, float(index)) for index, code in enumerate(TEAM_CODES)}


def allowed(facts: Facts, team_code: str, duty: Duty, *also_had: str) -> bool:
    matter = recusal_matter(facts).with_had_by(also_had)
    return may_take(matter=matter, team_code=team_code, duty=duty, organisation=ORGANISATION).allowed


def check_recusal(decision: Decision, facts: Facts) -> None:
    """The invariants every decision must hold, whatever the rules said: each team it names is one
    ``shared.recusal.may_take`` allows for what that team does."""
    conflicted = conflicted_teams(facts, ORGANISATION)
    assert decision.team_code in TEAM_CODES, decision
    assert decision.team_code not in conflicted, decision
    if not decision.needs_supervisor:
        # Only a placeholder while a supervisor decides may be a team that already had the matter.
        assert decision.team_code not in facts.previous_team_codes, decision
        assert allowed(facts, decision.team_code, Duty.HANDLE), decision
    for participant in decision.participants:
        assert participant not in conflicted, decision
        assert participant != decision.team_code, decision
        assert allowed(facts, participant, Duty.HANDLE), decision
    if decision.review_team_code is not None:
        assert decision.review_team_code != decision.team_code, decision
        assert decision.review_team_code not in conflicted, decision
        # The reviewer checks: never the accused bureau's team, the handling teams or an earlier one.
        handling = (decision.team_code, *decision.participants)
        assert allowed(facts, decision.review_team_code, Duty.CHECK, *handling), decision
    assert decision.reasons, decision


# --- the sample decisions -------------------------------------------------------------------------


def test_ordinary_county_complaint_goes_to_its_county_team() -> None:
    facts = complaint("411681", unit="项城市公安局花园派出所")
    decision = decide(facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=idle())
    assert decision.team_code == "411681"
    assert decision.kind == "county"
    assert decision.rule == "ordinary_county"
    assert not decision.key_clue and not decision.review_required
    check_recusal(decision, facts)


def test_accused_leadership_goes_to_the_city_team_and_says_which_rule() -> None:
    facts = complaint("411603", "accused_leadership", unit="周口市公安局淮阳分局")
    decision = decide(facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=idle())
    assert decision.team_code == CITY == "411600"
    assert decision.kind == "city"
    assert decision.rule == "key_clue_leadership_or_team"
    assert any("key_clue_leadership_or_team" in reason for reason in decision.reasons)
    assert any(FACT_LABELS["accused_leadership"] in reason for reason in decision.reasons)
    assert decision.key_clue and decision.review_required
    check_recusal(decision, facts)


@pytest.mark.parametrize("rules_name", ["default", "hostile"])
def test_accused_inspection_team_never_verifies_itself(rules_name: str) -> None:
    facts = complaint("411621", "accused_inspection_team", unit="扶沟县公安局督察大队")
    rules = DEFAULT_RULES
    if rules_name == "hostile":
        rules = [
            *DEFAULT_RULES,
            Rule("send_home", -1, ("complaint",), ("accused_inspection_team",), "county", False, "送回属地"),
        ]
    decision = decide(facts=facts, rules=rules, organisation=ORGANISATION, workload=idle())
    assert decision.team_code != "411621"
    assert "411621" not in decision.participants
    assert decision.review_team_code != "411621"
    check_recusal(decision, facts)


def test_serious_category_is_a_joint_check_led_by_the_city_with_the_county_taking_part() -> None:
    facts = complaint("411625", "serious_category", unit="郸城县公安局城关派出所")
    decision = decide(facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=idle())
    assert decision.kind == "joint"
    assert decision.team_code == CITY
    assert decision.participants == ["411625"]
    assert decision.rule == "key_clue_serious"
    assert decision.key_clue and decision.review_required
    assert decision.review_team_code not in (None, CITY, "411625")
    check_recusal(decision, facts)


def test_repeat_after_rejection_is_crossed_to_the_least_loaded_other_county() -> None:
    facts = complaint("411681", "repeat_after_rejection")
    # Everybody has 3 open tasks except 411627 (1) and the accused county itself (0, but it is home).
    load = {code: (3, 0.0) for code in TEAM_CODES} | {"411627": (1, 500.0), "411681": (0, 0.0)}
    decision = decide(facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=load)
    assert decision.kind == "cross"
    assert decision.rule == "key_clue_repeat_or_flag"
    assert decision.team_code == "411627"
    assert decision.key_clue and decision.review_required
    check_recusal(decision, facts)


def test_cross_check_ties_rotate_to_the_team_given_work_longest_ago() -> None:
    facts = complaint("411681", "repeat_after_rejection")
    # Equal open work everywhere: the team whose last assignment is oldest is next.
    load = {code: (2, 1000.0 + index) for index, code in enumerate(TEAM_CODES)} | {"411624": (2, 10.0)}
    first = decide(facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=load)
    assert first.team_code == "411624"
    # Once 411624 has been given the work (same count, newest time), the next oldest takes its turn.
    load["411624"] = (2, 9999.0)
    second = decide(facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=load)
    oldest_other = min((c for c in COUNTIES if c not in ("411681", "411624")), key=lambda c: load[c][1])
    assert second.team_code == oldest_other
    assert second.team_code not in ("411624", "411681")


def test_city_unit_goes_to_the_city_team() -> None:
    facts = complaint(CITY_AREA, "city_unit", unit="周口市公安局交通警察支队")
    decision = decide(facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=idle())
    assert decision.team_code == CITY
    assert decision.kind == "city"
    assert decision.rule == "city_unit"
    check_recusal(decision, facts)


def test_city_area_falls_back_to_the_city_team_even_without_the_city_unit_rule() -> None:
    facts = complaint(CITY_AREA)
    rules = [r for r in DEFAULT_RULES if r.name != "city_unit"]
    decision = decide(facts=facts, rules=rules, organisation=ORGANISATION, workload=idle())
    assert decision.team_code == CITY and decision.kind == "city"


def test_reopened_after_the_city_team_had_it_goes_to_another_county() -> None:
    facts = complaint("411681", "reopened", previous=[CITY])
    decision = decide(facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=idle())
    assert decision.team_code in COUNTIES
    assert decision.team_code != "411681"
    assert decision.kind == "cross"
    assert not decision.needs_supervisor
    check_recusal(decision, facts)


def test_reopened_leadership_matter_never_reaches_the_accused_county() -> None:
    facts = complaint("411603", "reopened", "accused_leadership", previous=[CITY])
    decision = decide(
        facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=idle() | {"411603": (0, -1.0)}
    )
    assert decision.team_code not in ("411603", CITY)
    check_recusal(decision, facts)


def test_reopened_after_the_county_goes_up_to_the_city() -> None:
    facts = complaint("411681", "reopened", previous=["411681"])
    decision = decide(facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=idle())
    assert decision.team_code == CITY
    assert decision.rule == "reopened_higher_level"
    assert decision.review_required
    check_recusal(decision, facts)


def test_suggestion_goes_to_the_lead_unit_with_co_units_taking_part() -> None:
    facts = Facts(
        case_kind="suggestion",
        county_code=CITY_AREA,
        lead_unit="周口市公安局",
        co_units=("郸城县公安局", "周口市财政局"),
    )
    decision = decide(facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=idle())
    assert decision.team_code == CITY
    assert decision.participants == ["411625"]
    assert decision.rule == "suggestion_lead_unit"
    assert not decision.key_clue
    assert any("周口市财政局" in reason for reason in decision.reasons)


def test_twice_returned_matter_goes_to_the_city_team_for_the_supervisor() -> None:
    # Returned by the county, then by the city team it was sent to: the city team's leaders decide.
    facts = complaint("411681", "returned_twice", previous=["411681", CITY])
    decision = decide(facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=idle())
    assert decision.rule == "returned_twice"
    assert decision.team_code == CITY
    # The city team had it before, which the invariant allows only when a supervisor is asked to decide.
    assert decision.needs_supervisor
    check_recusal(decision, facts)


def test_twice_returned_matter_that_never_reached_the_city_goes_there() -> None:
    facts = complaint("411681", "returned_twice", previous=["411681", "411624"])
    decision = decide(facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=idle())
    assert (decision.rule, decision.team_code, decision.kind) == ("returned_twice", CITY, "city")
    check_recusal(decision, facts)


@pytest.mark.parametrize(
    "facts",
    [
        complaint("411681"),
        complaint("411603", "accused_leadership"),
        complaint("411621", "accused_inspection_team"),
        complaint("411625", "serious_category"),
        complaint("411624", "injury_or_death"),
        complaint("411681", "repeat_after_rejection"),
        complaint(CITY_AREA, "city_unit"),
        complaint("411681", "reopened", previous=[CITY]),
        complaint("411681", "returned_twice", previous=["411681"]),
        Facts(case_kind="suggestion", county_code=CITY_AREA, lead_unit="郸城县公安局"),
    ],
    ids=lambda f: f"{f.case_kind}-{f.county_code}-{'+'.join(sorted(f.facts)) or 'plain'}",
)
def test_reasons_are_chinese_sentences(facts: Facts) -> None:
    decision = decide(facts=facts, rules=DEFAULT_RULES, organisation=ORGANISATION, workload=idle())
    assert decision.reasons
    for reason in decision.reasons:
        assert reason.strip(), decision.reasons
        assert CJK.search(reason), reason
        # A sentence, not a code: most of it is Chinese.
        assert len(CJK.findall(reason)) >= 4, reason


def test_no_enabled_rule_falls_back_to_the_home_county() -> None:
    facts = complaint("411622")
    rules = [
        Rule(r.name, r.priority, r.case_kinds, r.when, r.assign, r.review, r.description, enabled=False)
        for r in DEFAULT_RULES
    ]
    decision = decide(facts=facts, rules=rules, organisation=ORGANISATION, workload=idle())
    assert decision.team_code == "411622"
    assert decision.rule == "no_rule_matched"
    assert all(CJK.search(r) for r in decision.reasons)


def test_recusal_holds_even_when_every_other_team_has_had_the_matter() -> None:
    # 淮阳区 leadership accused; the city team and every other county already had the matter.
    previous = [c for c in TEAM_CODES if c != "411603"]
    facts = complaint("411603", "accused_leadership", "returned_twice", previous=previous)
    hostile = [Rule("send_home", -1, ("complaint",), ("accused_leadership",), "county", True, "送回属地")]
    decision = decide(facts=facts, rules=hostile, organisation=ORGANISATION, workload=idle())
    assert decision.needs_supervisor
    assert decision.team_code != "411603"
    check_recusal(decision, facts)


# --- the property ---------------------------------------------------------------------------------

rule_names = st.sampled_from([r.name for r in DEFAULT_RULES] + ["r1", "r2", "r3", "r4", "r5"])
facts_subset = st.frozensets(st.sampled_from(FACT_NAMES))


@st.composite
def random_rule(draw: st.DrawFn) -> Rule:
    return Rule(
        name=draw(rule_names),
        priority=draw(st.integers(min_value=-1000, max_value=1000)),
        case_kinds=tuple(
            draw(st.lists(st.sampled_from(["complaint", "suggestion"]), min_size=1, max_size=2, unique=True))
        ),
        when=tuple(draw(st.lists(st.sampled_from(FACT_NAMES), min_size=0, max_size=4, unique=True))),
        assign=draw(st.sampled_from(ASSIGN_KINDS)),
        review=draw(st.booleans()),
        description=draw(st.text(max_size=20)),
        enabled=draw(st.booleans()),
    )


@st.composite
def hostile_rule(draw: st.DrawFn) -> Rule:
    """A top-priority rule that tries to send a recusal case home, to the city, or back where it was."""
    return Rule(
        name=draw(st.sampled_from(["aaa_hostile", "zzz_hostile"])),
        priority=draw(st.integers(min_value=-10_000, max_value=0)),
        case_kinds=("complaint",),
        when=tuple(
            draw(
                st.lists(
                    st.sampled_from(
                        [
                            "accused_leadership",
                            "accused_inspection_team",
                            "always",
                            "reopened",
                            "returned_twice",
                        ]
                    ),
                    min_size=1,
                    max_size=3,
                    unique=True,
                )
            )
        ),
        assign=draw(st.sampled_from(ASSIGN_KINDS)),
        review=draw(st.booleans()),
        description="敌意规则",
        enabled=True,
    )


rule_sets = st.one_of(
    st.lists(random_rule(), max_size=8),
    st.builds(
        lambda extra, hostile: [*DEFAULT_RULES, *extra, *hostile],
        st.lists(random_rule(), max_size=3),
        st.lists(hostile_rule(), min_size=1, max_size=3),
    ),
    st.just(DEFAULT_RULES),
)
unit_names = st.one_of(st.sampled_from(UNIT_NAMES), st.text(max_size=30))


@st.composite
def random_facts(draw: st.DrawFn) -> Facts:
    previous = draw(st.one_of(st.sets(st.sampled_from(TEAM_CODES)), st.just(set(TEAM_CODES))))
    return Facts(
        case_kind=draw(st.sampled_from(["complaint", "suggestion"])),
        county_code=draw(st.sampled_from([CITY_AREA, *COUNTIES])),
        accused_unit=draw(unit_names),
        facts=draw(facts_subset),
        previous_team_codes=tuple(draw(st.permutations(sorted(previous)))),
        lead_unit=draw(st.one_of(st.none(), unit_names)),
        co_units=tuple(draw(st.lists(unit_names, max_size=4))),
    )


workloads = st.dictionaries(
    st.sampled_from(TEAM_CODES),
    st.tuples(st.integers(min_value=0, max_value=50), st.floats(min_value=0, max_value=2e9, allow_nan=False)),
)

# The case that breaks recusal today: every team but the conflicted one has already had the matter.
_ALL_BUT_HUAIYANG = tuple(c for c in TEAM_CODES if c != "411603")
_CORNERED = Facts(
    case_kind="complaint",
    county_code="411603",
    accused_unit="周口市公安局淮阳分局",
    facts=frozenset({"accused_leadership"}),
    previous_team_codes=_ALL_BUT_HUAIYANG,
    co_units=("淮阳分局", "郸城县公安局"),
)
_CORNERING_RULES = [
    Rule("send_home", -1, ("complaint",), ("accused_leadership",), "lead_unit", True, "送回属地")
]


def _assert_invariants(facts: Facts, rules: list[Rule], workload: Mapping[str, tuple[int, float]]) -> None:
    decision = decide(facts=facts, rules=rules, organisation=ORGANISATION, workload=workload)
    check_recusal(decision, facts)
    assert decision.kind in (*ASSIGN_KINDS, "city", "county")


@settings(max_examples=500, deadline=None)
@example(facts=_CORNERED, rules=_CORNERING_RULES, workload={})
@example(
    facts=_CORNERED,
    rules=[Rule("send_home", -1, ("complaint",), ("always",), "county", False, "送回属地")],
    workload={},
)
@given(facts=random_facts(), rules=rule_sets, workload=workloads)
def test_recusal_is_an_invariant_whatever_the_rules(
    facts: Facts, rules: list[Rule], workload: dict[str, tuple[int, float]]
) -> None:
    _assert_invariants(facts, rules, workload)


@st.composite
def facts_with_a_free_team(draw: st.DrawFn) -> Facts:
    """As ``random_facts``, but at least one team that is neither conflicted nor previously used remains."""
    facts = draw(random_facts())
    free = [
        c
        for c in TEAM_CODES
        if c not in conflicted_teams(facts, ORGANISATION) and c not in facts.previous_team_codes
    ]
    if free:
        return facts
    keep = draw(st.sampled_from([c for c in TEAM_CODES if c not in conflicted_teams(facts, ORGANISATION)]))
    return Facts(
        case_kind=facts.case_kind,
        county_code=facts.county_code,
        accused_unit=facts.accused_unit,
        facts=facts.facts,
        previous_team_codes=tuple(c for c in facts.previous_team_codes if c != keep),
        lead_unit=facts.lead_unit,
        co_units=facts.co_units,
    )


@settings(max_examples=500, deadline=None)
@given(facts=facts_with_a_free_team(), rules=rule_sets, workload=workloads)
def test_recusal_is_an_invariant_while_some_team_is_free(
    facts: Facts, rules: list[Rule], workload: dict[str, tuple[int, float]]
) -> None:
    # Passes today; the test above adds the cornered case (every non-conflicted team already used).
    _assert_invariants(facts, rules, workload)


# --- the other paths: a supervisor's reassignment and its fallback reviewer -----------------------


@settings(max_examples=500, deadline=None)
@example(
    # A complaint against the city's inspection team, moved to the team that was to review it: the
    # reviewer fell back to the (conflicted) city team before recusal was one function.
    facts=complaint(CITY_AREA, "accused_inspection_team", "city_unit", previous=["411602"]),
    team_code="411603",
    review_required=True,
    review_team_code="411603",
    workload={},
)
@example(
    facts=complaint("411603", "accused_leadership", previous=[CITY]),
    team_code="411624",
    review_required=True,
    review_team_code="411603",
    workload={},
)
@given(
    facts=random_facts(),
    team_code=st.one_of(st.sampled_from(TEAM_CODES), st.just("419999")),
    review_required=st.booleans(),
    review_team_code=st.one_of(st.none(), st.sampled_from(TEAM_CODES)),
    workload=workloads,
)
def test_reassignment_satisfies_recusal_or_is_refused(
    facts: Facts,
    team_code: str,
    review_required: bool,
    review_team_code: str | None,
    workload: dict[str, tuple[int, float]],
) -> None:
    try:
        decision = reassignment(
            facts=facts,
            team_code=team_code,
            reason="督察支队改派",
            review_required=review_required,
            review_team_code=review_team_code,
            key_clue=False,
            organisation=ORGANISATION,
            workload=workload,
        )
    except FieldProblems as refused:
        [(field, chinese, _)] = refused.problems
        assert field == "team_code" and CJK.search(chinese)
        assert team_code not in TEAM_CODES or not allowed(facts, team_code, Duty.HANDLE)
        return
    assert allowed(facts, team_code, Duty.HANDLE)
    assert decision.team_code == team_code and not decision.needs_supervisor
    check_recusal(decision, facts)
    if (
        review_required
        and review_team_code is not None
        and allowed(facts, review_team_code, Duty.CHECK, team_code)
    ):
        # A reviewer recusal still allows is kept: the reassignment changes only what it must.
        assert decision.review_team_code == review_team_code
