"""Intake's pages: the one sign-in of all four services, and the operator's desk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.accounts import DEMO_PASSWORD
from services.intake.auth_router import (
    SESSION_COOKIE,
    clear_session_cookies,
    set_session_cookies,
    sign_in_or_refuse,
    sign_out_request,
)
from services.intake.context import IntakeContext
from services.intake.models import User
from services.intake.open311_keys import list_keys
from services.intake.open311_router import key_read
from services.intake.schemas import CHANNEL_LABELS
from services.intake.sessions import REFRESH_PATH
from shared.app import get_session
from shared.auth import Principal, Role
from shared.web import (
    ROLE_LABELS,
    home_url,
    page_user,
    principal_from_cookie,
    render,
    safe_next,
    service_urls,
)
from shared.web.pages import ServicePages

Session = Annotated[AsyncSession, Depends(get_session)]
OPERATOR = page_user(Role.OPERATOR)
SEARCHER = page_user(Role.OPERATOR, Role.SUPERVISOR)
SUPERVISOR = page_user(Role.SUPERVISOR)

DEMO_USERS = (
    ("operator1", "接线员"),
    ("inspector-411681", "项城市公安局督察大队"),
    ("inspector-411600", "市局督察支队民警"),
    ("supervisor1", "督察支队领导"),
    ("deputy1", "马刚代表"),
)


def _context(request: Request) -> IntakeContext:
    ctx: IntakeContext = request.app.state.intake
    return ctx


def _reference(request: Request) -> dict[str, Any]:
    """What the operator's forms choose from: counties, units known from the seed, categories."""
    ctx = _context(request)
    organisation = ctx.organisation
    counties = [{"code": organisation.city_code, "name": f"{organisation.city_name}（市局直属）"}]
    counties += [{"code": c.code, "name": c.name} for c in organisation.counties.values()]
    units = [{"name": organisation.city_bureau, "area_code": organisation.city_code}]
    units += [
        {"name": name, "area_code": organisation.city_code} for name in organisation.city_units.values()
    ]
    units.append({"name": organisation.city_team_name, "area_code": organisation.city_code})
    aliases = []
    for county in organisation.counties.values():
        units.append({"name": county.bureau, "area_code": county.code})
        units.append({"name": county.inspection_team, "area_code": county.code})
        aliases.append({"code": county.code, "names": [county.bureau, county.name, *county.aliases]})
    return {
        "counties": counties,
        "units": units,
        "county_names": aliases,
        "unit_kinds": list(organisation.unit_kinds),
        "categories": [{"name": c.name, "serious": c.serious} for c in ctx.categories.categories],
        "channels": CHANNEL_LABELS,
        "account_max_chars": ctx.account_max_chars,
    }


pages = ServicePages(Path(__file__).resolve().parent / "templates", reference=_reference)
web_router = pages.router


def _login_page(
    request: Request,
    *,
    next_url: str | None,
    username: str = "",
    error: str | None = None,
    status_code: int = 200,
    try_refresh: bool = False,
) -> Response:
    settings = request.app.state.settings
    return render(
        pages.templates,
        request,
        "login.html",
        None,
        title="登录",
        status_code=status_code,
        next_url=next_url or "",
        username=username,
        error=error,
        try_refresh=try_refresh,
        refresh_url=REFRESH_PATH,
        demo_users=DEMO_USERS if settings.demo_mode else (),
        demo_password=DEMO_PASSWORD if settings.demo_mode else None,
        query_url=service_urls(settings)["feedback"] + "/query",
    )


@web_router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    settings = request.app.state.settings
    target = safe_next(settings, next)
    principal = principal_from_cookie(request)
    if principal is not None and target is None:
        return RedirectResponse(home_url(settings, principal.role), status_code=303)
    # A sign-in whose access token expired: the page renews it with the refresh cookie, which
    # only the refresh API receives, and goes on to ``next``.
    signed_in_before = principal is None and bool(request.cookies.get(SESSION_COOKIE))
    return _login_page(request, next_url=target, try_refresh=signed_in_before)


@web_router.post("/login")
async def login(
    request: Request,
    session: Session,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    settings = request.app.state.settings
    target = safe_next(settings, next)
    name = username.strip()
    if not name or not password:
        return _login_page(request, next_url=target, username=name, error="请输入用户名和密码")
    try:
        signed = await sign_in_or_refuse(request, session, name, password, with_refresh=True)
    except HTTPException as refused:
        # The form again with the message: 200 for a wrong password (not an error page), 429 with
        # Retry-After while the brake is on.
        wrong = refused.status_code == 401
        page = _login_page(
            request,
            next_url=target,
            username=name,
            error=str(refused.detail),
            status_code=200 if wrong else refused.status_code,
        )
        if refused.status_code == 429 and refused.headers:
            page.headers["Retry-After"] = refused.headers["Retry-After"]
        return page
    response = RedirectResponse(target or home_url(settings, signed.principal.role), status_code=303)
    set_session_cookies(response, request, signed)
    return response


@web_router.post("/logout")
async def logout(request: Request, session: Session) -> Response:
    """Sign out (a POST, from the button in every page's header): refused at once everywhere."""
    await sign_out_request(request, session)
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookies(response, request)
    return response


def _search_title(principal: Annotated[Principal, Depends(SEARCHER)]) -> str:
    return "来电查询" if principal.role == Role.OPERATOR else "事项查询"


pages.add_root(login="/login")
pages.add("/operator/complaint", "complaint.html", title="投诉登记", user=OPERATOR)
pages.add("/operator/suggestion", "suggestion.html", title="代表建议、委员提案登记", user=OPERATOR)
pages.add("/operator/search", "search.html", title=_search_title, user=SEARCHER)
pages.add("/operator/import", "import.html", title="批量导入", user=OPERATOR)


async def _accounts_data(
    session: Session, principal: Annotated[Principal, Depends(SUPERVISOR)]
) -> dict[str, Any]:
    """The accounts the supervisor manages (no password hashes), for the accounts page."""
    users = (await session.exec(select(User).order_by(col(User.role), col(User.username)))).all()
    return {
        "accounts": [
            {
                "username": u.username,
                "role": ROLE_LABELS.get(Role(u.role), u.role) if u.role in set(Role) else u.role,
                "display_name": u.display_name or u.deputy_name or "",
                "team_code": u.team_code or u.county_code or "",
                "active": u.active,
            }
            for u in users
        ]
    }


pages.add("/accounts", "accounts.html", title="账号管理", user=SUPERVISOR, data=_accounts_data)


async def _open311_keys_data(
    session: Session, principal: Annotated[Principal, Depends(SUPERVISOR)]
) -> dict[str, Any]:
    """The connecting systems and their keys' state (never a key), for the 对接系统 page."""
    return {"keys": [k.model_dump(mode="json") for k in map(key_read, await list_keys(session=session))]}


pages.add("/open311-keys", "open311_keys.html", title="对接系统", user=SUPERVISOR, data=_open311_keys_data)
