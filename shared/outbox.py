"""Transactional outbox: an event is a row committed with the change it describes.

``record_event`` adds the row in the caller's transaction, so an HTTP 201 or a
handled message and its outgoing event commit together or not at all.  The
``OutboxRelay`` publishes rows in id order with ``Nats-Msg-Id`` set to the event
id, so a row republished after a crash (published, but the relay died before it
marked the row) is dropped by JetStream's duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

from nats.js import JetStreamContext
from sqlalchemy import Index, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import Column, Field, SQLModel, Text, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import CommitSignal, UTCDateTime, batch_insert_sentinel, is_sqlite, new_row, utcnow
from shared.events import Event
from shared.logging import get_logger

log = get_logger(__name__)

HEADER_EVENT_TYPE = "Sv-Event-Type"
HEADER_EVENT_VERSION = "Sv-Event-Version"
HEADER_CASE_ID = "Sv-Case-Id"
HEADER_CORRELATION_ID = "Sv-Correlation-Id"
HEADER_MSG_ID = "Nats-Msg-Id"

# Relays wake as soon as a transaction that wrote outbox rows commits.
outbox_written = CommitSignal("outbox")


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unpublished", "published_at", "id"), batch_insert_sentinel())

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=64, unique=True)
    subject: str = Field(max_length=200)
    event_type: str = Field(max_length=100)
    event_version: int
    case_id: str = Field(max_length=64)
    correlation_id: str | None = Field(default=None, max_length=64)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    published_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0


def record_event(session: AsyncSession, event_: Event) -> None:
    """Add ``event_`` to the session's transaction; it is published after commit."""
    session.add(
        new_row(
            OutboxMessage,
            event_id=event_.event_id,
            subject=event_.subject(),
            event_type=event_.event_type,
            event_version=event_.version,
            case_id=event_.case_id,
            correlation_id=event_.correlation_id,
            payload=event_.model_dump_json(),
        )
    )
    outbox_written.mark(session)


def headers_for(row: OutboxMessage) -> dict[str, str]:
    headers = {
        HEADER_MSG_ID: row.event_id,
        HEADER_EVENT_TYPE: row.event_type,
        HEADER_EVENT_VERSION: str(row.event_version),
        HEADER_CASE_ID: row.case_id,
    }
    if row.correlation_id:
        headers[HEADER_CORRELATION_ID] = row.correlation_id
    return headers


class OutboxRelay:
    """Publishes committed outbox rows; one per service process, several may run at once."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        session_factory: async_sessionmaker[AsyncSession],
        js: JetStreamContext,
        batch_size: int = 200,
        poll_seconds: float = 0.5,
    ) -> None:
        self._session_factory = session_factory
        self._engine = engine
        self._js = js
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        # On PostgreSQL several instances share the table; SKIP LOCKED lets each take its own rows.
        self._lock_rows = not is_sqlite(str(engine.url))
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        outbox_written.register(self._engine, self._wake)
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        outbox_written.unregister(self._engine, self._wake)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                published = await self.publish_pending()
                failures = 0
            except Exception as exc:
                failures += 1
                published = 0
                log.warning("outbox publish failed; will retry", error=str(exc), failures=failures)
                await asyncio.sleep(min(0.2 * 2**failures, 10.0))
            if self._stopping and published == 0:
                return
            if published >= self._batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)
            self._wake.clear()

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; returns how many were published."""
        async with self._session_factory() as session:
            query = (
                select(OutboxMessage)
                .where(OutboxMessage.published_at.is_(None))  # type: ignore[union-attr]
                .order_by(OutboxMessage.id)  # type: ignore[arg-type]
                .limit(self._batch_size)
            )
            if self._lock_rows:
                # PostgreSQL: hold the row locks while publishing so another instance skips these rows;
                # row locks do not block the inserts of the service's own requests.
                async with session.begin():
                    rows = list(await session.exec(query.with_for_update(skip_locked=True)))
                    results = await self._publish(rows)
                    return await self._mark(session, rows, results)
            # SQLite: a transaction there is a database-wide write lock, so never hold one across
            # network round trips.  A single instance owns a SQLite file, so nobody else takes these rows.
            async with session.begin():
                rows = list(await session.exec(query))
            if not rows:
                return 0
            results = await self._publish(rows)
            async with session.begin():
                return await self._mark(session, rows, results)

    async def _publish(self, rows: list[OutboxMessage]) -> list[Any]:
        futures: list[asyncio.Future[Any]] = []
        for row in rows:
            futures.append(
                await self._js.publish_async(row.subject, row.payload.encode(), headers=headers_for(row))
            )
        return list(await asyncio.gather(*futures, return_exceptions=True))

    async def _mark(self, session: AsyncSession, rows: list[OutboxMessage], results: list[Any]) -> int:
        if not rows:
            return 0
        done_ids = [
            row.id for row, result in zip(rows, results, strict=True) if not isinstance(result, BaseException)
        ]
        failed_ids = [
            row.id for row, result in zip(rows, results, strict=True) if isinstance(result, BaseException)
        ]
        if done_ids:
            await session.exec(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(done_ids))  # type: ignore[union-attr]
                .values(published_at=utcnow())
            )
        if failed_ids:
            await session.exec(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(failed_ids))  # type: ignore[union-attr]
                .values(attempts=OutboxMessage.attempts + 1)
            )
            first_error = next(r for r in results if isinstance(r, BaseException))
            log.warning(
                "some outbox rows were not acknowledged", failed=len(failed_ids), error=str(first_error)
            )
        return len(done_ids)
