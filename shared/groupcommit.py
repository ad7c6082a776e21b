"""Group commit: concurrent requests' writes share one database transaction, a "write group".

Each create request used to open its own transaction: a connection checked out, ``BEGIN``,
its statements, ``COMMIT`` (an fsync, run on a worker thread) and the events after it.  On
SQLite the one connection makes the requests queue anyway, so the queue is put to use: the
requests waiting when a transaction starts form a write group and run one after another inside
it, their rows stay in the session (autoflush is off), and one flush and one ``COMMIT`` write
all of them, one multi-row insert per table.  Measured with ``bench/pipeline.py`` (32 clients
creating complaints): on SQLite about half of intake's CPU per complaint compared with a
transaction each; on PostgreSQL, with a few such transactions at once, about a quarter.

What each request sees does not change:

* its answer is sent only after the shared ``COMMIT`` (a 201 still means committed, and the
  outbox row with it);
* a request that fails before writing anything (a validation error, a conflicting key) has the
  rows it added forgotten and gets its own exception; the others are unaffected;
* anything else (a database error, a statement that wrote directly, a change to a loaded row,
  a failed flush or commit) rolls the group back and runs each request again in a transaction
  of its own, so a bad request still fails alone;
* it runs in a copy of its own context, so its log lines keep its correlation id.

One thing a request must do itself: its queries do not see what the earlier requests of its
group added, since that is not flushed yet.  A request that must see it (is this key already
used? has this person complained before?) also looks at the session's pending rows
(``shared.slice_rows.pending_rows``); a unique constraint would otherwise catch the conflict at the
flush, and the redo one by one would answer it right, only more slowly.  The batching guard
(``shared.batchguard``, on in the tests) checks this rule.

Group commit is built only by a service that uses it (intake's create endpoints), through
``WriteGroups``: its ``open``/``close`` are the app's start-up and shutdown hooks, and
``get_write_groups`` is the FastAPI dependency that hands the committer to an endpoint.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fastapi import Request
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.batchguard import BatchingRuleBroken, guard_enabled_by_environment, guarded
from shared.db import is_sqlite
from shared.logging import get_logger

if TYPE_CHECKING:
    from shared.app import Runtime
    from shared.settings import ServiceSettings

log = get_logger(__name__)

_Result = TypeVar("_Result")

WriteUnit = Callable[[AsyncSession], Coroutine[Any, Any, _Result]]

POSTGRES_WRITE_TRANSACTIONS = 4
"""Write groups open at once on PostgreSQL, whose pool also serves the consumers and the relay:
a few carried the most complaints there (measured with bench/pipeline.py)."""


@dataclass(frozen=True)
class Succeeded(Generic[_Result]):
    """A request's unit returned ``value``; it is answered once its transaction committed."""

    value: _Result


@dataclass(frozen=True)
class Failed:
    """A request's unit raised ``error``, which is its answer."""

    error: Exception


Outcome = Succeeded[Any] | Failed


@dataclass
class _Waiting(Generic[_Result]):
    unit: WriteUnit[_Result]
    future: asyncio.Future[_Result]
    context: contextvars.Context
    # Set when the unit has run in the current attempt; forgotten when the attempt is undone.
    outcome: Outcome | None = None


def _retrieve(future: asyncio.Future[Any]) -> None:
    # The request may have stopped waiting (its client went away): its error is not news.
    if not future.cancelled():
        future.exception()


class GroupCommitter:
    """Runs write units (``async def unit(session) -> result``) in shared transactions.

    ``max_group`` bounds a write group (how many requests wait for one ``COMMIT``);
    ``concurrency`` is how many write groups may be open at once (1 on SQLite, whose one
    connection allows no more; several on PostgreSQL, whose pool serves the consumers too).
    ``guard`` checks the batching rules (``shared.batchguard``); None: as ``BATCHING_GUARD`` says.
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        max_group: int = 32,
        concurrency: int = 1,
        guard: bool | None = None,
    ) -> None:
        if max_group < 1 or concurrency < 1:
            raise ValueError("max_group and concurrency must be at least 1")
        self._session_factory = session_factory
        self._max_group = max_group
        self._concurrency = concurrency
        self._guard = guard_enabled_by_environment() if guard is None else guard
        self._waiting: deque[_Waiting[Any]] = deque()
        self._drains: set[asyncio.Task[None]] = set()

    @classmethod
    def for_settings(
        cls, session_factory: async_sessionmaker[AsyncSession], settings: ServiceSettings
    ) -> GroupCommitter:
        return cls(
            session_factory,
            max_group=settings.write_group_size,
            concurrency=1 if is_sqlite(settings.database_url) else POSTGRES_WRITE_TRANSACTIONS,
            guard=settings.batching_guard,
        )

    async def run(self, unit: WriteUnit[_Result]) -> _Result:
        """Run ``unit`` in a transaction, maybe shared; return once that transaction committed."""
        future: asyncio.Future[_Result] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._waiting.append(_Waiting(unit=unit, future=future, context=contextvars.copy_context()))
        if len(self._drains) < self._concurrency:
            self._drains.add(asyncio.create_task(self._drain(), name="group-commit"))
        # shield: a request whose client went away still has its unit run (or not) with the
        # group; cancelling the await only stops waiting for the answer.
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Wait for the transactions already under way (at shutdown, before the engine goes)."""
        while self._drains:
            await asyncio.gather(*self._drains, return_exceptions=True)

    async def _drain(self) -> None:
        try:
            await self._drain_queue()
        finally:
            # In the same step as the last look at the queue: a request arriving after it must
            # start a transaction of its own.  Left to the task's done-callback (a turn of the
            # event loop later), a request arriving in between found this one still counted as
            # running and waited for ever.
            current = asyncio.current_task()
            assert current is not None
            self._drains.discard(current)

    async def _drain_queue(self) -> None:
        while self._waiting:
            group = [self._waiting.popleft() for _ in range(min(self._max_group, len(self._waiting)))]
            try:
                await self._run_group(group)
            except BaseException as exc:
                # BEGIN or COMMIT failed (or the service is stopping): nothing of the group is
                # committed, so every request in it fails, with its own error if it had one.
                for waiting in group:
                    if waiting.future.done():
                        continue
                    if not isinstance(exc, Exception):
                        waiting.future.cancel()
                    elif isinstance(waiting.outcome, Failed):
                        waiting.future.set_exception(waiting.outcome.error)
                    else:
                        waiting.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                log.warning("group commit failed", requests=len(group), error=str(exc))
                continue
            for waiting in group:
                if waiting.future.done():
                    continue
                match waiting.outcome:
                    case Succeeded(value=value):
                        waiting.future.set_result(value)
                    case Failed(error=error):
                        waiting.future.set_exception(error)
                    case None:
                        raise AssertionError("a committed write group left a request without an outcome")

    async def _run_group(self, group: list[_Waiting[Any]]) -> None:
        if len(group) > 1:
            try:
                await self._run_together(group)
                return
            except _GroupSpoiled as spoiled:
                log.info("group commit redone one by one", requests=len(group), reason=str(spoiled))
        # Alone, or after a failure that could not be undone: a transaction each, and a
        # request's failure is its transaction's.
        for waiting in group:
            async with self._session_factory() as session:
                try:
                    async with session.begin():
                        value: Any = await asyncio.create_task(waiting.unit(session), context=waiting.context)
                except Exception as exc:
                    waiting.outcome = Failed(exc)
                else:
                    waiting.outcome = Succeeded(value)

    async def _run_together(self, group: list[_Waiting[Any]]) -> None:
        """All of the write group in one transaction, written by one flush at the end.

        Autoflush is off while the units run, so their rows stay in the session until the
        commit: a unit that fails without having written anything is undone by forgetting the
        rows it added.  Anything else (a database error, a statement that wrote, a change to a
        loaded row, a failed commit) spoils the group, which is rolled back and redone.  A
        broken batching rule is a bug, not a spoiled group: redone alone (autoflush on) it
        would pass unnoticed, so it fails the whole group.
        """
        unit_writes = _UnitWrites()

        def note_writes(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip()[:7].upper().startswith(_WRITES):
                unit_writes.wrote = True

        def note_added(_session: Any, row: object) -> None:
            unit_writes.added.append(row)

        try:
            async with self._session_factory() as session, session.begin():
                sync_session = session.sync_session
                connection = (await session.connection()).sync_connection
                assert connection is not None
                event.listen(connection, "before_cursor_execute", note_writes)
                event.listen(sync_session, "transient_to_pending", note_added)
                try:
                    with sync_session.no_autoflush:
                        for waiting in group:
                            unit_writes.wrote = False
                            unit_writes.added.clear()
                            await self._run_unit(session, waiting, unit_writes)
                finally:
                    event.remove(connection, "before_cursor_execute", note_writes)
                    event.remove(sync_session, "transient_to_pending", note_added)
        except (_GroupSpoiled, BatchingRuleBroken):
            self._forget_outcomes(group)
            raise
        except SQLAlchemyError as exc:
            # The flush or the commit failed: one request's rows may be at fault.
            self._forget_outcomes(group)
            raise _GroupSpoiled(f"{type(exc).__name__} at commit") from exc

    async def _run_unit(
        self,
        session: AsyncSession,
        waiting: _Waiting[Any],
        unit_writes: _UnitWrites,
    ) -> None:
        """One request of a shared transaction; its clean failure forgets the rows it added."""
        sync_session = session.sync_session
        try:
            if self._guard:
                with guarded(session, kind="write group"):
                    value: Any = await asyncio.create_task(waiting.unit(session), context=waiting.context)
            else:
                value = await asyncio.create_task(waiting.unit(session), context=waiting.context)
        except BatchingRuleBroken:
            raise
        except Exception as exc:
            if (
                isinstance(exc, SQLAlchemyError)
                or unit_writes.wrote
                or sync_session.dirty
                or sync_session.deleted
            ):
                raise _GroupSpoiled(f"{type(exc).__name__} after writing") from exc
            for row in unit_writes.added:
                sync_session.expunge(row)
            waiting.outcome = Failed(exc)
        else:
            waiting.outcome = Succeeded(value)

    @staticmethod
    def _forget_outcomes(group: list[_Waiting[Any]]) -> None:
        # Nothing of the shared attempt was committed, and even a clean failure may have
        # depended on what an earlier request of the group did: every request runs again.
        for waiting in group:
            waiting.outcome = None


@dataclass
class _UnitWrites:
    """What the unit under way wrote: a statement that wrote, and the rows it added."""

    wrote: bool = False
    added: list[object] = field(default_factory=list)


class _GroupSpoiled(Exception):
    """The shared attempt cannot be kept; the group is redone a transaction each."""


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class WriteGroups:
    """The group commit of one service, built at its start-up and closed at its shutdown.

    Only a service with endpoints that use it builds one: ``open`` and ``close`` go into
    ``create_service_app``'s ``on_startup`` and ``on_shutdown``, and the instance into
    ``app.state.write_groups``, where ``get_write_groups`` finds it.
    """

    def __init__(self) -> None:
        self._committer: GroupCommitter | None = None

    @property
    def committer(self) -> GroupCommitter:
        assert self._committer is not None, "the service has not started"
        return self._committer

    async def open(self, runtime: Runtime) -> None:
        self._committer = GroupCommitter.for_settings(runtime.session_factory, runtime.settings)

    async def close(self, runtime: Runtime) -> None:
        if self._committer is not None:
            await self._committer.close()


async def get_write_groups(request: Request) -> GroupCommitter:
    """The FastAPI dependency of an endpoint that writes through group commit."""
    write_groups: WriteGroups = request.app.state.write_groups
    return write_groups.committer
