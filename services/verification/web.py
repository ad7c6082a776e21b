"""Verification's pages: the inspectors' task board and task page, the cross-check, and the
supervisors' ledger, approvals and dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from services.verification.context import VerificationContext
from services.verification.ladder import STEP_LABELS, STEPS
from services.verification.schemas import ACCOUNTABILITY, OUTCOME_LABELS
from shared.auth import Principal, Role
from shared.deadlines import DEFAULT_DEADLINES_FILE, load_deadlines
from shared.reference import DEFAULT_CATEGORIES_FILE, load_categories
from shared.web import home_url, page_templates, page_user, principal_from_cookie, render

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
templates = page_templates(TEMPLATES_DIR)
web_router = APIRouter(include_in_schema=False)

TaskPage = Annotated[Principal, Depends(page_user(Role.INSPECTOR, Role.SUPERVISOR))]
InspectorPage = Annotated[Principal, Depends(page_user(Role.INSPECTOR))]
SupervisorPage = Annotated[Principal, Depends(page_user(Role.SUPERVISOR))]

EVIDENCE_KIND_LABELS = {
    "recording": "执法记录仪/录音录像",
    "document": "书证材料",
    "interview": "询问笔录",
    "photo": "照片",
    "other": "其他",
}
ASSIGNMENT_KIND_LABELS = {
    "county": "属地核查",
    "city": "市局直查",
    "joint": "市县联合核查",
    "cross": "交叉核查",
    "lead_unit": "主办",
}
CLASSIFICATION_LABELS = {
    "A": "A类：已经解决或基本解决",
    "B": "B类：正在解决或列入计划解决",
    "C": "C类：因条件限制需以后解决",
    "D": "D类：因政策等原因无法解决，留作参考",
}


def _context(request: Request) -> VerificationContext:
    ctx: VerificationContext = request.app.state.verification
    return ctx


def _reference(request: Request) -> dict[str, Any]:
    ctx = _context(request)
    settings = request.app.state.settings
    organisation = ctx.organisation
    deadlines = load_deadlines(settings.deadlines_file or DEFAULT_DEADLINES_FILE)
    categories = load_categories(settings.categories_file or DEFAULT_CATEGORIES_FILE)
    return {
        "teams": [{"code": code, "name": organisation.team_name(code)} for code in organisation.team_codes()],
        "counties": [{"code": organisation.city_code, "name": "市局直属"}]
        + [{"code": c.code, "name": c.name} for c in organisation.counties.values()],
        "categories": categories.names(),
        "clocks": [{"name": c.name, "label": c.label} for c in deadlines.clocks]
        + [{"name": name, "label": later[0]} for name, later in deadlines.later.items()],
        "steps": [{"name": s, "label": STEP_LABELS[s]} for s in STEPS],
        "outcomes": OUTCOME_LABELS,
        "accountability": list(ACCOUNTABILITY),
        "evidence_kinds": EVIDENCE_KIND_LABELS,
        "assignment_kinds": ASSIGNMENT_KIND_LABELS,
        "classifications": CLASSIFICATION_LABELS,
        "extension_max_days": ctx.extension_max_days,
        "ledger_min_age_days": ctx.ledger_min_age_days,
    }


@web_router.get("/")
async def root(request: Request) -> Response:
    principal = principal_from_cookie(request)
    settings = request.app.state.settings
    if principal is None:
        return RedirectResponse(f"{settings.intake_url.rstrip('/')}/login", status_code=303)
    if principal.role == Role.INSPECTOR:
        return RedirectResponse("/tasks", status_code=303)
    if principal.role == Role.SUPERVISOR:
        return RedirectResponse("/dashboard", status_code=303)
    return RedirectResponse(home_url(settings, principal.role), status_code=303)


@web_router.get("/tasks")
async def task_board(request: Request, principal: TaskPage) -> Response:
    ctx = _context(request)
    team = ctx.organisation.team_name(principal.team_code) if principal.team_code else None
    return render(
        templates,
        request,
        "tasks.html",
        principal,
        title=f"{team}核查任务" if team else "核查任务总览",
        page={"reference": _reference(request)},
    )


@web_router.get("/tasks/{task_id}")
async def task_page(task_id: str, request: Request, principal: TaskPage) -> Response:
    return render(
        templates,
        request,
        "task.html",
        principal,
        title="核查任务",
        page={"reference": _reference(request), "task_id": task_id},
    )


@web_router.get("/tasks/{task_id}/review")
async def review_page(task_id: str, request: Request, principal: InspectorPage) -> Response:
    return render(
        templates,
        request,
        "review.html",
        principal,
        title="复核",
        page={"reference": _reference(request), "task_id": task_id},
    )


@web_router.get("/ledger")
async def ledger_page(request: Request, principal: SupervisorPage) -> Response:
    return render(
        templates,
        request,
        "ledger.html",
        principal,
        title="长期未办结事项督办台账",
        page={"reference": _reference(request)},
    )


@web_router.get("/approvals")
async def approvals_page(request: Request, principal: SupervisorPage) -> Response:
    return render(
        templates,
        request,
        "approvals.html",
        principal,
        title="待审批事项",
        page={"reference": _reference(request)},
    )


@web_router.get("/dashboard")
async def dashboard_page(request: Request, principal: SupervisorPage) -> Response:
    return render(
        templates,
        request,
        "dashboard.html",
        principal,
        title="督察工作统计分析",
        page={"reference": _reference(request)},
    )
