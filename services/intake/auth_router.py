"""Intake's sign-in API: tokens, their renewal and revocation, and the accounts' lock.

The access token (15 minutes by default) comes in the answer and in the ``sv_token`` cookie
the pages use; the refresh token only in an HttpOnly cookie sent to ``/api/v1/auth/refresh``
alone.  ``sv_session`` (HttpOnly too) names the sign-in, so the sign-in page knows a renewal is
worth trying and sign-out can end it when the access token has already expired.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake import accounts, sessions, throttle
from services.intake.schemas import MeRead, TokenResponse
from services.intake.throttle import ThrottlePolicy
from shared.auth import (
    ACCESS_COOKIE,
    CONTACT_AUDIENCE,
    CurrentPrincipal,
    token_auth,
    verified_token,
)
from shared.deps import Session, Supervisor, feedback_caller_for

auth_router = APIRouter(prefix="/api/v1")
SESSION_COOKIE = "sv_session"

TOO_MANY_ATTEMPTS = "登录尝试过于频繁，请{seconds}秒后再试"
ACCOUNT_LOCKED = "该账号因多次密码错误已被锁定，请联系督察支队解锁"
WRONG_PASSWORD = "用户名或密码错误"  # noqa: S105 - a message, not a password


# Feedback reading a complainant's contact to deliver an answer (intake's router uses it).
feedback_caller = feedback_caller_for(CONTACT_AUDIENCE)


def client_address(request: Request) -> str:
    return throttle.client_address(
        peer=request.client.host if request.client else None,
        forwarded_for=request.headers.get("x-forwarded-for"),
        trusted_hops=request.app.state.settings.sign_in_trusted_proxy_hops,
    )


def policy_of(request: Request) -> ThrottlePolicy:
    return ThrottlePolicy.from_settings(request.app.state.settings)


def refresh_ttl(request: Request) -> timedelta:
    return timedelta(minutes=request.app.state.settings.refresh_token_ttl_minutes)


def set_session_cookies(response: Response, request: Request, signed: accounts.SignedIn) -> None:
    """The access token for every page, the refresh token for its one path, the sign-in's name."""
    settings = request.app.state.settings
    secure = request.url.scheme == "https"
    refresh_seconds = settings.refresh_token_ttl_minutes * 60
    # HttpOnly: no script reads them; Strict: no other site's page can make the browser send them.
    response.set_cookie(
        ACCESS_COOKIE,
        signed.access_token,
        max_age=settings.access_token_ttl_minutes * 60,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )
    if signed.refresh is None:
        return
    response.set_cookie(
        sessions.REFRESH_COOKIE,
        signed.refresh.token,
        max_age=refresh_seconds,
        httponly=True,
        samesite="strict",
        secure=secure,
        path=sessions.REFRESH_PATH,
    )
    response.set_cookie(
        SESSION_COOKIE,
        signed.refresh.family,
        max_age=refresh_seconds,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )


def clear_session_cookies(response: Response, request: Request) -> None:
    secure = request.url.scheme == "https"
    for name, path in (
        (ACCESS_COOKIE, "/"),
        (SESSION_COOKIE, "/"),
        (sessions.REFRESH_COOKIE, sessions.REFRESH_PATH),
    ):
        response.delete_cookie(name, path=path, httponly=True, samesite="strict", secure=secure)


def token_response(request: Request, signed: accounts.SignedIn) -> TokenResponse:
    return TokenResponse(
        access_token=signed.access_token,
        expires_in=request.app.state.settings.access_token_ttl_minutes * 60,
        role=signed.user.role,
        team_code=signed.user.team_code,
        display_name=signed.user.display_name,
    )


async def sign_in_or_refuse(
    request: Request, session: AsyncSession, username: str, password: str, *, with_refresh: bool
) -> accounts.SignedIn:
    """``accounts.sign_in`` with its refusals as HTTP errors (429 with Retry-After, 403, 401)."""
    try:
        return await accounts.sign_in(
            session=session,
            auth=token_auth(request.app),
            policy=policy_of(request),
            refresh_ttl=refresh_ttl(request),
            username=username,
            password=password,
            address=client_address(request),
            with_refresh=with_refresh,
        )
    except throttle.TooManyAttempts as exc:
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=TOO_MANY_ATTEMPTS.format(seconds=exc.retry_after),
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    except throttle.AccountLocked:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=ACCOUNT_LOCKED) from None
    except accounts.InvalidCredentials:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=WRONG_PASSWORD,
            headers={"WWW-Authenticate": "Bearer"},
        ) from None


@auth_router.post("/auth/token", response_model=TokenResponse, tags=["auth"])
async def sign_in(
    request: Request,
    session: Session,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
) -> TokenResponse:
    """OAuth2 password flow for API clients: the access token in the answer, no cookie (the pages
    sign in at ``/login``, which sets the cookies and the refresh token)."""
    signed = await sign_in_or_refuse(request, session, username.strip(), password, with_refresh=False)
    return token_response(request, signed)


@auth_router.post("/auth/refresh", response_model=TokenResponse, tags=["auth"])
async def refresh(request: Request, response: Response, session: Session) -> TokenResponse | JSONResponse:
    """A new access token for the refresh cookie, which is replaced by its successor."""
    token = request.cookies.get(sessions.REFRESH_COOKIE)
    signed = None
    if token:
        signed = await accounts.refresh(
            session=session, auth=token_auth(request.app), refresh_ttl=refresh_ttl(request), token=token
        )
    if signed is None:
        refused = JSONResponse(
            status_code=status.HTTP_401_UNAUTHORIZED, content={"detail": "登录已过期，请重新登录"}
        )
        clear_session_cookies(refused, request)
        return refused
    set_session_cookies(response, request, signed)
    return token_response(request, signed)


async def sign_out_request(request: Request, session: AsyncSession, bearer: str | None = None) -> None:
    """Revoke the request's access token (header or cookie) and end its sign-in."""
    verified = verified_token(request, bearer or request.cookies.get(ACCESS_COOKIE))
    family = (verified.session_id if verified else None) or request.cookies.get(SESSION_COOKIE)
    await accounts.sign_out(
        session=session,
        auth=token_auth(request.app),
        token_id=verified.token_id if verified else None,
        expires_at=verified.expires_at if verified else 0,
        family=family,
    )


@auth_router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"])
async def logout(request: Request, session: Session) -> Response:
    """Sign out: the token is refused at once by all four services."""
    header = request.headers.get("authorization", "")
    bearer = header[7:].strip() if header.lower().startswith("bearer ") else None
    await sign_out_request(request, session, bearer)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    clear_session_cookies(response, request)
    return response


@auth_router.get("/auth/me", response_model=MeRead, tags=["auth"])
async def me(principal: CurrentPrincipal) -> MeRead:
    return MeRead.model_validate(principal, from_attributes=True)


@auth_router.post("/users/{username}/unlock", tags=["auth"])
async def unlock_account(username: str, session: Session, principal: Supervisor) -> dict[str, object]:
    """Lift the lock wrong passwords put on an account (recorded in the audit trail)."""
    was_locked = await accounts.unlock(session=session, username=username, actor=principal)
    return {"username": username, "was_locked": was_locked}


@auth_router.post("/users/{username}/deactivate", tags=["auth"])
async def deactivate_account(
    username: str, request: Request, session: Session, principal: Supervisor
) -> dict[str, object]:
    """No more sign-ins; every token of the account refused at once by all four services."""
    await accounts.deactivate(
        session=session, auth=token_auth(request.app), username=username, actor=principal
    )
    return {"username": username, "active": False}
