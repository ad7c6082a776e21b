"""What routing knows about a matter: its facts, read from intake's events and kept for later decisions."""

from __future__ import annotations

from services.routing.models import Assignment, Fact, RoutedCase
from services.routing.rules import Facts
from shared.db import new_row
from shared.events import ComplaintReceived, SuggestionReceived
from shared.states import CaseKind

# The channel intake records for a complaint transferred from the petitions office (信访).
PETITION_CHANNEL = "transfer_xinfang"
# The deadlines book's trait for a suggestion the deputy marked complex; not a routing fact.
COMPLEX_TRAIT = "complex"
# What a routed case takes of the event that brought it, under the same names.
CASE_FIELDS = {"case_id", "tracking_code", "received_at"}


def complaint_facts(event: ComplaintReceived, *, city_code: str) -> list[str]:
    facts: list[str] = []
    if any(o.leadership for o in event.officers):
        facts.append(Fact.ACCUSED_LEADERSHIP)
    if event.accused_is_inspection_team:
        facts.append(Fact.ACCUSED_INSPECTION_TEAM)
    if any(a.serious for a in event.allegations):
        facts.append(Fact.SERIOUS_CATEGORY)
    if event.injury_or_death:
        facts.append(Fact.INJURY_OR_DEATH)
    if event.repeat_after_rejection:
        facts.append(Fact.REPEAT_AFTER_REJECTION)
    if event.supervisor_flag:
        facts.append(Fact.SUPERVISOR_FLAG)
    if event.county_code == city_code:
        facts.append(Fact.CITY_UNIT)
    if event.channel == PETITION_CHANNEL:
        facts.append(Fact.PETITION)
    return facts


def complaint_case(*, event: ComplaintReceived, city_code: str) -> RoutedCase:
    return new_row(
        RoutedCase,
        case_kind=CaseKind.COMPLAINT,
        **event.model_dump(include={*CASE_FIELDS, "county_code", "accused_unit"}),
        facts=complaint_facts(event, city_code=city_code),
        named_complainant=not event.anonymous,
    )


def suggestion_case(*, event: SuggestionReceived, city_code: str) -> RoutedCase:
    return new_row(
        RoutedCase,
        case_kind=CaseKind.SUGGESTION,
        **event.model_dump(include={*CASE_FIELDS, "lead_unit", "co_units", "complex_matter"}),
        county_code=city_code,
        accused_unit="",
        facts=[Fact.SUGGESTION],
    )


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


def deadline_traits(case: RoutedCase) -> set[str]:
    traits = set(case.facts)
    if case.complex_matter:
        traits.add(COMPLEX_TRAIT)
    return traits


def add_fact(case: RoutedCase, fact: Fact) -> None:
    # A new list, not append: the JSON column sees a change only when the attribute is set.
    if fact not in case.facts:
        case.facts = [*case.facts, fact]


def remember_team(case: RoutedCase, team_code: str) -> None:
    """The team had the matter: it does not get it again (returns, reopens, reassignment)."""
    if team_code not in case.previous_team_codes:
        case.previous_team_codes = [*case.previous_team_codes, team_code]


def remember_teams_of(case: RoutedCase, assignment: Assignment) -> None:
    """The lead team and every participant of a joint check had the matter.

    A participant worked the matter as much as the lead did, so recusal must not hand it the
    matter alone afterwards (the accused county taking part in a joint check was the case).
    """
    for team_code in (assignment.team_code, *assignment.participants):
        remember_team(case, team_code)
