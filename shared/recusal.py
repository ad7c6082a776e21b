"""Recusal (回避): whether a team may take part in a matter, decided in one place.

Every path that picks a team asks ``may_take``: routing's rules and their fallbacks, a supervisor's
reassignment, a reopen, the cross-check reviewer (picked automatically or named by a supervisor),
the co-handling and joint-check participants, and the team that certifies a rectification.  The
answer carries its reason in both interface languages, so a refusal can name the field it concerns.

Two grounds, from the domain brief:

- **The accused bureau's own team.**  Jurisdiction follows the accused unit (属地管理), so an ordinary
  complaint about a county unit is *handled* by that county's team.  But no team verifies a complaint
  against its own bureau's leadership or its own members, and no bureau's team *checks* (reviews,
  certifies a rectification of) a matter about its own bureau: a county's police are not cleared
  only by their own county (市县联合检查、交叉互查).
- **A team that already had the matter** (an earlier assignment, a return, the verifying team or a
  participant) neither takes it again after a return or reopen nor checks it.

Only complaints have an accused; a suggestion is refused only to the teams that already had it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from shared.reference import Organisation

COMPLAINT = "complaint"


class Duty(StrEnum):
    """What the team would do with the matter."""

    HANDLE = "handle"  # verify it: the lead team, a joint-check participant or a co-handling unit
    CHECK = "check"  # judge another team's work on it: the cross-check (复核), a rectification check


class Ground(StrEnum):
    OWN_BUREAU = "own_bureau"
    ALREADY_HAD = "already_had"


@dataclass(frozen=True)
class Matter:
    """What recusal needs to know about a matter.

    ``accused_area`` is the area code of the accused unit's bureau (a county's code, or the city's);
    ``against_own_people`` says the complaint is against that bureau's leadership or its inspection
    team.  ``had_by`` are the teams that already had the matter.
    """

    case_kind: str
    accused_area: str | None = None
    against_own_people: bool = False
    had_by: frozenset[str] = frozenset()

    def with_had_by(self, teams: Collection[str]) -> Matter:
        return Matter(
            case_kind=self.case_kind,
            accused_area=self.accused_area,
            against_own_people=self.against_own_people,
            had_by=self.had_by | frozenset(teams),
        )


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    ground: Ground | None = None
    chinese: str = ""
    english: str = ""


ALLOWED = Verdict(allowed=True)


def bureau_team(area_code: str | None, organisation: Organisation) -> str | None:
    """The inspection team of the bureau of an area: the city team for the city, else the county's."""
    if not area_code:
        return None
    if area_code == organisation.city_code:
        return organisation.city_team_code
    return area_code if area_code in organisation.counties else None


def may_take(*, matter: Matter, team_code: str, duty: Duty, organisation: Organisation) -> Verdict:
    """Whether ``team_code`` may take the matter for ``duty``, and if not, why."""
    own = bureau_team(matter.accused_area, organisation) if matter.case_kind == COMPLAINT else None
    if team_code == own and (duty == Duty.CHECK or matter.against_own_people):
        return _own_bureau_refusal(team_code, duty, organisation)
    if team_code in matter.had_by:
        name = organisation.team_name(team_code)
        if duty == Duty.CHECK:
            return Verdict(
                allowed=False,
                ground=Ground.ALREADY_HAD,
                chinese=f"回避：{name}已办理或参与办理本件，不能复核或检查本件",
                english="recusal: a team that had the matter does not check it",
            )
        return Verdict(
            allowed=False,
            ground=Ground.ALREADY_HAD,
            chinese=f"回避：{name}已办理过本件，不再由其办理",
            english="recusal: a team that already had the matter does not take it again",
        )
    return ALLOWED


def _own_bureau_refusal(team_code: str, duty: Duty, organisation: Organisation) -> Verdict:
    name = organisation.team_name(team_code)
    if duty == Duty.CHECK:
        return Verdict(
            allowed=False,
            ground=Ground.OWN_BUREAU,
            chinese=f"回避：{name}属被投诉单位本身，不能复核或检查本单位的事项",
            english="recusal: the accused bureau's own team does not check the matter",
        )
    return Verdict(
        allowed=False,
        ground=Ground.OWN_BUREAU,
        chinese=f"回避：{name}不得核查针对本单位领导或本队成员的投诉",
        english="recusal: this team may not verify a complaint against its own leadership or members",
    )


def allowed_teams(
    *, matter: Matter, candidates: Collection[str], duty: Duty, organisation: Organisation
) -> list[str]:
    """The candidates, in their order, that may take the matter."""
    return [
        code
        for code in candidates
        if may_take(matter=matter, team_code=code, duty=duty, organisation=organisation).allowed
    ]


def conflicted(*, matter: Matter, organisation: Organisation) -> set[str]:
    """Teams refused on the ground of their own bureau whatever else happens (for handling)."""
    own = bureau_team(matter.accused_area, organisation) if matter.case_kind == COMPLAINT else None
    return {own} if own is not None and matter.against_own_people else set()
