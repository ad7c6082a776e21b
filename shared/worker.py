"""The one background loop every service uses: the outbox relay, consumers, schedulers, housekeeping.

A worker runs ``step()`` again and again.  A step does one bounded unit of work and says
whether there may be more to do at once; otherwise the worker sleeps until its idle time
passes or a commit wakes it.  A step that raises is logged and counted, and the next one
waits an exponentially growing back-off; a step that outlives its timeout is cancelled
and counted the same way, so one hung network call never freezes the loop.  ``stop``
lets the current step finish for half its timeout, then cancels it: it always returns in
time.  ``health`` tells the app's watchdog and ``/readyz`` whether the loop is stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import or_
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import CommitSignal, utcnow
from shared.logging import get_logger

log = get_logger(__name__)

# How much longer than its own timeout a step may run before the worker counts as stuck: a
# cancelled step normally ends at once, so one still running past this ignored its cancellation.
STUCK_GRACE_SECONDS = 1.0


class StepTimeoutError(TimeoutError):
    """A step ran longer than the worker's step timeout and was cancelled."""


@dataclass(frozen=True)
class WorkerHealth:
    name: str
    running: bool
    last_progress_at: datetime | None
    consecutive_failures: int
    last_error: str | None
    stuck: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "last_progress_at": self.last_progress_at.isoformat() if self.last_progress_at else None,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "stuck": self.stuck,
        }


class BackgroundWorker:
    def __init__(
        self,
        *,
        name: str,
        step: Callable[[], Awaitable[bool]],
        idle_seconds: float,
        step_timeout: float,
        wake_signal: CommitSignal | None = None,
        engine: AsyncEngine | None = None,
        backoff_base: float = 0.2,
        backoff_max: float = 10.0,
        finish_on_stop: bool = True,
    ) -> None:
        if (wake_signal is None) != (engine is None):
            raise ValueError("a wake signal needs the engine whose commits it watches, and vice versa")
        self.name = name
        self.step_timeout = step_timeout
        # A step running longer than this is stuck (the app's watchdog restarts the worker).
        self.stuck_after = step_timeout + STUCK_GRACE_SECONDS
        self._step = step
        self._idle_seconds = idle_seconds
        self._wake_signal = wake_signal
        self._engine = engine
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        # False for a worker whose step only waits for news (a watch): a stop cancels it at once
        # instead of letting the wait run out.
        self._finish_on_stop = finish_on_stop
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._step_started: float | None = None
        self._last_progress_at: datetime | None = None
        self._failures = 0
        self._last_error: str | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is not None:
            return
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._step_started = None
        if self._wake_signal is not None and self._engine is not None:
            self._wake_signal.register(self._engine, self._wake)
        self._task = asyncio.create_task(self._run(), name=f"worker-{self.name}")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, *, timeout: float) -> None:  # noqa: ASYNC109 - cancels its own task at the bound
        """Finish for half of ``timeout``, then cancel; returns within ``timeout`` whatever the step does.

        Finishing means the current step, or one last step if the worker was idle or backing off,
        and the steps after it while they say there is more: a relay publishes what was committed
        just before the shutdown.
        """
        task = self._task
        self._stopping.set()
        self._wake.set()
        if self._wake_signal is not None and self._engine is not None:
            self._wake_signal.unregister(self._engine, self._wake)
        if task is None:
            return
        deadline = time.monotonic() + timeout
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout / 2 if self._finish_on_stop else 0)
            if not done:
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=max(deadline - time.monotonic(), 0.0))
        finally:
            # Until now the worker still runs its step, and health says so (stuck, maybe).
            if self._task is task:
                self._task = None
                self._step_started = None
        if not done:
            log.error("background worker did not stop in time; abandoned", worker=self.name, timeout=timeout)

    async def restart(self, *, timeout: float) -> None:  # noqa: ASYNC109 - passed on to stop
        await self.stop(timeout=timeout)
        self.start()

    @property
    def health(self) -> WorkerHealth:
        return WorkerHealth(
            name=self.name,
            running=self.running,
            last_progress_at=self._last_progress_at,
            consecutive_failures=self._failures,
            last_error=self._last_error,
            stuck=self._is_stuck(),
        )

    def _is_stuck(self) -> bool:
        task = self._task
        if task is None:
            return False
        if task.done():
            return not self._stopping.is_set()  # the loop ended although nobody stopped it
        started = self._step_started
        return started is not None and time.monotonic() - started > self.stuck_after

    async def _run(self) -> None:
        stopping, wake = self._stopping, self._wake
        while True:
            wake.clear()
            try:
                more = await self._run_step()
            except Exception as exc:
                self._failures += 1
                self._last_error = repr(exc)
                log.warning(
                    "background step failed; will retry",
                    worker=self.name,
                    error=repr(exc),
                    failures=self._failures,
                )
                if stopping.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=self._backoff())
                continue
            self._failures = 0
            self._last_error = None
            self._last_progress_at = utcnow()
            if more:
                await asyncio.sleep(0)  # a step that never waited would otherwise starve everything else
                continue
            if stopping.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=self._idle_seconds)

    async def _run_step(self) -> bool:
        self._step_started = time.monotonic()
        deadline = asyncio.timeout(self.step_timeout)
        try:
            async with deadline:
                return await self._step()
        except TimeoutError as exc:
            if deadline.expired():
                raise StepTimeoutError(f"step did not finish within {self.step_timeout} s") from exc
            raise
        finally:
            self._step_started = None

    def _backoff(self) -> float:
        return float(min(self._backoff_base * 2 ** (self._failures - 1), self._backoff_max))


class Leased(Protocol):
    """A row a worker takes for a while: until ``lease_until`` no other instance takes it."""

    lease_until: datetime | None


L = TypeVar("L", bound=Leased)


async def lease_rows(
    sessions: Callable[[], AsyncSession],
    model: type[L],
    *where: Any,
    order_by: Any,
    limit: int,
    lease: timedelta,
    now: datetime | None = None,
    lock_rows: bool = True,
) -> list[L]:
    """Up to ``limit`` rows matching ``where`` whose lease is free, leased to the caller.

    The lease is committed in a transaction of its own before the caller works on a row: only a
    committed lease keeps other instances off it while the work (a network call) runs.
    ``lock_rows`` (PostgreSQL): rows another instance is leasing right now are skipped, not waited
    for; SQLite has one writer and no row locks.  A crashed worker's lease runs out, and the row is due again.
    """
    now = utcnow() if now is None else now
    lease_free = or_(col(model.lease_until).is_(None), col(model.lease_until) < now)
    query = select(model).where(*where, lease_free).order_by(order_by).limit(limit)
    if lock_rows:
        query = query.with_for_update(skip_locked=True)
    async with sessions() as session, session.begin():
        rows = list(await session.exec(query))
        for row in rows:
            row.lease_until = now + lease
            session.add(row)
    return rows
