"""``shared.recusal.may_take`` as a table: every combination of the accused's level, the team's
relation to the accused bureau, what the complaint is about, what the team would do, and whether it
already had the matter; then suggestions, and the reasons a person reads.
"""

from __future__ import annotations

import pytest

from shared.recusal import Duty, Ground, Matter, allowed_teams, bureau_team, may_take
from shared.reference import load_organisation

ORGANISATION = load_organisation()
CITY_TEAM = ORGANISATION.city_team_code
CITY_AREA = ORGANISATION.city_code
ACCUSED_COUNTY = "411603"  # 淮阳区
OTHER_COUNTY = "411624"  # 沈丘县

OK: Ground | None = None
OWN = Ground.OWN_BUREAU
HAD = Ground.ALREADY_HAD

# The team, by its relation to the accused unit's bureau, for each level of the accused.
TEAMS = {
    ("county", "own"): ACCUSED_COUNTY,
    ("county", "other_county"): OTHER_COUNTY,
    ("county", "city"): CITY_TEAM,
    # A complaint against a city unit (or the city bureau's leadership): the city team is its own.
    ("city", "own"): CITY_TEAM,
    ("city", "other_county"): OTHER_COUNTY,
}
AREAS = {"county": ACCUSED_COUNTY, "city": CITY_AREA}

# (accused level, team, against the bureau's leadership or inspection team, duty, already had it, ground)
MATRIX = [
    ("county", "own", False, "handle", False, OK),
    ("county", "own", False, "handle", True, HAD),
    ("county", "own", False, "check", False, OWN),
    ("county", "own", False, "check", True, OWN),
    ("county", "own", True, "handle", False, OWN),
    ("county", "own", True, "handle", True, OWN),
    ("county", "own", True, "check", False, OWN),
    ("county", "own", True, "check", True, OWN),
    ("county", "other_county", False, "handle", False, OK),
    ("county", "other_county", False, "handle", True, HAD),
    ("county", "other_county", False, "check", False, OK),
    ("county", "other_county", False, "check", True, HAD),
    ("county", "other_county", True, "handle", False, OK),
    ("county", "other_county", True, "handle", True, HAD),
    ("county", "other_county", True, "check", False, OK),
    ("county", "other_county", True, "check", True, HAD),
    ("county", "city", False, "handle", False, OK),
    ("county", "city", False, "handle", True, HAD),
    ("county", "city", False, "check", False, OK),
    ("county", "city", False, "check", True, HAD),
    ("county", "city", True, "handle", False, OK),
    ("county", "city", True, "handle", True, HAD),
    ("county", "city", True, "check", False, OK),
    ("county", "city", True, "check", True, HAD),
    ("city", "own", False, "handle", False, OK),
    ("city", "own", False, "handle", True, HAD),
    ("city", "own", False, "check", False, OWN),
    ("city", "own", False, "check", True, OWN),
    ("city", "own", True, "handle", False, OWN),
    ("city", "own", True, "handle", True, OWN),
    ("city", "own", True, "check", False, OWN),
    ("city", "own", True, "check", True, OWN),
    ("city", "other_county", False, "handle", False, OK),
    ("city", "other_county", False, "handle", True, HAD),
    ("city", "other_county", False, "check", False, OK),
    ("city", "other_county", False, "check", True, HAD),
    ("city", "other_county", True, "handle", False, OK),
    ("city", "other_county", True, "handle", True, HAD),
    ("city", "other_county", True, "check", False, OK),
    ("city", "other_county", True, "check", True, HAD),
]


@pytest.mark.parametrize(
    ("level", "team", "against_own_people", "duty", "had", "ground"),
    MATRIX,
    ids=[
        f"{r[0]}-{r[1]}-{'own_people' if r[2] else 'ordinary'}-{r[3]}-{'had' if r[4] else 'new'}"
        for r in MATRIX
    ],
)
def test_recusal_matrix(
    level: str, team: str, against_own_people: bool, duty: str, had: bool, ground: Ground | None
) -> None:
    team_code = TEAMS[(level, team)]
    matter = Matter(
        case_kind="complaint",
        accused_area=AREAS[level],
        against_own_people=against_own_people,
        had_by=frozenset({team_code}) if had else frozenset({"411681"}),
    )
    verdict = may_take(matter=matter, team_code=team_code, duty=Duty(duty), organisation=ORGANISATION)
    assert verdict.allowed is (ground is None), verdict
    assert verdict.ground == ground, verdict
    if ground is not None:
        assert verdict.chinese.startswith("回避：") and ORGANISATION.team_name(team_code) in verdict.chinese
        assert verdict.english.startswith("recusal:")


def test_the_matrix_covers_every_combination() -> None:
    keys = {r[:5] for r in MATRIX}
    expected = {
        (level, team, against, duty, had)
        for (level, team) in TEAMS
        for against in (False, True)
        for duty in ("handle", "check")
        for had in (False, True)
    }
    assert keys == expected and len(MATRIX) == len(expected)


@pytest.mark.parametrize("duty", list(Duty))
@pytest.mark.parametrize("had", [False, True])
def test_a_suggestion_has_no_accused_only_teams_that_had_it(duty: Duty, had: bool) -> None:
    matter = Matter(
        case_kind="suggestion", accused_area=CITY_AREA, had_by=frozenset({CITY_TEAM} if had else ())
    )
    verdict = may_take(matter=matter, team_code=CITY_TEAM, duty=duty, organisation=ORGANISATION)
    assert verdict.allowed is not had
    assert verdict.ground == (HAD if had else None)


def test_bureau_team_of_an_area() -> None:
    assert bureau_team(CITY_AREA, ORGANISATION) == CITY_TEAM
    assert bureau_team(ACCUSED_COUNTY, ORGANISATION) == ACCUSED_COUNTY
    assert bureau_team("419999", ORGANISATION) is None
    assert bureau_team(None, ORGANISATION) is None


def test_an_unknown_accused_area_refuses_only_teams_that_had_the_matter() -> None:
    matter = Matter(
        case_kind="complaint", accused_area="419999", against_own_people=True, had_by=frozenset({CITY_TEAM})
    )
    assert allowed_teams(
        matter=matter, candidates=ORGANISATION.team_codes(), duty=Duty.CHECK, organisation=ORGANISATION
    ) == [c for c in ORGANISATION.team_codes() if c != CITY_TEAM]
