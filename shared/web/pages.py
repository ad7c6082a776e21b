"""How a service declares its pages: a path, a template, a title, who may see it and what its script reads.

Every page of the four services is the same mechanism: check the sign-in cookie for the
page's roles, gather the data the page's script reads (``SV.page`` in the browser), and
render the template over ``base.html``.  ``ServicePages.add`` states that once per page
instead of a handler per page; a page with its own logic (the sign-in form, a redirect)
is still an ordinary route on ``ServicePages.router``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from shared.auth import Principal, Role
from shared.web import home_url, page_templates, principal_from_cookie, render

# A FastAPI dependency: it may take the request, path parameters, a session or the page's
# signed-in person (use the same ``page_user(...)`` object as the page's ``user`` so the
# cookie is checked once).
Dependency = Callable[..., Any]


def _nobody() -> None:
    return None


def _no_data() -> dict[str, Any]:
    return {}


def _fixed(title: str) -> Callable[[], str]:
    def constant() -> str:
        return title

    return constant


class ServicePages:
    """One service's pages: its templates (over the shared ones) and the router that serves them.

    ``reference`` (a dependency) gives what the service's forms choose from (teams, labels,
    limits); every page of the service hands it to its script as ``SV.page.reference``.
    """

    def __init__(self, templates_dir: Path, *, reference: Dependency | None = None) -> None:
        self.templates = page_templates(templates_dir)
        self.router = APIRouter(include_in_schema=False)
        self.reference = reference

    def add(
        self,
        path: str,
        template: str,
        *,
        title: str | Dependency,
        user: Dependency | None = None,
        data: Dependency | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Serve ``template`` at ``path``.

        ``user`` is a ``page_user(...)`` dependency (None: a public page, shown to nobody in
        particular even when a cookie is present); ``data`` returns what the page's script
        reads besides the reference data; ``title`` is the title, or a dependency that works it out for this request.
        The sign-in check runs first, so nothing is looked up for a visitor sent away.
        """
        title_of = title if callable(title) else _fixed(title)
        extra_headers = dict(headers or {})

        # Dependencies as default values, not Annotated: the annotations of a function defined
        # here are strings that FastAPI resolves in this module, where ``user`` is not a name.
        async def show(
            request: Request,
            principal: Principal | None = Depends(user or _nobody),
            reference: Any = Depends(self.reference or _nobody),
            page: Mapping[str, Any] = Depends(data or _no_data),
            page_title: str = Depends(title_of),
        ) -> Response:
            script_data = {"reference": reference, **page} if reference is not None else page
            response = render(
                self.templates, request, template, principal, title=page_title, page=script_data
            )
            response.headers.update(extra_headers)
            return response

        self.router.add_api_route(path, show, methods=["GET"], name=template.removesuffix(".html"))

    def add_root(self, *, landing: Mapping[Role, str] | None = None, login: str | None = None) -> None:
        """``/``: a visitor goes to sign in (``login``, else intake's sign-in page), a signed-in
        person to their role's page on this service (``landing``), else to their role's home."""
        landing = dict(landing or {})

        async def root(request: Request) -> Response:
            principal = principal_from_cookie(request)
            settings = request.app.state.settings
            if principal is None:
                return RedirectResponse(login or f"{settings.intake_url.rstrip('/')}/login", status_code=303)
            return RedirectResponse(
                landing.get(principal.role) or home_url(settings, principal.role), status_code=303
            )

        self.router.add_api_route("/", root, methods=["GET"], name="root")
