"""The dependencies the services' JSON APIs declare: a database session, the caller in a role, app state.

Declared once so that a role's name means the same set of roles in every service.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import jwt
from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.app import get_session
from shared.auth import (
    UNAUTHORISED,
    Principal,
    Role,
    TokenKeys,
    oauth2_scheme,
    require_roles,
    verify_service_token,
)

_T = TypeVar("_T")

Session = Annotated[AsyncSession, Depends(get_session)]
Supervisor = Annotated[Principal, Depends(require_roles(Role.SUPERVISOR))]
Operator = Annotated[Principal, Depends(require_roles(Role.OPERATOR))]
Inspector = Annotated[Principal, Depends(require_roles(Role.INSPECTOR))]
Deputy = Annotated[Principal, Depends(require_roles(Role.DEPUTY))]
OperatorOrSupervisor = Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.SUPERVISOR))]
InspectorOrSupervisor = Annotated[Principal, Depends(require_roles(Role.INSPECTOR, Role.SUPERVISOR))]
# The bureau's own people, every role but the deputies.
Staff = Annotated[Principal, Depends(require_roles(Role.SUPERVISOR, Role.INSPECTOR, Role.OPERATOR))]
# Who reads a county's ledger and statistics: the city supervisors, and a county's leader (their county only).
SupervisorOrLeader = Annotated[Principal, Depends(require_roles(Role.SUPERVISOR, Role.LEADER))]
# Anyone signed in who works for a bureau: every role but the deputies and the services.
Signed = Annotated[
    Principal,
    Depends(require_roles(Role.SUPERVISOR, Role.INSPECTOR, Role.OPERATOR, Role.LEADER, Role.DEPUTY)),
]


def app_state(attribute: str, kind: type[_T]) -> Callable[[Request], Coroutine[Any, Any, _T]]:
    """A dependency giving ``app.state.<attribute>`` (of type ``kind``), which the service's create_app set."""

    # async: FastAPI runs a plain `def` dependency on its thread pool, a hop per request.
    async def dependency(request: Request) -> _T:
        value: _T = getattr(request.app.state, attribute)
        return value

    dependency.__name__ = f"{attribute}_state"
    return dependency


def _feedback_keys(request: Request) -> TokenKeys | None:
    """Feedback's own public keys from the settings (``feedback_caller_key_map``), parsed once; None: unset."""
    keys: TokenKeys | None = getattr(request.app.state, "feedback_caller_keys", None)
    if keys is None:
        key_map = request.app.state.settings.feedback_caller_key_map
        if not key_map:
            return None
        keys = request.app.state.feedback_caller_keys = TokenKeys.from_pem(key_map)
    return keys


def feedback_caller_for(audience: str) -> Callable[[Request, str | None], Coroutine[Any, Any, Principal]]:
    """A dependency: feedback, with a token it signed with its own key for this one call (``audience``)."""

    async def dependency(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal:
        keys = _feedback_keys(request)
        if not token or keys is None:
            raise UNAUTHORISED
        try:
            return verify_service_token(token, keys=keys, audience=audience, service="feedback")
        except (jwt.PyJWTError, KeyError, ValueError):
            raise UNAUTHORISED from None

    dependency.__name__ = "feedback_caller"
    return dependency
