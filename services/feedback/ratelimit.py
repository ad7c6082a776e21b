"""Limits on the public query, shared by every feedback instance: a guesser is slowed, the holder is not.

Each public request that names a tracking code and a query secret (the lookup, the rating, the
review request) goes through three steps, in this order:

1. **The client address.** When it has used its allowance of failed attempts, the answer is 429
   before the secret is even compared, so a blocked guesser cannot learn that a guess was right.
   A person who typed nothing wrong never counts here, so the page can be refreshed at will.
2. **The secret.** The right secret for the code passes, whatever others did to that code, and is
   never counted: one guesser cannot lock the real complainant out.
3. **A failure** (a wrong secret, or an unknown code: the two answer alike) counts against the
   address and against the code; past either allowance the answer is 429 instead of 404.

The right secret must pass, so the per-code step cannot hide which guess is right; what makes
guessing hopeless is the secret's length and the per-address allowance. The per-code step holds a
guesser spread over many addresses to the code's allowance of plain answers, and tells every client
of that code when to come back.

The counts live in the feedback database (``feedback_attempt_counter``), so every instance and
every restart sees the same ones. Each key is a leaky counter stored as one moment, ``free_at``:
a failure adds ``step = window / allowance`` seconds to ``max(free_at, now)``, so
``(free_at - now) / step`` failures are still counted at ``now`` and one more fits while
``free_at - now <= window``. An attempt's two counts are one transaction that locks both rows
before it reads the clock: instances counting at the same moment never lose a count, and each count
is measured at the moment it is made, so a burst gets exactly its allowance however long its
requests queued (a moment read before the wait would make every earlier count look undrained).
Unlike fixed windows, a burst astride a window's end gets no double allowance. Refused failures
count too, so hammering keeps a guesser out; but a key never owes more than one window past its
allowance, so an address is free again a window after it stops. Rows whose moment has passed count
nothing and are deleted in bounded batches. The keys are keyed hashes: the table holds no address
or code.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.models import AttemptCounter
from shared.db import built_once, table_of
from shared.errors import DomainError

TOO_MANY = "查询过于频繁，请稍后再试"
# Floating-point slack when a failure, or the wait for one, lands exactly on the window's end.
_EPSILON = 1e-6


class TooManyAttempts(DomainError):
    """429 with the seconds until one more attempt fits; answered by the app like every domain error."""

    status_code = 429

    def __init__(self, *, retry_after: float) -> None:
        super().__init__(
            TOO_MANY,
            headers={"Retry-After": str(max(1, math.ceil(retry_after))), "Cache-Control": "no-store"},
        )
        self.retry_after = retry_after


@dataclass(frozen=True)
class Allowance:
    """``failures`` failed attempts per ``window_seconds``; 0 failures: unlimited."""

    failures: int
    window_seconds: float

    @property
    def limited(self) -> bool:
        return self.failures > 0

    @property
    def step(self) -> float:
        return self.window_seconds / self.failures

    def add_failure(self, *, free_at: float, now: float) -> float:
        """The counter's moment with one more failure, never more than one window past the allowance."""
        return min(max(free_at, now) + self.step, now + 2 * self.window_seconds)

    def fits(self, *, free_at: float, now: float) -> bool:
        """Whether a counter that reached ``free_at`` by adding a failure stayed within the allowance."""
        return free_at - now <= self.window_seconds + _EPSILON

    def wait(self, *, free_at: float, now: float) -> float:
        """Seconds until one more failure fits a counter at ``free_at``; 0.0 when it fits now."""
        wait = free_at - now - self.window_seconds + self.step
        return wait if wait > _EPSILON else 0.0


class PublicLimiter:
    """The per-address and per-code allowances of failed attempts, kept in the feedback database."""

    def __init__(
        self,
        *,
        per_address: Allowance,
        per_code: Allowance,
        key_secret: str,
        trusted_proxy_hops: int = 0,
        clock: Callable[[], float] = time.time,
        purge_every_seconds: float = 60.0,
        purge_batch: int = 1000,
    ) -> None:
        self.per_address = per_address
        self.per_code = per_code
        self.trusted_proxy_hops = trusted_proxy_hops
        # Wall-clock time, not monotonic: the moments are compared across instances and restarts.
        self.clock = clock
        self.purge_every_seconds = purge_every_seconds
        self.purge_batch = purge_batch
        self._key_secret = key_secret.encode()
        self._purged_at = -math.inf

    def client_address(self, *, peer: str | None, forwarded_for: str | None) -> str:
        """The address to count: the peer, or what the outermost trusted proxy saw."""
        peer = peer or "unknown"
        if self.trusted_proxy_hops <= 0:
            return peer
        # Each trusted proxy appends the address it received from; entries further left are client-supplied
        # and could be forged, so take the one our outermost trusted proxy saw.
        forwarded = [p.strip() for p in (forwarded_for or "").split(",") if p.strip()]
        if len(forwarded) >= self.trusted_proxy_hops:
            return forwarded[-self.trusted_proxy_hops]
        return forwarded[0] if forwarded else peer

    def key(self, *, scope: str, value: str) -> str:
        return hmac.new(self._key_secret, f"{scope}\0{value}".encode(), hashlib.sha256).hexdigest()

    def code_key(self, tracking_code: str) -> str:
        # Normalised as the lookup normalises it, so case and spaces do not give fresh allowances.
        return self.key(scope="code", value=tracking_code.strip().upper())

    def address_key(self, address: str) -> str:
        return self.key(scope="address", value=address)

    async def check_address(self, *, session: AsyncSession, address: str) -> None:
        """Step 1: raise ``TooManyAttempts`` when the address has no failed attempt left.

        A read in the caller's session; it counts nothing, so a request that then gives the right
        secret leaves no trace.
        """
        if not self.per_address.limited:
            return
        query = select(AttemptCounter.free_at).where(AttemptCounter.key == self.address_key(address))
        free_at = (await session.exec(query)).first()
        if free_at is None:
            return
        wait = self.per_address.wait(free_at=free_at, now=self.clock())
        if wait > 0:
            raise TooManyAttempts(retry_after=wait)

    async def count_failure(self, *, engine: AsyncEngine, address: str, tracking_code: str) -> None:
        """Step 3: count a failed attempt against the address and the code; 429 past either allowance.

        Both counts are one short transaction, kept whatever the request does next, so a burst's
        attempts are counted one after the other in the same order for the address and the code:
        an attempt the address refuses never takes one of the code's plain answers from another.
        The rows are locked address first, then code (the two sets of keys never meet), so two
        instances counting the same keys queue, never deadlock. The caller must hold no transaction
        on ``engine``'s database: on SQLite that would be the write lock these counts wait for.
        """
        counted = [
            (allowance, key)
            for allowance, key in (
                (self.per_address, self.address_key(address)),
                (self.per_code, self.code_key(tracking_code)),
            )
            if allowance.limited
        ]
        waits = []
        async with engine.begin() as conn:
            held = [await _lock_counter(conn=conn, key=key) for _, key in counted]
            # Read once the rows are ours: the time spent waiting for them must not count as undrained.
            now = self.clock()
            for (allowance, key), free_at in zip(counted, held, strict=True):
                free_at = allowance.add_failure(free_at=free_at, now=now)
                await conn.execute(_set_free_at(), {"counter_key": key, "counted_until": free_at})
                if not allowance.fits(free_at=free_at, now=now):
                    waits.append(allowance.wait(free_at=free_at, now=now))
        await self._purge_now_and_then(engine=engine, now=now)
        if waits:
            raise TooManyAttempts(retry_after=max(waits))

    async def _purge_now_and_then(self, *, engine: AsyncEngine, now: float) -> None:
        # Once a while per instance, a bounded batch: a failure never waits on a long delete. A full
        # batch means more are waiting, so the next failure purges again.
        if now - self._purged_at < self.purge_every_seconds:
            return
        self._purged_at = now
        if await purge(engine=engine, now=now, batch=self.purge_batch) >= self.purge_batch:
            self._purged_at = -math.inf


def _upsert(dialect: str) -> Any:
    if dialect == "sqlite":
        return sqlite.insert
    if dialect == "postgresql":
        return postgresql.insert
    raise RuntimeError(f"no atomic upsert for the {dialect} database")


async def _lock_counter(*, conn: AsyncConnection, key: str) -> float:
    """Lock the key's row for the transaction, creating it counting nothing; its ``free_at``.

    An UPSERT that changes nothing: unlike ``SELECT ... FOR UPDATE`` it also holds a key that has
    no row yet, and a purge cannot delete the row between the read and the write. On SQLite the
    transaction's write lock (``BEGIN IMMEDIATE``) already holds everything.
    """
    table = table_of(AttemptCounter)
    statement = (
        _upsert(conn.dialect.name)(table)
        .values(key=key, free_at=0.0)
        .on_conflict_do_update(index_elements=[table.c.key], set_={"free_at": table.c.free_at})
        .returning(table.c.free_at)
    )
    free_at: float = (await conn.execute(statement)).scalar_one()
    return free_at


@built_once
def _set_free_at() -> sa.Update:
    table = table_of(AttemptCounter)
    return (
        sa.update(table)
        .where(table.c.key == sa.bindparam("counter_key"))
        .values(free_at=sa.bindparam("counted_until"))
    )


async def purge(*, engine: AsyncEngine, now: float, batch: int) -> int:
    """Delete up to ``batch`` rows that count nothing any more; how many went."""
    table = table_of(AttemptCounter)
    # Rows being counted are skipped, not waited for: a purge locking rows in its own order while a
    # count holds one of them and waits for another would deadlock (PostgreSQL; SQLite ignores it).
    stale = sa.select(table.c.key).where(table.c.free_at < now).limit(batch).with_for_update(skip_locked=True)
    # The outer condition again: a row counted again since the inner select picked it stays.
    statement = sa.delete(table).where(table.c.key.in_(stale), table.c.free_at < now)
    async with engine.begin() as conn:
        result = await conn.execute(statement)
    return int(result.rowcount or 0)
