"""Verification's pages: the inspectors' task board and task page, the cross-check, and the
supervisors' ledger, approvals and dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request

from services.verification.context import VerificationContext
from services.verification.ladder import STEP_LABELS, STEPS
from services.verification.schemas import ACCOUNTABILITY, OUTCOME_LABELS
from shared.auth import Principal, Role
from shared.deadlines import DEFAULT_DEADLINES_FILE, load_deadlines
from shared.reference import DEFAULT_CATEGORIES_FILE, load_categories
from shared.web import page_user
from shared.web.pages import ServicePages

TASK_USER = page_user(Role.INSPECTOR, Role.SUPERVISOR)
INSPECTOR = page_user(Role.INSPECTOR)
SUPERVISOR = page_user(Role.SUPERVISOR)
# The ledger and the dashboard: city supervisors, and a county's leader (their county only).
SUPERVISOR_OR_LEADER = page_user(Role.SUPERVISOR, Role.LEADER)

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
        + [
            {"code": c.code, "name": c.name, "population": c.population}
            for c in organisation.counties.values()
        ],
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


pages = ServicePages(Path(__file__).resolve().parent / "templates", reference=_reference)
web_router = pages.router


def _task_data(task_id: str) -> dict[str, Any]:
    return {"task_id": task_id}


def _reader_scope(principal: Annotated[Principal, Depends(SUPERVISOR_OR_LEADER)]) -> dict[str, Any]:
    """A leader's pages show their county only: the page fixes the filter, the API enforces it."""
    leader = principal.role == Role.LEADER
    return {"leader": leader, "county": principal.county_code if leader else None}


def _board_title(request: Request, principal: Annotated[Principal, Depends(TASK_USER)]) -> str:
    team = _context(request).organisation.team_name(principal.team_code) if principal.team_code else None
    return f"{team}核查任务" if team else "核查任务总览"


pages.add_root(landing={Role.INSPECTOR: "/tasks", Role.SUPERVISOR: "/dashboard", Role.LEADER: "/dashboard"})
pages.add("/tasks", "tasks.html", title=_board_title, user=TASK_USER)
pages.add("/tasks/{task_id}", "task.html", title="核查任务", user=TASK_USER, data=_task_data)
pages.add("/tasks/{task_id}/review", "review.html", title="复核", user=INSPECTOR, data=_task_data)
pages.add(
    "/ledger", "ledger.html", title="长期未办结事项督办台账", user=SUPERVISOR_OR_LEADER, data=_reader_scope
)
pages.add("/approvals", "approvals.html", title="待审批事项", user=SUPERVISOR)
pages.add(
    "/dashboard", "dashboard.html", title="督察工作统计分析", user=SUPERVISOR_OR_LEADER, data=_reader_scope
)
pages.add("/reports", "reports.html", title="督察工作通报", user=SUPERVISOR_OR_LEADER, data=_reader_scope)
pages.add("/audit", "audit.html", title="审计记录", user=SUPERVISOR)
