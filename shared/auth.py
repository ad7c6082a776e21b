"""Tokens every service accepts, and the roles that decide what each person sees.

Intake owns the accounts and is the only signer of access tokens: it holds the Ed25519
private key (``TOKEN_PRIVATE_KEY``), and every service verifies with the public keys listed
in ``TOKEN_PUBLIC_KEYS`` (more than one during a key change-over, told apart by the ``kid``
header).  Nothing another service holds can sign a token.  Access tokens are short; a
signed-out or deactivated person's tokens are refused at once through the revocation list
(``shared.revocation``).  A service calling another signs its own token with its own key,
for one audience only (feedback's read of intake's ``/contact``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from shared.db import utcnow
from shared.keys import load_private_key, load_public_key
from shared.passwords import hash_password, verify_password
from shared.revocation import RevocationList, RevocationWatch, publish
from shared.worker import BackgroundWorker

__all__ = ["hash_password", "verify_password"]  # re-exported: the accounts' callers import them from here

ALGORITHM = "EdDSA"
ISSUER = "police-supervision"
AUDIENCE = "police-supervision"
TOKEN_URL = "/api/v1/auth/token"  # noqa: S105 - a path, not a secret
# The one call a service token is good for, and how long it may live.
CONTACT_AUDIENCE = "intake:contact"
# Feedback's read of a bureau leader's contact from routing, for staff notices.
BUREAU_CONTACT_AUDIENCE = "routing:contacts"
SERVICE_TOKEN_SECONDS = 60


class Role(StrEnum):
    OPERATOR = "operator"
    INSPECTOR = "inspector"
    SUPERVISOR = "supervisor"
    DEPUTY = "deputy"
    # A county bureau's 分管领导: their bureau's notifications, its ledger and statistics, no identities.
    LEADER = "leader"
    SERVICE = "service"


@dataclass(frozen=True)
class Principal:
    username: str
    role: Role
    team_code: str | None = None
    deputy_name: str | None = None
    deputy_delegation: str | None = None
    display_name: str | None = None
    # No other deputy account has this name in this delegation (intake knows, at sign-in): only
    # then may a suggestion recorded without an account be matched to this deputy by name.
    deputy_name_unique: bool = False
    # The county (or city) bureau a leader answers for: the code of its 县（市、区）.
    county_code: str | None = None

    def is_(self, *roles: Role) -> bool:
        return self.role in roles


class TokenRevoked(jwt.InvalidTokenError):
    """The token is well signed but was revoked (sign-out, deactivation)."""


class UnknownKeyId(jwt.InvalidTokenError):
    """The token names a key (``kid``) this service does not list."""


@dataclass(frozen=True)
class TokenSigner:
    """A private key and the ``kid`` its tokens carry, so a verifier picks the right public key."""

    key: Ed25519PrivateKey = field(repr=False)
    key_id: str

    @classmethod
    def from_pem(cls, pem: str, *, key_id: str) -> TokenSigner:
        return cls(key=load_private_key(pem), key_id=key_id)

    def sign(self, claims: Mapping[str, Any]) -> str:
        return jwt.encode(dict(claims), self.key, algorithm=ALGORITHM, headers={"kid": self.key_id})


@dataclass(frozen=True)
class VerifiedToken:
    principal: Principal
    token_id: str
    issued_at: int
    expires_at: int
    session_id: str | None = None


class TokenKeys:
    """The public keys a service accepts, by ``kid``; remembers the tokens it already verified."""

    # A client sends the same token with every request, and checking its signature and claims
    # each time was a few per cent of a request's CPU.
    _VERIFIED_MAX = 4096

    def __init__(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        if not keys:
            raise ValueError("at least one public key is needed")
        self.keys = dict(keys)
        self._verified: dict[str, VerifiedToken] = {}

    @classmethod
    def from_pem(cls, keys: Mapping[str, str]) -> TokenKeys:
        return cls({kid: load_public_key(pem) for kid, pem in keys.items()})

    def claims(self, token: str, *, audience: str) -> dict[str, Any]:
        """The verified claims of ``token``: EdDSA only, a listed ``kid``, issuer and audience checked."""
        header = jwt.get_unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise jwt.InvalidAlgorithmError("only EdDSA tokens are accepted")
        key = self.keys.get(str(header.get("kid")))
        if key is None:
            raise UnknownKeyId("token signed with a key that is not listed")
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "jti"]},
        )
        return claims

    def verify(self, token: str) -> VerifiedToken:
        """An access token's principal; service tokens are never access tokens."""
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known.expires_at:
                return known
            raise jwt.ExpiredSignatureError("Signature has expired")
        claims = self.claims(token, audience=AUDIENCE)
        principal = Principal(
            username=claims["sub"],
            role=Role(claims["role"]),
            team_code=claims.get("team"),
            deputy_name=claims.get("deputy_name"),
            deputy_delegation=claims.get("deputy_delegation"),
            display_name=claims.get("name"),
            deputy_name_unique=claims.get("deputy_unique") is True,
            county_code=claims.get("county"),
        )
        if principal.role == Role.SERVICE:
            raise jwt.InvalidTokenError("a service token is not an access token")
        verified = VerifiedToken(
            principal=principal,
            token_id=str(claims["jti"]),
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            session_id=claims.get("sid"),
        )
        if len(self._verified) >= self._VERIFIED_MAX:
            self._verified.clear()
        self._verified[token] = verified
        return verified


def access_claims(*, principal: Principal, ttl: timedelta, session_id: str | None = None) -> dict[str, Any]:
    now = utcnow()
    claims: dict[str, Any] = {
        "sub": principal.username,
        "role": principal.role.value,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": secrets.token_hex(16),
    }
    if session_id:
        claims["sid"] = session_id
    if principal.team_code:
        claims["team"] = principal.team_code
    if principal.deputy_name:
        claims["deputy_name"] = principal.deputy_name
        claims["deputy_delegation"] = principal.deputy_delegation
        if principal.deputy_name_unique:
            claims["deputy_unique"] = True
    if principal.display_name:
        claims["name"] = principal.display_name
    if principal.county_code:
        claims["county"] = principal.county_code
    return claims


def issue_token(
    *, principal: Principal, signer: TokenSigner, ttl: timedelta, session_id: str | None = None
) -> str:
    return signer.sign(access_claims(principal=principal, ttl=ttl, session_id=session_id))


def decode_token(token: str, *, keys: TokenKeys) -> Principal:
    return keys.verify(token).principal


def service_token(*, service: str, signer: TokenSigner, audience: str) -> str:
    """A token for one call of ``service`` to one ``audience``, good for a minute."""
    now = int(time.time())
    return signer.sign(
        {
            "sub": f"service:{service}",
            "role": Role.SERVICE.value,
            "iss": ISSUER,
            "aud": audience,
            "iat": now,
            "exp": now + SERVICE_TOKEN_SECONDS,
            "jti": secrets.token_hex(16),
        }
    )


def verify_service_token(token: str, *, keys: TokenKeys, audience: str, service: str) -> Principal:
    """The calling service of a token made by ``service_token`` for ``audience`` and signed by ``keys``."""
    claims = keys.claims(token, audience=audience)
    if claims.get("sub") != f"service:{service}" or claims.get("role") != Role.SERVICE.value:
        raise jwt.InvalidTokenError("not a token of the expected service")
    if int(claims["exp"]) - int(claims["iat"]) > SERVICE_TOKEN_SECONDS:
        raise jwt.InvalidTokenError("service token lives too long")
    return Principal(username=f"service:{service}", role=Role.SERVICE)


@dataclass
class TokenAuth:
    """What a service checks a token against: the listed public keys and the revocation list."""

    keys: TokenKeys
    revocations: RevocationList
    access_ttl: timedelta
    signer: TokenSigner | None = None  # intake's alone
    watch: RevocationWatch | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> TokenAuth:
        signer = None
        private_pem = getattr(settings, "token_private_key", None)
        if private_pem is not None:
            signer = TokenSigner.from_pem(private_pem.get_secret_value(), key_id=settings.token_key_id)
        access_ttl = timedelta(minutes=settings.access_token_ttl_minutes)
        return cls(
            keys=TokenKeys.from_pem(settings.token_public_key_map),
            revocations=RevocationList(ttl_seconds=settings.revocation_ttl_seconds),
            access_ttl=access_ttl,
            signer=signer,
        )

    def verify(self, token: str) -> VerifiedToken:
        verified = self.keys.verify(token)
        if self.revocations.is_revoked(
            token_id=verified.token_id,
            username=verified.principal.username,
            issued_at=verified.issued_at,
        ):
            raise TokenRevoked("token revoked")
        return verified

    async def share_revocations(self) -> None:
        """Write this service's new revocations to the bucket now (the watcher retries failures)."""
        if self.watch is not None:
            await publish(self.revocations, self.watch.jetstream(), replicas=self.watch.replicas)

    def issue(self, *, principal: Principal, session_id: str | None = None) -> str:
        if self.signer is None:
            raise RuntimeError("only intake signs access tokens")
        return issue_token(
            principal=principal, signer=self.signer, ttl=self.access_ttl, session_id=session_id
        )


def token_auth(app: Any) -> TokenAuth:
    """The app's ``TokenAuth``, made from its settings the first time it is asked for."""
    auth: TokenAuth | None = getattr(app.state, "token_auth", None)
    if auth is None:
        auth = app.state.token_auth = TokenAuth.from_settings(app.state.settings)
    return auth


def watch_revocations(app: Any, runtime: Any) -> BackgroundWorker:
    """The worker keeping ``app``'s revocation list in step with the bucket (``runtime``'s NATS)."""
    auth = token_auth(app)

    def jetstream() -> Any:
        nc = runtime.nc
        return runtime.js if nc is not None and nc.is_connected else None

    auth.watch = RevocationWatch(
        revocations=auth.revocations, jetstream=jetstream, replicas=runtime.settings.nats_replicas
    )
    return auth.watch.worker


def verified_token(request: Request, token: str | None) -> VerifiedToken | None:
    """The request's verified access token, or None when it has none that is valid now."""
    if not token:
        return None
    try:
        return token_auth(request.app).verify(token)
    except (jwt.PyJWTError, KeyError, ValueError):
        return None


oauth2_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)

UNAUTHORISED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="未登录或登录已过期",
    headers={"WWW-Authenticate": "Bearer"},
)

ACCESS_COOKIE = "sv_token"


async def current_token(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> VerifiedToken:
    verified = verified_token(request, token or request.cookies.get(ACCESS_COOKIE))
    if verified is None:
        raise UNAUTHORISED
    return verified


async def current_principal(verified: Annotated[VerifiedToken, Depends(current_token)]) -> Principal:
    return verified.principal


def require_roles(*roles: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """Dependency that lets only ``roles`` through (403 otherwise)."""

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="无权执行此操作")
        return principal

    return dependency


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
CurrentToken = Annotated[VerifiedToken, Depends(current_token)]


def derive_key(signing_key: str, purpose: str) -> bytes:
    """A key for one purpose derived from ``SECRET_KEY``, so one secret never serves two uses."""
    return hmac.new(signing_key.encode(), purpose.encode(), hashlib.sha256).digest()


def query_secret_hash(*, signing_key: str, tracking_code: str, query_secret: str) -> str:
    """Keyed hash of a public-query secret: a stolen database alone does not allow guessing offline."""
    key = derive_key(signing_key, "query-secret")
    normalised = query_secret.strip().upper().replace("-", "").replace(" ", "")
    return hmac.new(key, f"{tracking_code.strip().upper()}:{normalised}".encode(), hashlib.sha256).hexdigest()
