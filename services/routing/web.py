"""Routing's pages for supervisors: the routing rules, the organisation, and a matter's assignments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel.ext.asyncio.session import AsyncSession

from services.routing.assignments import find_case
from services.routing.context import RoutingContext
from services.routing.models import AssignKind, Fact, UnitKind
from services.routing.organisation import organisation_from_db
from services.routing.rules import FACT_LABELS
from shared.app import get_session
from shared.auth import Principal, Role
from shared.web import home_url, page_templates, page_user, principal_from_cookie, render

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
templates = page_templates(TEMPLATES_DIR)
web_router = APIRouter(include_in_schema=False)

Session = Annotated[AsyncSession, Depends(get_session)]
SupervisorPage = Annotated[Principal, Depends(page_user(Role.SUPERVISOR))]

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


async def _reference(request: Request, session: AsyncSession) -> dict[str, Any]:
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


@web_router.get("/")
async def root(request: Request) -> Response:
    principal = principal_from_cookie(request)
    settings = request.app.state.settings
    if principal is None:
        return RedirectResponse(f"{settings.intake_url.rstrip('/')}/login", status_code=303)
    if principal.role == Role.SUPERVISOR:
        return RedirectResponse("/rules", status_code=303)
    return RedirectResponse(home_url(settings, principal.role), status_code=303)


@web_router.get("/rules")
async def rules_page(request: Request, session: Session, principal: SupervisorPage) -> Response:
    return render(
        templates,
        request,
        "rules.html",
        principal,
        title="分派规则",
        page={"reference": await _reference(request, session)},
    )


@web_router.get("/org")
async def organisation_page(request: Request, session: Session, principal: SupervisorPage) -> Response:
    return render(
        templates,
        request,
        "org.html",
        principal,
        title="组织机构",
        page={"reference": await _reference(request, session)},
    )


@web_router.get("/cases/{case_id}")
async def case_page(case_id: str, request: Request, session: Session, principal: SupervisorPage) -> Response:
    case = await find_case(session=session, case_id=case_id)
    return render(
        templates,
        request,
        "case.html",
        principal,
        title=f"{case.tracking_code} 分派记录" if case else "分派记录",
        page={
            "reference": await _reference(request, session),
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
        },
    )
