"""Refresh tokens: what keeps a person signed in past their 15-minute access token.

A sign-in starts a family; each refresh token is good once and is replaced by the next of
its family (rotation).  A token used a second time means a copy exists: the whole family is
ended, and whoever holds either copy signs in again.  Sign-out ends the family, deactivation
every family of the person.  Only the tokens' SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.models import RefreshToken

REFRESH_COOKIE = "sv_refresh"
REFRESH_PATH = "/api/v1/auth/refresh"
# Two tabs refreshing at the same moment both present the same token: the second within this
# grace is refused without ending the family.
REUSE_GRACE = timedelta(seconds=10)


@dataclass(frozen=True)
class Refreshed:
    token: str
    family: str
    username: str


class RefreshReused(Exception):
    """A refresh token was presented again after its use: its family was ended."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new(session: AsyncSession, *, family: str, username: str, ttl: timedelta, now: datetime) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            token_hash=_digest(token), family=family, username=username, expires_at=now + ttl, created_at=now
        )
    )
    return token


def start(session: AsyncSession, *, username: str, ttl: timedelta, now: datetime) -> Refreshed:
    family = secrets.token_hex(16)
    return Refreshed(
        token=_new(session, family=family, username=username, ttl=ttl, now=now),
        family=family,
        username=username,
    )


async def rotate(session: AsyncSession, *, token: str, ttl: timedelta, now: datetime) -> Refreshed | None:
    """The successor of ``token``, or None when it is unknown or expired; raises ``RefreshReused``."""
    row = await session.get(RefreshToken, _digest(token))
    if row is None or row.expires_at <= now:
        return None
    if row.used_at is not None:
        if now - row.used_at > REUSE_GRACE:
            await end_family(session, family=row.family)
            raise RefreshReused(row.family)
        return None
    row.used_at = now
    successor = _new(session, family=row.family, username=row.username, ttl=ttl, now=now)
    return Refreshed(token=successor, family=row.family, username=row.username)


async def end_family(session: AsyncSession, *, family: str) -> None:
    await session.exec(delete(RefreshToken).where(col(RefreshToken.family) == family))


async def end_all(session: AsyncSession, *, username: str) -> None:
    await session.exec(delete(RefreshToken).where(col(RefreshToken.username) == username))


async def purge_expired(session: AsyncSession, *, now: datetime) -> int:
    expired = list(
        await session.exec(select(RefreshToken.token_hash).where(col(RefreshToken.expires_at) <= now))
    )
    if expired:
        await session.exec(delete(RefreshToken).where(col(RefreshToken.expires_at) <= now))
    return len(expired)
