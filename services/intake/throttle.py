"""The brake on password guessing: back-off per account, a cap per address, a lock a supervisor lifts.

Counted in intake's database, so every intake instance sees the same counts.  An account's
first ``free_failures`` wrong passwords cost nothing; after that each try must wait a doubling
time (429 with ``Retry-After``), and after ``lock_after`` wrong passwords in a row the account is
locked until a supervisor unlocks it.  Names that do not exist are counted and locked alike, so
the answers tell a guesser nothing about which accounts exist.  An address that sent
``address_failures`` wrong passwords within a window gets 429 for anything until the window ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.models import SignInThrottle


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = 3
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    lock_after: int = 10
    address_failures: int = 30
    address_window_seconds: float = 900.0

    @classmethod
    def from_settings(cls, settings: Any) -> ThrottlePolicy:
        return cls(
            free_failures=settings.sign_in_free_failures,
            backoff_base_seconds=settings.sign_in_backoff_base_seconds,
            backoff_max_seconds=settings.sign_in_backoff_max_seconds,
            lock_after=settings.sign_in_lock_after,
            address_failures=settings.sign_in_address_failures,
            address_window_seconds=settings.sign_in_address_window_seconds,
        )

    def backoff(self, failures: int) -> timedelta:
        """The wait after ``failures`` wrong passwords in a row (none within the free ones)."""
        beyond = failures - self.free_failures
        if beyond < 0:
            return timedelta(0)
        seconds = self.backoff_base_seconds * 2 ** min(beyond, 30)
        return timedelta(seconds=min(seconds, self.backoff_max_seconds))


class SignInRefused(Exception):
    """The attempt is refused before the password is looked at."""


class TooManyAttempts(SignInRefused):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class AccountLocked(SignInRefused):
    pass


def account_key(username: str) -> str:
    return f"account:{username}"


def address_key(address: str) -> str:
    return f"address:{address}"


async def check(
    *, session: AsyncSession, policy: ThrottlePolicy, username: str, address: str, now: datetime
) -> None:
    """Raise ``AccountLocked`` or ``TooManyAttempts`` when this attempt may not be tried now."""
    account = await session.get(SignInThrottle, account_key(username))
    if account is not None and account.locked_at is not None:
        raise AccountLocked(username)
    waits: list[float] = []
    if account is not None and account.blocked_until is not None and account.blocked_until > now:
        waits.append((account.blocked_until - now).total_seconds())
    by_address = await session.get(SignInThrottle, address_key(address))
    if by_address is not None and by_address.failures >= policy.address_failures:
        window_end = by_address.window_started_at + timedelta(seconds=policy.address_window_seconds)
        if window_end > now:
            waits.append((window_end - now).total_seconds())
    if waits:
        raise TooManyAttempts(max(1, math.ceil(max(waits))))


async def record_failure(
    *, session: AsyncSession, policy: ThrottlePolicy, username: str, address: str, now: datetime
) -> bool:
    """Count a wrong password against the account and the address; True when it locked the account."""
    account = await _row(session, account_key(username), now)
    account.failures += 1
    wait = policy.backoff(account.failures)
    account.blocked_until = now + wait if wait else None
    locked = account.failures >= policy.lock_after and account.locked_at is None
    if locked:
        account.locked_at = now
    by_address = await _row(session, address_key(address), now)
    if by_address.window_started_at + timedelta(seconds=policy.address_window_seconds) <= now:
        by_address.failures, by_address.window_started_at = 0, now
    by_address.failures += 1
    return locked


async def record_success(*, session: AsyncSession, username: str) -> None:
    """A right password ends the account's run of wrong ones (the address keeps its count)."""
    account = await session.get(SignInThrottle, account_key(username))
    if account is not None:
        await session.delete(account)


async def unlock(*, session: AsyncSession, username: str) -> bool:
    """Forget the account's wrong passwords and lock; True when it was locked."""
    account = await session.get(SignInThrottle, account_key(username))
    if account is None:
        return False
    was_locked = account.locked_at is not None
    await session.delete(account)
    return was_locked


async def _row(session: AsyncSession, key: str, now: datetime) -> SignInThrottle:
    row = await session.get(SignInThrottle, key)
    if row is None:
        row = SignInThrottle(key=key, failures=0, window_started_at=now)
        session.add(row)
    return row


def client_address(*, peer: str | None, forwarded_for: str | None, trusted_hops: int) -> str:
    """The client's address: the peer, or the entry ``trusted_hops`` proxies back in X-Forwarded-For."""
    if trusted_hops and forwarded_for:
        hops = [part.strip() for part in forwarded_for.split(",") if part.strip()]
        if len(hops) >= trusted_hops:
            return hops[-trusted_hops][:100]
    return (peer or "unknown")[:100]
