"""Applying a slice: consecutive events of one consumer handled in one database transaction.

The batching vocabulary: a consumer pulls a *fetch batch* of messages at once and applies it
in *slices* of at most ``CONSUMER_SLICE_SIZE`` events, a transaction each (group commit's
shared transaction is a *write group*, in ``shared.groupcommit``).  One commit for many events
is what makes a consumer keep up (a commit is a disk flush).

A slice is first tried in one go (``SliceApplier.apply``); only when that fails is it redone
with a savepoint per event, which keeps one bad event from undoing the others.  Nothing is
acked before the commit, so a crash between the two means redelivery, and the inbox rows
committed with the effects make the redelivery a no-op.

In one go, the handlers of *batched* events (``shared.bus.batched_writes``) run with autoflush
off and their rows are flushed together, one multi-row insert per table, instead of before
each query.  Such a handler reads only rows of its own matter and never reads back a row it
wrote; an event of a matter already written in the slice flushes first, so it still sees what
the earlier events did.  The batching guard (``shared.batchguard``) checks this when on.  The
rows such a handler adds with ``shared.slice_rows.add_later`` (append-only rows nothing reads back as
objects) wait too, and each of the slice's flushes inserts them after the ORM's rows, one Core
statement per table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import structlog
from nats.aio.msg import Msg
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.batchguard import BatchingRuleBroken, guarded
from shared.db import new_row, table_of, utcnow
from shared.events import Event
from shared.inbox import InboxRecord
from shared.logging import get_logger
from shared.matter_locks import serialise_matters
from shared.outbox import HEADER_CORRELATION_ID
from shared.slice_rows import (
    Prefetched,
    collect_later_rows,
    insert_later_rows,
    keep_loaded_rows_for_the_slice,
    prefetch_rows,
)

log = get_logger(__name__)


class PermanentError(Exception):
    """The event can never be handled (it contradicts what this service knows); do not retry."""


class Handler(Protocol):
    def __call__(self, *, session: AsyncSession, event: Any) -> Awaitable[None]: ...


class Verdict(StrEnum):
    """What becomes of one event of a slice once its transaction ended."""

    HANDLED = "handled"  # acked
    DUPLICATE = "duplicate"  # processed before (the inbox says so): acked
    PERMANENT = "permanent"  # can never succeed: dead-lettered
    RETRY = "retry"  # failed for now: naked with a delay, or parked after its last delivery


@dataclass(frozen=True)
class EventOutcome:
    verdict: Verdict
    error: Exception | None = None

    @classmethod
    def of_failure(cls, error: Exception) -> EventOutcome:
        return cls(Verdict.PERMANENT if isinstance(error, PermanentError) else Verdict.RETRY, error)


HANDLED = EventOutcome(Verdict.HANDLED)
DUPLICATE = EventOutcome(Verdict.DUPLICATE)


@dataclass(frozen=True)
class SliceEvent:
    """An event of the slice, decoded, with the message it came in and its handler."""

    msg: Msg
    event: Event
    handler: Handler


@dataclass(frozen=True)
class _SliceFailure:
    """Why a slice could not be handled in one go, and which event's handler raised (if one did)."""

    index: int | None
    error: Exception


def event_context(msg: Msg, event: Event, *, consumer: str) -> contextlib.AbstractContextManager[Any]:
    """The log context of an event's handling: its matter, its id and its correlation id."""
    return structlog.contextvars.bound_contextvars(
        case_id=event.case_id,
        event_id=event.event_id,
        correlation_id=event.correlation_id or (msg.headers or {}).get(HEADER_CORRELATION_ID),
        consumer=consumer,
    )


class _AlreadyProcessed(Exception):
    pass


@dataclass(frozen=True)
class SliceApplier:
    """Applies the slices of one durable consumer; see the module's docstring."""

    consumer: str
    session_factory: async_sessionmaker[AsyncSession]
    # Events whose handlers are declared ``@batched_writes``.
    batched: frozenset[type[Event]]
    # Tables keyed by the matter's case id (``shared.slice_rows.lookup``) or case id columns
    # (``shared.slice_rows.rows_with``) whose rows the handlers look up.
    prefetch_by_case: tuple[Prefetched, ...]
    guard: bool
    # Each matter's lock (``shared.matter_locks``) before the slice reads anything of it.
    serialise_by_case: bool = False

    async def apply(self, work: Sequence[SliceEvent]) -> list[EventOutcome]:
        """Each event's outcome, in order, once the slice's transaction committed.

        Raises when the commit itself fails (database gone, lock timeout): nothing of the slice
        is committed then, and every event comes back later.
        """
        together = await self._apply_together(work)
        if isinstance(together, _SliceFailure):
            return await self._apply_one_by_one(work, known=together)
        return together

    def _context(self, item: SliceEvent) -> contextlib.AbstractContextManager[Any]:
        return event_context(item.msg, item.event, consumer=self.consumer)

    async def _apply_together(self, work: Sequence[SliceEvent]) -> list[EventOutcome] | _SliceFailure:
        """The common case: every event of the slice handled in one transaction, no savepoints.

        Duplicates are found with one query instead of a failed insert each, and the rows of
        all handlers are flushed together, so the database sees a few multi-row statements
        instead of a dozen small ones per event.  If anything goes wrong the whole transaction
        is rolled back and the failure returned: the slice is then handled event by event.  A
        broken batching rule is raised instead: redone event by event it would pass unnoticed.
        """
        failed_at: int | None = None
        try:
            async with self.session_factory() as session, session.begin():
                keep_loaded_rows_for_the_slice(session)
                collect_later_rows(session)
                outcomes, fresh = await self._record_in_inbox(session, work)
                if self.serialise_by_case:
                    await serialise_matters(session, (item.event.case_id for _, item in fresh))
                for model in self.prefetch_by_case:
                    await prefetch_rows(session, model, {item.event.case_id for _, item in fresh})
                unflushed_cases: set[str] = set()
                for index, item in fresh:
                    failed_at = index
                    await self._handle_in_slice(session, item, unflushed_cases)
                    failed_at = None
                await insert_later_rows(session)
        except BatchingRuleBroken as broken:
            log.error("batching rule broken", consumer=self.consumer, error=str(broken))
            raise
        except Exception as exc:
            # An integrity error may be another instance's inbox row, flushed along with the
            # handler's: only the event-by-event pass can tell, so no event is blamed for it.
            blamed = None if isinstance(exc, IntegrityError) else failed_at
            log.info("slice handled event by event after a failure", consumer=self.consumer, error=repr(exc))
            return _SliceFailure(index=blamed, error=exc)
        return outcomes

    async def _record_in_inbox(
        self, session: AsyncSession, work: Sequence[SliceEvent]
    ) -> tuple[list[EventOutcome], list[tuple[int, SliceEvent]]]:
        """Every event's outcome if its handler succeeds, and the events not processed before."""
        event_ids = [item.event.event_id for item in work]
        processed = set(
            await session.exec(
                select(InboxRecord.event_id).where(
                    InboxRecord.consumer == self.consumer, col(InboxRecord.event_id).in_(event_ids)
                )
            )
        )
        outcomes: list[EventOutcome] = []
        fresh: list[tuple[int, SliceEvent]] = []
        for index, item in enumerate(work):
            if item.event.event_id in processed:
                outcomes.append(DUPLICATE)
                continue
            processed.add(item.event.event_id)
            outcomes.append(HANDLED)
            fresh.append((index, item))
        if fresh:
            # One multi-row insert for the slice's inbox rows, in the same transaction; on the
            # table, since the ORM's bulk insert costs several times the CPU.
            now = utcnow()
            await session.exec(
                insert(table_of(InboxRecord)),
                params=[
                    {
                        "consumer": self.consumer,
                        "event_id": item.event.event_id,
                        "event_type": item.event.event_type,
                        "case_id": item.event.case_id,
                        "processed_at": now,
                    }
                    for _, item in fresh
                ],
            )
        return outcomes, fresh

    async def _handle_in_slice(
        self, session: AsyncSession, item: SliceEvent, unflushed_cases: set[str]
    ) -> None:
        event = item.event
        batched = type(event) in self.batched
        if unflushed_cases and (not batched or event.case_id in unflushed_cases):
            await insert_later_rows(session)
            unflushed_cases.clear()
        with self._context(item):
            if batched:
                with session.no_autoflush, self._guarded(session, event.case_id):
                    await item.handler(session=session, event=event)
                unflushed_cases.add(event.case_id)
            else:
                await item.handler(session=session, event=event)
                # Its writes may concern any matter: the next event sees them all.
                await insert_later_rows(session)

    def _guarded(self, session: AsyncSession, case_id: str) -> contextlib.AbstractContextManager[None]:
        return guarded(session, kind="slice", matter=case_id) if self.guard else contextlib.nullcontext()

    async def _apply_one_by_one(
        self, work: Sequence[SliceEvent], *, known: _SliceFailure
    ) -> list[EventOutcome]:
        outcomes: list[EventOutcome] = []
        async with self.session_factory() as session, session.begin():
            if self.serialise_by_case:
                await serialise_matters(session, (item.event.case_id for item in work))
            for index, item in enumerate(work):
                if index == known.index:
                    # Its handler just failed: running it again would repeat whatever it did outside
                    # the database, and the retry or the dead letter decides its fate anyway.
                    outcomes.append(EventOutcome.of_failure(known.error))
                    continue
                with self._context(item):
                    outcomes.append(await self._apply_alone(session, item))
        return outcomes

    async def _apply_alone(self, session: AsyncSession, item: SliceEvent) -> EventOutcome:
        event = item.event
        try:
            async with session.begin_nested():
                # The inbox row goes first: if this event was processed before (here or by another
                # instance), the unique key says so before the handler touches anything.
                session.add(
                    new_row(
                        InboxRecord,
                        consumer=self.consumer,
                        event_id=event.event_id,
                        event_type=event.event_type,
                        case_id=event.case_id,
                    )
                )
                try:
                    await session.flush()
                except IntegrityError:
                    raise _AlreadyProcessed from None
                await item.handler(session=session, event=event)
                await session.flush()
        except _AlreadyProcessed:
            return DUPLICATE
        except Exception as exc:
            return EventOutcome.of_failure(exc)
        return HANDLED
