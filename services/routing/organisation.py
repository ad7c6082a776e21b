"""The organisation routing assigns to: teams and units, seeded once, edited by supervisors, cached."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.routing.context import RoutingContext
from services.routing.models import Team, TeamLevel, Unit, UnitKind
from shared.audit import audit
from shared.auth import Principal
from shared.db import insert_missing
from shared.reference import County, Organisation


async def seed_organisation(*, session: AsyncSession, organisation: Organisation) -> None:
    """The bureau's teams and units on first start; a database that has teams is left as it is.

    Rows already stored are skipped rather than failing the start-up: instances starting at once
    seed one after another (the caller serialises them), and the inserts are idempotent anyway.
    """
    if (await session.exec(select(func.count()).select_from(Team))).one() != 0:
        return
    teams = [
        Team(
            code=organisation.city_team_code,
            name=organisation.city_team_name,
            level=TeamLevel.CITY,
            area_code=organisation.city_code,
            bureau=organisation.city_bureau,
        )
    ]
    units = [
        Unit(
            code=organisation.city_code,
            name=organisation.city_bureau,
            area_code=organisation.city_code,
            kind=UnitKind.BUREAU,
        ),
        Unit(
            code=f"{organisation.city_code}-DC",
            name=organisation.city_team_name,
            area_code=organisation.city_code,
            kind=UnitKind.INSPECTION_TEAM,
        ),
    ]
    units += [
        Unit(code=code, name=name, area_code=organisation.city_code, kind=UnitKind.CITY_UNIT)
        for code, name in organisation.city_units.items()
    ]
    for county in organisation.counties.values():
        teams.append(_county_team(county))
        units += _county_units(county)
    await insert_missing(session, Team, teams)
    await insert_missing(session, Unit, units)


def _county_team(county: County) -> Team:
    return Team(
        code=county.code,
        name=county.inspection_team,
        level=TeamLevel.COUNTY,
        area_code=county.code,
        bureau=county.bureau,
    )


def _county_units(county: County) -> list[Unit]:
    units = [
        Unit(code=county.code, name=county.bureau, area_code=county.code, kind=UnitKind.BUREAU),
        Unit(
            code=f"{county.code}-DC",
            name=county.inspection_team,
            area_code=county.code,
            kind=UnitKind.INSPECTION_TEAM,
        ),
    ]
    units += [
        Unit(code=f"{county.code}-A{index}", name=alias, area_code=county.code, kind=UnitKind.BUREAU_ALIAS)
        for index, alias in enumerate(county.aliases)
    ]
    return units


async def organisation_from_db(*, session: AsyncSession, ctx: RoutingContext) -> Organisation:
    cached = ctx.cached_organisation()
    if cached is not None:
        return cached
    teams = list(await session.exec(select(Team).where(col(Team.active))))
    units = list(await session.exec(select(Unit).where(col(Unit.active))))
    city = next((t for t in teams if t.level == TeamLevel.CITY), None)
    seed = ctx.seed_organisation
    counties: dict[str, County] = {}
    for team in teams:
        if team.level != TeamLevel.COUNTY:
            continue
        aliases = tuple(
            u.name for u in units if u.area_code == team.area_code and u.kind in (UnitKind.BUREAU_ALIAS,)
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
        city_units={u.code: u.name for u in units if u.kind == UnitKind.CITY_UNIT},
        counties=counties,
        unit_kinds=seed.unit_kinds,
    )
    ctx.remember_organisation(organisation)
    return organisation


async def all_teams(*, session: AsyncSession) -> list[Team]:
    return list(await session.exec(select(Team).order_by(col(Team.code))))


async def active_units(*, session: AsyncSession, name_part: str | None = None) -> list[Unit]:
    query = select(Unit).where(col(Unit.active)).order_by(col(Unit.code))
    if name_part:
        query = query.where(col(Unit.name).contains(name_part))
    return list(await session.exec(query))


async def put_team(*, session: AsyncSession, code: str, values: dict[str, Any], actor: Principal) -> Team:
    team = await session.get(Team, code)
    if team is None:
        team = Team(code=code, **values)
    else:
        for key, value in values.items():
            setattr(team, key, value)
    session.add(team)
    await _audit_change(session=session, actor=actor, what=f"team:{code}", after=values)
    return team


async def put_unit(*, session: AsyncSession, code: str, values: dict[str, Any], actor: Principal) -> Unit:
    unit = await session.get(Unit, code)
    if unit is None:
        unit = Unit(code=code, **values)
    else:
        for key, value in values.items():
            setattr(unit, key, value)
    session.add(unit)
    await _audit_change(session=session, actor=actor, what=f"unit:{code}", after=values)
    return unit


async def _audit_change(*, session: AsyncSession, actor: Principal, what: str, after: dict[str, Any]) -> None:
    await audit(
        session, case_id=f"org:{what}", action="organisation_changed", actor=actor.username, detail=after
    )
