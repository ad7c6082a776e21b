"""Routing's pages for supervisors: the routing rules, the organisation, and a matter's assignments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from services.routing.assignments import find_case
from services.routing.context import RoutingContext
from services.routing.models import AssignKind, Fact, RoutedCase, UnitKind
from services.routing.organisation import organisation_from_db
from services.routing.rules import FACT_LABELS
from shared.app import get_session
from shared.auth import Role
from shared.web import page_user
from shared.web.pages import ServicePages

Session = Annotated[AsyncSession, Depends(get_session)]
SUPERVISOR = page_user(Role.SUPERVISOR)

ASSIGN_LABELS: dict[str, str] = {
    AssignKind.COUNTY: "属地核查（被投诉单位所在县级督察大队）",
    AssignKind.CITY: "市局督察支队直查",
    AssignKind.JOINT: "市县联合核查（市局牵头）",
    AssignKind.CROSS: "交叉核查（其他县级督察大队）",
    AssignKind.LEAD_UNIT: "主办单位督察部门承办",
}
UNIT_KIND_LABELS: dict[str, str] = {
    UnitKind.BUREAU: "公安局（分局）",
    UnitKind.BUREAU_ALIAS: "公安局别称",
    UnitKind.CITY_UNIT: "市局直属单位",
    UnitKind.INSPECTION_TEAM: "督察部门",
    UnitKind.STATION: "派出所",
    UnitKind.BRIGADE: "大队",
    UnitKind.OTHER: "其他",
}


async def _reference(request: Request, session: Session) -> dict[str, Any]:
    ctx: RoutingContext = request.app.state.routing
    organisation = await organisation_from_db(session=session, ctx=ctx)
    return {
        "facts": FACT_LABELS,
        "assign": ASSIGN_LABELS,
        "unit_kinds": UNIT_KIND_LABELS,
        "teams": [{"code": code, "name": organisation.team_name(code)} for code in organisation.team_codes()],
        "areas": [{"code": organisation.city_code, "name": organisation.city_name}]
        + [{"code": c.code, "name": c.name} for c in organisation.counties.values()],
    }


pages = ServicePages(Path(__file__).resolve().parent / "templates", reference=_reference)
web_router = pages.router


async def _case(case_id: str, session: Session) -> RoutedCase | None:
    return await find_case(session=session, case_id=case_id)


Case = Annotated[RoutedCase | None, Depends(_case)]


def _case_title(case: Case) -> str:
    return f"{case.tracking_code} 分派记录" if case else "分派记录"


def _case_data(case_id: str, case: Case) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "case": (
            {
                "tracking_code": case.tracking_code,
                "case_kind": case.case_kind,
                "accused_unit": case.accused_unit,
                "lead_unit": case.lead_unit,
                "round": case.round,
                "return_count": case.return_count,
                "open": case.open,
                "facts": [FACT_LABELS.get(f, f) for f in case.facts if f != Fact.ALWAYS],
            }
            if case
            else None
        ),
    }


pages.add_root(landing={Role.SUPERVISOR: "/rules"})
pages.add("/rules", "rules.html", title="分派规则", user=SUPERVISOR)
pages.add("/org", "org.html", title="组织机构", user=SUPERVISOR)
pages.add("/cases/{case_id}", "case.html", title=_case_title, user=SUPERVISOR, data=_case_data)
