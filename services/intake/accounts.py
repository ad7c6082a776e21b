"""Accounts and sign-in.  Outside demo mode no account exists until an administrator creates one."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.models import User
from shared.auth import Principal, Role, hash_password, issue_token, verify_password
from shared.db import create_engine, create_session_factory
from shared.logging import get_logger
from shared.reference import Organisation
from shared.settings import ServiceSettings

log = get_logger(__name__)

DEMO_PASSWORD = "demo"  # noqa: S105 - demo mode only, documented in the README
DEMO_DEPUTY = {"name": "马刚", "delegation": "川汇区代表团"}
# Hashing "demo" once per process keeps seeding a dozen accounts fast.
_demo_hash_cache: dict[str, str] = {}


def principal_of(user: User) -> Principal:
    return Principal(
        username=user.username,
        role=Role(user.role),
        team_code=user.team_code,
        deputy_name=user.deputy_name,
        deputy_delegation=user.deputy_delegation,
        display_name=user.display_name,
    )


async def authenticate(*, session: AsyncSession, username: str, password: str) -> User | None:
    user = (await session.exec(select(User).where(User.username == username))).first()
    if user is None or not user.active:
        # Spend the same time as a real check so a guesser cannot tell which names exist.
        verify_password(password, _dummy_hash())
        return None
    return user if verify_password(password, user.password_hash) else None


def _dummy_hash() -> str:
    if "dummy" not in _demo_hash_cache:
        _demo_hash_cache["dummy"] = hash_password("not-a-password")
    return _demo_hash_cache["dummy"]


def token_for(user: User, *, signing_key: str, ttl_minutes: int) -> str:
    return issue_token(
        principal=principal_of(user), signing_key=signing_key, ttl=timedelta(minutes=ttl_minutes)
    )


def validate_account(
    *, role: str, team_code: str | None, deputy_name: str | None, deputy_delegation: str | None
) -> None:
    allowed = {r.value for r in Role} - {Role.SERVICE.value}
    if role not in allowed:
        raise ValueError(f"role must be one of {sorted(allowed)}")
    if role == Role.INSPECTOR and not team_code:
        raise ValueError("an inspector needs a team code")
    if role == Role.DEPUTY and not (deputy_name and deputy_delegation):
        raise ValueError("a deputy needs the deputy's name and delegation")


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
) -> User:
    validate_account(
        role=role, team_code=team_code, deputy_name=deputy_name, deputy_delegation=deputy_delegation
    )
    if (await session.exec(select(User).where(User.username == username))).first():
        raise ValueError(f"user {username} already exists")
    if password == DEMO_PASSWORD:
        password_hash = _demo_hash_cache.setdefault(DEMO_PASSWORD, hash_password(DEMO_PASSWORD))
    else:
        password_hash = hash_password(password)
    user = User(
        username=username,
        password_hash=password_hash,
        role=role,
        team_code=team_code,
        display_name=display_name,
        deputy_name=deputy_name,
        deputy_delegation=deputy_delegation,
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
    return accounts


async def seed_demo_accounts(*, session: AsyncSession, organisation: Organisation) -> int:
    existing = set((await session.exec(select(User.username))).all())
    created = 0
    for account in demo_accounts(organisation):
        if account["username"] in existing:
            continue
        await create_user(
            session=session,
            username=str(account["username"]),
            password=DEMO_PASSWORD,
            role=str(account["role"]),
            team_code=account.get("team_code"),
            display_name=account.get("display_name"),
            deputy_name=account.get("deputy_name"),
            deputy_delegation=account.get("deputy_delegation"),
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
) -> None:
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
            )
    finally:
        await engine.dispose()
    log.info("account created", username=username, role=role)
