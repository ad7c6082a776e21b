"""The browser interface every service serves: one look, one sign-in, pages in Simplified Chinese.

Each service keeps its own pages (``services/<name>/web.py`` and ``templates/``)
next to the data they show; what they share lives here: the stylesheet and the
small scripts under ``static/`` (served by every service at ``/static/``), the
base template, the navigation of each role, and the sign-in check of a page.

Sign-in is intake's: it sets the token as an HttpOnly cookie (``sv_token``).
Browsers send a cookie to every port of the host that set it, so one sign-in
on :8001 is good for :8002-:8004 too, as long as the four services are reached
under the same host name.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.asgi import SameOriginMiddleware
from shared.auth import Principal, Role, verified_token
from shared.pagination import PAGE_HEADERS

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
TEMPLATES_DIR = WEB_DIR / "templates"
COOKIE_NAME = "sv_token"

SERVICE_NAMES = ("intake", "routing", "verification", "feedback")

ROLE_LABELS = {
    Role.OPERATOR: "接线员",
    Role.INSPECTOR: "督察民警",
    Role.SUPERVISOR: "督察支队",
    Role.DEPUTY: "人大代表/政协委员",
    Role.LEADER: "分管领导",
    Role.SERVICE: "系统服务",
}

# (service, path, label) per role; the first entry is where the role lands after signing in.
NAVIGATION: dict[Role, tuple[tuple[str, str, str], ...]] = {
    Role.OPERATOR: (
        ("intake", "/operator/complaint", "投诉登记"),
        ("intake", "/operator/suggestion", "建议提案登记"),
        ("intake", "/operator/search", "来电查询"),
        ("intake", "/operator/import", "批量导入"),
        ("feedback", "/follow-ups", "回访"),
        ("feedback", "/deliveries", "送达处理"),
        ("feedback", "/todo", "待办"),
    ),
    Role.INSPECTOR: (("verification", "/tasks", "核查任务"), ("feedback", "/todo", "待办")),
    Role.SUPERVISOR: (
        ("verification", "/dashboard", "统计分析"),
        ("verification", "/reports", "督察通报"),
        ("verification", "/ledger", "督办台账"),
        ("verification", "/approvals", "待审批"),
        ("verification", "/tasks", "核查任务"),
        ("routing", "/rules", "分派规则"),
        ("routing", "/org", "组织机构"),
        ("intake", "/operator/search", "事项查询"),
        # Served by every service (shared.deadletters_api); it lists the four services' dead letters.
        ("verification", "/dead-letters", "死信队列"),
        ("verification", "/audit", "审计记录"),
        ("intake", "/accounts", "账号管理"),
        ("intake", "/open311-keys", "对接系统"),
        ("feedback", "/deliveries", "送达处理"),
        ("feedback", "/messages", "消息记录"),
        ("feedback", "/todo", "待办"),
    ),
    Role.LEADER: (
        ("feedback", "/todo", "待办"),
        ("verification", "/ledger", "督办台账"),
        ("verification", "/dashboard", "统计分析"),
        ("verification", "/reports", "督察通报"),
    ),
    Role.DEPUTY: (("feedback", "/deputy", "我的建议提案"),),
}


def _static_version() -> str:
    # Changes whenever a static file changes, so browsers never keep a stale script after an upgrade.
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


STATIC_VERSION = _static_version()


def service_urls(settings: Any) -> dict[str, str]:
    # The browser's view of the services: the public addresses where they are set.
    return {
        name: str(getattr(settings, f"public_{name}_url", None) or getattr(settings, f"{name}_url")).rstrip(
            "/"
        )
        for name in SERVICE_NAMES
    }


def sibling_origins(settings: Any) -> list[str]:
    """The other services' origins: a page of one may call the API of another."""
    origins = []
    for url in service_urls(settings).values():
        parts = urlsplit(url)
        if parts.scheme and parts.netloc:
            origins.append(f"{parts.scheme}://{parts.netloc}")
    return sorted(set(origins))


def mount_web(app: FastAPI, settings: Any) -> None:
    """Static files at /static/, CORS for the sibling services, and the sign-in redirect of pages."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Inside CORS, so a refused cross-origin request still gets the headers its page needs to read why.
    app.add_middleware(SameOriginMiddleware, origins=sibling_origins(settings))
    app.add_middleware(
        CORSMiddleware,
        allow_origins=sibling_origins(settings),
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT"],
        allow_headers=["Content-Type", "Accept-Language", "Idempotency-Key"],
        # A sibling's page reads a list's total and next cursor (shared.pagination).
        expose_headers=list(PAGE_HEADERS),
        max_age=600,
    )

    @app.exception_handler(PageRedirect)
    async def on_page_redirect(request: Request, exc: PageRedirect) -> Response:
        return exc.response

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # A person who mistyped an address gets a page in Chinese; the APIs keep their JSON.
        wants_page = "text/html" in request.headers.get("accept", "")
        if wants_page and not request.url.path.startswith("/api/") and exc.status_code in (404, 405):
            return render(
                page_templates(TEMPLATES_DIR),
                request,
                "not_found.html",
                principal_from_cookie(request),
                title="页面不存在",
                status_code=exc.status_code,
            )
        return await http_exception_handler(request, exc)


def page_templates(service_templates_dir: Path) -> Jinja2Templates:
    """Templates of one service, falling back to the shared ones (base.html, macros)."""
    env = Environment(
        loader=ChoiceLoader([FileSystemLoader(service_templates_dir), FileSystemLoader(TEMPLATES_DIR)]),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static_version"] = STATIC_VERSION
    return Jinja2Templates(env=env)


class PageRedirect(Exception):
    """Raised by a page's sign-in check; answered with ``response`` (a redirect or the 403 page)."""

    def __init__(self, response: Response) -> None:
        super().__init__("page redirect")
        self.response = response


def principal_from_cookie(request: Request) -> Principal | None:
    verified = verified_token(request, request.cookies.get(COOKIE_NAME))
    if verified is None:
        return None
    return None if verified.principal.role == Role.SERVICE else verified.principal


def login_url(request: Request, next_url: str | None = None) -> str:
    intake = service_urls(request.app.state.settings)["intake"]
    target = next_url if next_url is not None else str(request.url)
    return f"{intake}/login?next={quote(target, safe='')}"


def home_url(settings: Any, role: Role) -> str:
    entries = NAVIGATION.get(role)
    urls = service_urls(settings)
    if not entries:
        return f"{urls['intake']}/login"
    service, path, _ = entries[0]
    return urls[service] + path


def safe_next(settings: Any, target: str | None) -> str | None:
    """``target`` if it points at one of the four services, else None: the login is no open redirect."""
    if not target:
        return None
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    for base in service_urls(settings).values():
        if target == base or target.startswith(base + "/"):
            return target
    return None


def page_user(*roles: Role) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """Dependency of a page: the signed-in person of one of ``roles``, or off to the sign-in page."""

    async def dependency(request: Request) -> Principal:
        principal = principal_from_cookie(request)
        if principal is None:
            raise PageRedirect(RedirectResponse(login_url(request), status_code=303))
        if roles and principal.role not in roles:
            templates = page_templates(TEMPLATES_DIR)
            raise PageRedirect(
                render(
                    templates,
                    request,
                    "forbidden.html",
                    principal,
                    title="无权访问",
                    status_code=403,
                )
            )
        return principal

    return dependency


def navigation(
    settings: Any, principal: Principal | None, current_path: str, service: str
) -> list[dict[str, Any]]:
    if principal is None:
        return []
    urls = service_urls(settings)
    items = []
    for item_service, path, label in NAVIGATION.get(principal.role, ()):
        items.append(
            {
                "url": urls[item_service] + path,
                "label": label,
                "active": item_service == service
                and (current_path == path or current_path.startswith(path + "/")),
            }
        )
    return items


def content_security_policy(settings: Any, nonce: str) -> str:
    # Everything from the service itself or its siblings: a page can load nothing from outside.
    siblings = " ".join(sibling_origins(settings))
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' 'nonce-{nonce}'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src 'self' {siblings}",
            f"form-action 'self' {siblings}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "object-src 'none'",
        ]
    )


def render(
    templates: Jinja2Templates,
    request: Request,
    name: str,
    principal: Principal | None,
    *,
    title: str,
    status_code: int = 200,
    page: Mapping[str, Any] | None = None,
    **context: Any,
) -> Response:
    """A page: ``page`` is handed to the page's script as JSON; ``context`` goes to the template."""
    settings = request.app.state.settings
    service = str(settings.service_name)
    nonce = secrets.token_urlsafe(16)
    urls = service_urls(settings)
    response = templates.TemplateResponse(
        request,
        name,
        {
            "title": title,
            "principal": principal,
            "role_label": ROLE_LABELS.get(principal.role, "") if principal else "",
            "nav": navigation(settings, principal, request.url.path, service),
            "urls": urls,
            "service": service,
            "csp_nonce": nonce,
            "logout_url": f"{urls['intake']}/logout",
            "home_url": home_url(settings, principal.role) if principal else f"{urls['intake']}/login",
            "page_data": {
                "urls": urls,
                "service": service,
                "user": (
                    {
                        "username": principal.username,
                        "role": principal.role.value,
                        "team_code": principal.team_code,
                        "display_name": principal.display_name,
                    }
                    if principal
                    else None
                ),
                "login_url": login_url(request),
                **(page or {}),
            },
            **context,
        },
        status_code=status_code,
    )
    response.headers["Content-Security-Policy"] = content_security_policy(settings, nonce)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
