"""Tokens every service accepts, and the roles that decide what each person sees.

Intake owns the accounts and issues tokens (OAuth2 password flow); all four
services verify them with the shared signing key.  A service calling another
uses a short-lived token of role ``service``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from shared.db import utcnow

ALGORITHM = "HS256"
ISSUER = "police-supervision"
AUDIENCE = "police-supervision"
TOKEN_URL = "/api/v1/auth/token"  # noqa: S105 - a path, not a secret


class Role(StrEnum):
    OPERATOR = "operator"
    INSPECTOR = "inspector"
    SUPERVISOR = "supervisor"
    DEPUTY = "deputy"
    SERVICE = "service"


@dataclass(frozen=True)
class Principal:
    username: str
    role: Role
    team_code: str | None = None
    deputy_name: str | None = None
    deputy_delegation: str | None = None
    display_name: str | None = None

    def is_(self, *roles: Role) -> bool:
        return self.role in roles


def issue_token(*, principal: Principal, signing_key: str, ttl: timedelta) -> str:
    now = utcnow()
    claims: dict[str, Any] = {
        "sub": principal.username,
        "role": principal.role.value,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": secrets.token_hex(8),
    }
    if principal.team_code:
        claims["team"] = principal.team_code
    if principal.deputy_name:
        claims["deputy_name"] = principal.deputy_name
        claims["deputy_delegation"] = principal.deputy_delegation
    if principal.display_name:
        claims["name"] = principal.display_name
    return jwt.encode(claims, signing_key, algorithm=ALGORITHM)


# Tokens already verified, with their expiry: a client sends the same token with every request,
# and checking its signature and claims each time was a few per cent of a request's CPU.
_VERIFIED: dict[tuple[str, str], tuple[Principal, int]] = {}
_VERIFIED_MAX = 4096


def decode_token(token: str, *, signing_key: str) -> Principal:
    known = _VERIFIED.get((token, signing_key))
    if known is not None and time.time() < known[1]:
        return known[0]
    claims = jwt.decode(token, signing_key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER)
    principal = Principal(
        username=claims["sub"],
        role=Role(claims["role"]),
        team_code=claims.get("team"),
        deputy_name=claims.get("deputy_name"),
        deputy_delegation=claims.get("deputy_delegation"),
        display_name=claims.get("name"),
    )
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[(token, signing_key)] = (principal, int(claims["exp"]))
    return principal


def service_token(*, service: str, signing_key: str) -> str:
    return issue_token(
        principal=Principal(username=f"service:{service}", role=Role.SERVICE),
        signing_key=signing_key,
        ttl=timedelta(minutes=5),
    )


oauth2_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)

UNAUTHORISED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="未登录或登录已过期",
    headers={"WWW-Authenticate": "Bearer"},
)


async def current_principal(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Principal:
    if not token:
        token = request.cookies.get("sv_token")
    if not token:
        raise UNAUTHORISED
    try:
        return decode_token(token, signing_key=request.app.state.settings.signing_key)
    except (jwt.PyJWTError, KeyError, ValueError):
        raise UNAUTHORISED from None


def require_roles(*roles: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """Dependency that lets only ``roles`` through (403 otherwise)."""

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="无权执行此操作")
        return principal

    return dependency


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]

# Passwords: scrypt from the standard library, parameters stored with the hash so they can grow.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(candidate.hex(), digest)


def derive_key(signing_key: str, purpose: str) -> bytes:
    """A key for one purpose derived from the shared secret, so one secret never serves two uses."""
    return hmac.new(signing_key.encode(), purpose.encode(), hashlib.sha256).digest()


def query_secret_hash(*, signing_key: str, tracking_code: str, query_secret: str) -> str:
    """Keyed hash of a public-query secret: a stolen database alone does not allow guessing offline."""
    key = derive_key(signing_key, "query-secret")
    normalised = query_secret.strip().upper().replace("-", "").replace(" ", "")
    return hmac.new(key, f"{tracking_code.strip().upper()}:{normalised}".encode(), hashlib.sha256).hexdigest()
