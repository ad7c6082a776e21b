"""Accounts and sign-in.  Outside demo mode no account exists until an administrator creates one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake import sessions, throttle
from services.intake.models import User
from services.intake.throttle import ThrottlePolicy
from shared.audit import audit
from shared.auth import Principal, Role, TokenAuth, hash_password, verify_password
from shared.db import create_engine, create_session_factory, utcnow
from shared.errors import NotFound
from shared.logging import get_logger
from shared.reference import DEFAULT_UNITS_FILE, Organisation, load_organisation
from shared.settings import ServiceSettings

log = get_logger(__name__)

DEMO_PASSWORD = "demo"  # noqa: S105 - demo mode only, documented in the README
DEMO_DEPUTY = {"name": "马刚", "delegation": "川汇区代表团"}
COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent / "common_passwords.txt"
SYSTEM_ACTOR = "system"
_dummy_hash: list[str] = []


class InvalidCredentials(Exception):
    """Wrong name or password (the two are not told apart)."""


class WeakPassword(ValueError):
    """``create-user`` refuses the password; the message says why."""


@dataclass(frozen=True)
class SignedIn:
    user: User
    principal: Principal
    access_token: str
    refresh: sessions.Refreshed | None  # None for an API sign-in: no cookie to keep it in


def principal_of(user: User, *, deputy_name_unique: bool = False) -> Principal:
    return Principal(
        username=user.username,
        role=Role(user.role),
        team_code=user.team_code,
        deputy_name=user.deputy_name,
        deputy_delegation=user.deputy_delegation,
        display_name=user.display_name,
        deputy_name_unique=deputy_name_unique,
        county_code=user.county_code if user.role == Role.LEADER else None,
    )


async def deputy_accounts(
    *, session: AsyncSession, name: str | None = None, delegation: str | None = None
) -> list[User]:
    """Deputy accounts (active or not), optionally those of one name in one delegation."""
    query = (
        select(User).where(User.role == Role.DEPUTY).order_by(col(User.deputy_delegation), col(User.username))
    )
    if name is not None:
        query = query.where(User.deputy_name == name, User.deputy_delegation == delegation)
    return list(await session.exec(query))


async def _principal(session: AsyncSession, user: User) -> Principal:
    """The token's principal; for a deputy, whether their name is theirs alone in the delegation."""
    unique = False
    if user.role == Role.DEPUTY and user.deputy_name:
        namesakes = await deputy_accounts(
            session=session, name=user.deputy_name, delegation=user.deputy_delegation
        )
        unique = [u.username for u in namesakes] == [user.username]
    return principal_of(user, deputy_name_unique=unique)


def _dummy() -> str:
    if not _dummy_hash:
        _dummy_hash.append(hash_password("not-a-password"))
    return _dummy_hash[0]


async def authenticate(*, session: AsyncSession, username: str, password: str) -> User | None:
    """The active user whose password this is; an old hash is replaced by an Argon2id one."""
    user = (await session.exec(select(User).where(User.username == username))).first()
    if user is None or not user.active:
        # Spend the same time as a real check so a guesser cannot tell which names exist.
        await asyncio.to_thread(verify_password, password, _dummy())
        return None
    check = await asyncio.to_thread(verify_password, password, user.password_hash)
    if not check.ok:
        return None
    if check.needs_rehash:
        user.password_hash = await asyncio.to_thread(hash_password, password)
        log.info("password hash upgraded", username=user.username)
    return user


async def sign_in(
    *,
    session: AsyncSession,
    auth: TokenAuth,
    policy: ThrottlePolicy,
    refresh_ttl: timedelta,
    username: str,
    password: str,
    address: str,
    with_refresh: bool = True,
) -> SignedIn:
    """Check the brake, then the password; count a failure, or start a session.  Commits.

    ``with_refresh``: also start a sign-in that the refresh cookie renews (the pages).
    Raises ``throttle.AccountLocked``, ``throttle.TooManyAttempts`` or ``InvalidCredentials``.
    """
    now = utcnow()
    refresh: sessions.Refreshed | None = None
    principal: Principal | None = None
    async with session.begin():
        await throttle.check(session=session, policy=policy, username=username, address=address, now=now)
        user = await authenticate(session=session, username=username, password=password)
        if user is None:
            # The wait runs from the answer, not from the request: hashing took a while.
            locked = await throttle.record_failure(
                session=session, policy=policy, username=username, address=address, now=utcnow()
            )
            if locked:
                await audit(
                    session,
                    case_id=f"account:{username}",
                    action="account.locked",
                    actor=SYSTEM_ACTOR,
                    detail={"after_failures": policy.lock_after, "address": address},
                )
                log.warning("account locked after wrong passwords", username=username, address=address)
        else:
            await throttle.record_success(session=session, username=username)
            if with_refresh:
                refresh = sessions.start(session, username=user.username, ttl=refresh_ttl, now=now)
            principal = await _principal(session, user)
    if user is None or principal is None:
        raise InvalidCredentials(username)
    return SignedIn(
        user=user,
        principal=principal,
        access_token=auth.issue(principal=principal, session_id=refresh.family if refresh else None),
        refresh=refresh,
    )


async def refresh(
    *, session: AsyncSession, auth: TokenAuth, refresh_ttl: timedelta, token: str
) -> SignedIn | None:
    """A new access token and the refresh token's successor, or None (unknown, used, expired, inactive)."""
    now = utcnow()
    principal: Principal | None = None
    async with session.begin():
        try:
            refreshed = await sessions.rotate(session, token=token, ttl=refresh_ttl, now=now)
        except sessions.RefreshReused:
            log.warning("a used refresh token came back: its sign-in is ended")
            refreshed = None
        user = None
        if refreshed is not None:
            user = (await session.exec(select(User).where(User.username == refreshed.username))).first()
            if user is None or not user.active:
                await sessions.end_family(session, family=refreshed.family)
                user = None
            else:
                principal = await _principal(session, user)
    if user is None or refreshed is None or principal is None:
        return None
    return SignedIn(
        user=user,
        principal=principal,
        access_token=auth.issue(principal=principal, session_id=refreshed.family),
        refresh=refreshed,
    )


async def sign_out(
    *, session: AsyncSession, auth: TokenAuth, token_id: str | None, expires_at: int, family: str | None
) -> None:
    """Revoke the access token at once in every service, and end its refresh family."""
    if family:
        async with session.begin():
            await sessions.end_family(session, family=family)
    if token_id:
        auth.revocations.revoke_token(token_id=token_id, expires_at=expires_at)
        await auth.share_revocations()


async def _user(session: AsyncSession, username: str) -> User:
    user = (await session.exec(select(User).where(User.username == username))).first()
    if user is None:
        raise NotFound("用户不存在")
    return user


async def unlock(*, session: AsyncSession, username: str, actor: Principal) -> bool:
    """Lift the lock (and the wrong-password count) of an account; recorded in the audit trail."""
    async with session.begin():
        await _user(session, username)
        was_locked = await throttle.unlock(session=session, username=username)
        await audit(
            session,
            case_id=f"account:{username}",
            action="account.unlocked",
            actor=actor.username,
            detail={"was_locked": was_locked},
        )
    return was_locked


async def deactivate(*, session: AsyncSession, auth: TokenAuth, username: str, actor: Principal) -> None:
    """No more sign-ins, and every token of the person refused at once by every service."""
    async with session.begin():
        user = await _user(session, username)
        user.active = False
        await sessions.end_all(session, username=username)
        await audit(
            session, case_id=f"account:{username}", action="account.deactivated", actor=actor.username
        )
    auth.revocations.revoke_user(username=username)
    await auth.share_revocations()


def validate_account(
    *,
    role: str,
    team_code: str | None,
    deputy_name: str | None,
    deputy_delegation: str | None,
    county_code: str | None = None,
    organisation: Organisation | None = None,
) -> None:
    """Refuse an account its role cannot work with; a leader needs a county bureau of the units data."""
    allowed = {r.value for r in Role} - {Role.SERVICE.value}
    if role not in allowed:
        raise ValueError(f"role must be one of {sorted(allowed)}")
    if role == Role.INSPECTOR and not team_code:
        raise ValueError("an inspector needs a team code")
    if role == Role.DEPUTY and not (deputy_name and deputy_delegation):
        raise ValueError("a deputy needs the deputy's name and delegation")
    if role == Role.LEADER:
        known = organisation or load_organisation(DEFAULT_UNITS_FILE)
        if not county_code:
            raise ValueError(
                "a leader needs the code of the county (or city) bureau they answer for: --county"
            )
        if not known.is_known_area(county_code):
            codes = ", ".join([known.city_code, *known.counties])
            raise ValueError(f"unknown county code {county_code!r} for a leader; known codes: {codes}")
    elif county_code:
        raise ValueError("only a leader answers for a county: --county goes with --role leader")


def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def check_password_strength(password: str, *, min_length: int, username: str = "") -> None:
    if len(password) < min_length:
        raise WeakPassword(f"the password is too short: at least {min_length} characters are required")
    lowered = password.lower()
    if lowered in common_passwords() or (username and lowered == username.lower()):
        raise WeakPassword("the password is too common (it is in the list of common passwords)")


async def create_user(
    *,
    session: AsyncSession,
    username: str,
    password: str,
    role: str,
    team_code: str | None = None,
    display_name: str | None = None,
    deputy_name: str | None = None,
    deputy_delegation: str | None = None,
    county_code: str | None = None,
    organisation: Organisation | None = None,
    password_hash: str | None = None,
) -> User:
    """An account; the caller checked the password (``check_password_strength``) where it must.

    ``password_hash``: the password's hash made already (the demo accounts share one).
    """
    validate_account(
        role=role,
        team_code=team_code,
        deputy_name=deputy_name,
        deputy_delegation=deputy_delegation,
        county_code=county_code,
        organisation=organisation,
    )
    if (await session.exec(select(User).where(User.username == username))).first():
        raise ValueError(f"user {username} already exists")
    user = User(
        username=username,
        password_hash=(
            password_hash if password_hash is not None else await asyncio.to_thread(hash_password, password)
        ),
        role=role,
        team_code=team_code,
        display_name=display_name,
        deputy_name=deputy_name,
        deputy_delegation=deputy_delegation,
        county_code=county_code,
    )
    session.add(user)
    return user


def demo_accounts(organisation: Organisation) -> list[dict[str, str | None]]:
    accounts: list[dict[str, str | None]] = [
        {"username": "operator1", "role": "operator", "display_name": "接线员一"},
        {"username": "supervisor1", "role": "supervisor", "display_name": "督察支队值班领导"},
        {
            "username": "deputy1",
            "role": "deputy",
            "display_name": "马刚代表",
            "deputy_name": DEMO_DEPUTY["name"],
            "deputy_delegation": DEMO_DEPUTY["delegation"],
        },
    ]
    for code in organisation.team_codes():
        accounts.append(
            {
                "username": f"inspector-{code}",
                "role": "inspector",
                "team_code": code,
                "display_name": f"{organisation.team_name(code)}督察民警",
            }
        )
    for county in organisation.counties.values():
        accounts.append(
            {
                "username": f"leader-{county.code}",
                "role": "leader",
                "county_code": county.code,
                "display_name": f"{county.bureau}分管领导",
            }
        )
    return accounts


async def seed_demo_accounts(*, session: AsyncSession, organisation: Organisation) -> int:
    """The demo accounts, password ``demo``: seeded directly, past ``create-user``'s password check."""
    existing = set((await session.exec(select(User.username))).all())
    missing = [a for a in demo_accounts(organisation) if a["username"] not in existing]
    if not missing:
        return 0
    # The demo password is published, so one Argon2id hash serves every demo account: hashing
    # two dozen accounts one by one held a busy machine's start-up for half a minute.
    shared_hash = await asyncio.to_thread(hash_password, DEMO_PASSWORD)
    created = 0
    for account in missing:
        await create_user(
            session=session,
            username=str(account["username"]),
            password=DEMO_PASSWORD,
            role=str(account["role"]),
            team_code=account.get("team_code"),
            display_name=account.get("display_name"),
            deputy_name=account.get("deputy_name"),
            deputy_delegation=account.get("deputy_delegation"),
            county_code=account.get("county_code"),
            organisation=organisation,
            password_hash=shared_hash,
        )
        created += 1
    return created


async def create_user_cli(
    *,
    settings: ServiceSettings,
    username: str,
    password: str,
    role: str,
    team_code: str | None,
    display_name: str | None,
    deputy_name: str | None,
    deputy_delegation: str | None,
    county_code: str | None = None,
) -> None:
    """``create-user``: a refused password or account is the command's error message, not a traceback."""
    from services.cli.common import CommandError

    try:
        check_password_strength(
            password, min_length=getattr(settings, "password_min_length", 10), username=username
        )
    except WeakPassword as exc:
        raise CommandError(str(exc)) from None
    organisation = load_organisation(getattr(settings, "units_file", None) or DEFAULT_UNITS_FILE)
    try:
        validate_account(
            role=role,
            team_code=team_code,
            deputy_name=deputy_name,
            deputy_delegation=deputy_delegation,
            county_code=county_code,
            organisation=organisation,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    engine = create_engine(settings.database_url)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            await create_user(
                session=session,
                username=username,
                password=password,
                role=role,
                team_code=team_code,
                display_name=display_name,
                deputy_name=deputy_name,
                deputy_delegation=deputy_delegation,
                county_code=county_code,
                organisation=organisation,
            )
    except ValueError as exc:  # the name is taken
        raise CommandError(str(exc)) from None
    finally:
        await engine.dispose()
    log.info("account created", username=username, role=role)
