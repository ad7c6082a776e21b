"""Group commit: concurrent requests' writes share one database transaction.

Each create request used to open its own transaction: a connection checked out, ``BEGIN``,
its statements, ``COMMIT`` (an fsync, run on a worker thread) and the events after it.  On
SQLite the one connection makes the requests queue anyway, so the queue is put to use: the
requests waiting when a transaction starts run one after another inside it, their rows stay
in the session (autoflush is off), and one flush and one ``COMMIT`` write all of them, one
multi-row insert per table.  Measured with ``bench/pipeline.py`` (32 clients creating
complaints): on SQLite about half of intake's CPU per complaint compared with a transaction
each; on PostgreSQL, with a few such transactions at once, about a quarter.

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
(``shared.db.pending_rows``); a unique constraint would otherwise catch the conflict at the
flush, and the redo one by one would answer it right, only more slowly.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.logging import get_logger

log = get_logger(__name__)

_Result = TypeVar("_Result")

WriteUnit = Callable[[AsyncSession], Coroutine[Any, Any, _Result]]


@dataclass
class _Waiting(Generic[_Result]):
    unit: WriteUnit[_Result]
    future: asyncio.Future[_Result]
    context: contextvars.Context
    outcome: list[Any] = field(default_factory=list)


def _retrieve(future: asyncio.Future[Any]) -> None:
    # The request may have stopped waiting (its client went away): its error is not news.
    if not future.cancelled():
        future.exception()


class GroupCommitter:
    """Runs write units (``async def unit(session) -> result``) in shared transactions.

    ``max_group`` bounds how many requests wait for one ``COMMIT``; ``concurrency`` is how
    many transactions may be open at once (1 on SQLite, whose one connection allows no more;
    several on PostgreSQL, whose pool serves the consumers too).
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        max_group: int = 32,
        concurrency: int = 1,
    ) -> None:
        if max_group < 1 or concurrency < 1:
            raise ValueError("max_group and concurrency must be at least 1")
        self._session_factory = session_factory
        self._max_group = max_group
        self._concurrency = concurrency
        self._waiting: deque[_Waiting[Any]] = deque()
        self._drains: set[asyncio.Task[None]] = set()

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
                    else:
                        waiting.future.set_exception(
                            waiting.outcome[1] if waiting.outcome and not waiting.outcome[0] else exc
                        )
                if not isinstance(exc, Exception):
                    raise
                log.warning("group commit failed", requests=len(group), error=str(exc))
                continue
            for waiting in group:
                if waiting.future.done():
                    continue
                succeeded, value = waiting.outcome
                if succeeded:
                    waiting.future.set_result(value)
                else:
                    waiting.future.set_exception(value)

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
                    waiting.outcome[:] = [False, exc]
                else:
                    waiting.outcome[:] = [True, value]

    async def _run_together(self, group: list[_Waiting[Any]]) -> None:
        """All of the group in one transaction, written by one flush at the end.

        Autoflush is off while the units run, so their rows stay in the session until the
        commit: a unit that fails without having written anything is undone by forgetting the
        rows it added.  Anything else (a database error, a statement that wrote, a change to a
        loaded row, a failed commit) spoils the group, which is rolled back and redone.
        """
        wrote = False
        added: list[object] = []

        def note_writes(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            nonlocal wrote
            if statement.lstrip()[:7].upper().startswith(_WRITES):
                wrote = True

        def note_added(_session: Any, row: object) -> None:
            added.append(row)

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
                            wrote = False
                            added.clear()
                            try:
                                value: Any = await asyncio.create_task(
                                    waiting.unit(session), context=waiting.context
                                )
                            except Exception as exc:
                                if (
                                    isinstance(exc, SQLAlchemyError)
                                    or wrote
                                    or sync_session.dirty
                                    or sync_session.deleted
                                ):
                                    raise _GroupSpoiled(f"{type(exc).__name__} after writing") from exc
                                for row in added:
                                    sync_session.expunge(row)
                                waiting.outcome[:] = [False, exc]
                            else:
                                waiting.outcome[:] = [True, value]
                finally:
                    event.remove(connection, "before_cursor_execute", note_writes)
                    event.remove(sync_session, "transient_to_pending", note_added)
        except _GroupSpoiled:
            self._forget_outcomes(group)
            raise
        except SQLAlchemyError as exc:
            # The flush or the commit failed: one request's rows may be at fault.
            self._forget_outcomes(group)
            raise _GroupSpoiled(f"{type(exc).__name__} at commit") from exc

    @staticmethod
    def _forget_outcomes(group: list[_Waiting[Any]]) -> None:
        # Nothing of the shared attempt was committed, and even a clean failure may have
        # depended on what an earlier request of the group did: every request runs again.
        for waiting in group:
            waiting.outcome.clear()


class _GroupSpoiled(Exception):
    """The shared attempt cannot be kept; the group is redone a transaction each."""


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
