"""Connecting systems' Open311 API keys: issued by a supervisor, shown once, kept only as a hash.

A key is a long random token, so a plain SHA-256 of it is enough to look it up and to make the
table useless to a reader of it. Issuing and revoking are recorded in the audit chain.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.models import Open311Key
from shared.audit import audit
from shared.auth import Principal
from shared.db import utcnow
from shared.errors import NotFound, conflict

# The demo's connecting system: published in the README, seeded only in demo mode.
DEMO_KEY = "demo-open311-key"
DEMO_SYSTEM = "演示对接平台"
KEY_NOT_FOUND = "对接系统不存在"


@dataclass(frozen=True)
class IssuedKey:
    key: Open311Key
    # Shown once, to the supervisor who issued it; never stored.
    api_key: str


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def _audit_id(name: str) -> str:
    return f"open311-key:{name}"


async def issue_key(*, session: AsyncSession, name: str, actor: Principal) -> IssuedKey:
    """A new key for the connecting system ``name``; a name already given is refused (409)."""
    taken = (await session.exec(select(Open311Key).where(Open311Key.name == name))).first()
    if taken is not None:
        raise conflict(
            "name", f"对接系统“{name}”已存在，请换一个名称", f"a connecting system {name!r} exists"
        )
    api_key = secrets.token_urlsafe(32)
    key = Open311Key(name=name, key_hash=key_hash(api_key), created_by=actor.username)
    session.add(key)
    await audit(session, case_id=_audit_id(name), action="open311_key.issued", actor=actor.username)
    await session.flush()
    return IssuedKey(key=key, api_key=api_key)


async def list_keys(*, session: AsyncSession) -> list[Open311Key]:
    return list(await session.exec(select(Open311Key).order_by(col(Open311Key.created_at).desc())))


async def revoke_key(*, session: AsyncSession, name: str, actor: Principal) -> Open311Key:
    """Revoke the key of ``name``: its requests are refused from now on. Revoking twice is a no-op."""
    key = (await session.exec(select(Open311Key).where(Open311Key.name == name))).first()
    if key is None:
        raise NotFound(KEY_NOT_FOUND)
    if key.active:
        key.active = False
        key.revoked_by = actor.username
        key.revoked_at = utcnow()
        session.add(key)
        await audit(session, case_id=_audit_id(name), action="open311_key.revoked", actor=actor.username)
    return key


async def connecting_system(*, session: AsyncSession, api_key: str | None) -> Open311Key | None:
    """The active connecting system holding ``api_key``, or None for a wrong or revoked key."""
    if not api_key:
        return None
    found = (await session.exec(select(Open311Key).where(Open311Key.key_hash == key_hash(api_key)))).first()
    return found if found is not None and found.active else None


async def seed_demo_key(*, session: AsyncSession) -> bool:
    """Demo mode: the connecting system with the published key ``demo-open311-key``."""
    exists = (await session.exec(select(Open311Key).where(Open311Key.name == DEMO_SYSTEM))).first()
    if exists is not None:
        return False
    session.add(Open311Key(name=DEMO_SYSTEM, key_hash=key_hash(DEMO_KEY), created_by="demo-seed"))
    return True
