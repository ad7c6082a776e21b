"""Transactional outbox: an event is a row committed with the change it describes.

``record_event`` adds the row in the caller's transaction, so an HTTP 201 or a
handled message and its outgoing event commit together or not at all.  The
``OutboxRelay`` publishes rows in id order with ``Nats-Msg-Id`` set to the event
id, so a row republished after a crash (published, but the relay died before it
marked the row) is dropped by JetStream's duplicate window.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy import Index, or_
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlmodel import Column, Field, SQLModel, Text, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import (
    SQLITE_BUSY_TIMEOUT_MS,
    CommitSignal,
    UTCDateTime,
    batch_insert_sentinel,
    built_once,
    is_sqlite,
    new_row,
    table_of,
    utcnow,
)
from shared.events import Event
from shared.logging import get_logger
from shared.metrics import count_outbox
from shared.slice_rows import add_later
from shared.worker import BackgroundWorker

log = get_logger(__name__)

HEADER_EVENT_TYPE = "Sv-Event-Type"
HEADER_EVENT_VERSION = "Sv-Event-Version"
HEADER_CASE_ID = "Sv-Case-Id"
HEADER_CORRELATION_ID = "Sv-Correlation-Id"
HEADER_MSG_ID = "Nats-Msg-Id"
# The service that published the event; a consumer parks an event whose producer is not the
# owner of its type (``Event.owner``), behind NATS's own publish permissions (shared.natsauth).
HEADER_PRODUCER = "Sv-Producer"

# Relays wake as soon as a transaction that wrote outbox rows commits.
outbox_written = CommitSignal("outbox")

# How long a transaction may wait for a lock (SQLite's busy timeout; about PostgreSQL's pool wait).
DATABASE_WAIT_SECONDS = SQLITE_BUSY_TIMEOUT_MS / 1000


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
    # PostgreSQL: until when a relay instance has taken the row to publish it (the others skip it).
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


def record_event(session: AsyncSession, event_: Event) -> None:
    """Add ``event_`` to the session's transaction; it is published after commit.

    Nothing reads an outbox row back as an object, so in a consumer's slice it waits for the
    slice's one insert per table (``add_later``) instead of the unit of work.
    """
    add_later(
        session,
        new_row(
            OutboxMessage,
            event_id=event_.event_id,
            subject=event_.subject(),
            event_type=event_.event_type,
            event_version=event_.version,
            case_id=event_.case_id,
            correlation_id=event_.correlation_id,
            payload=event_.model_dump_json(),
        ),
    )
    outbox_written.mark(session)


def headers_for(row: OutboxMessage | Row[Any], *, producer: str | None = None) -> dict[str, str]:
    headers = {
        HEADER_MSG_ID: row.event_id,
        HEADER_EVENT_TYPE: row.event_type,
        HEADER_EVENT_VERSION: str(row.event_version),
        HEADER_CASE_ID: row.case_id,
    }
    if producer:
        headers[HEADER_PRODUCER] = producer
    if row.correlation_id:
        headers[HEADER_CORRELATION_ID] = row.correlation_id
    return headers


class OutboxRelay:
    """Publishes committed outbox rows; one per service process, several may run at once.

    No wait is unbounded: each batch's acknowledgements are awaited for ``publish_timeout``
    and a row whose ack did not come counts as failed and is published again later (the
    ``Nats-Msg-Id`` duplicate window drops a copy that did arrive).  No transaction is open
    while the network is awaited.  On PostgreSQL several instances share the table: a short
    transaction leases a batch (``lease_until``) so the others skip it, and a second one marks
    what was acknowledged.  Given the connection (``nc``), it publishes nothing while that is
    disconnected.  ``producer``: the service's name, sent in ``Sv-Producer``.
    """

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        session_factory: async_sessionmaker[AsyncSession],
        js: JetStreamContext,
        batch_size: int = 200,
        poll_seconds: float = 0.5,
        publish_timeout: float = 5.0,
        lease_seconds: float = 30.0,
        lease_rows: bool | None = None,
        nc: NatsClient | None = None,
        producer: str | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._js = js
        self._nc = nc
        self._producer = producer
        self._batch_size = batch_size
        self._publish_timeout = publish_timeout
        self._lease = timedelta(seconds=lease_seconds)
        # By default PostgreSQL leases (several instances share the table) and SQLite does not
        # (one instance owns the file); a test may ask for leases on SQLite too.
        self._lease_rows = not is_sqlite(str(engine.url)) if lease_rows is None else lease_rows
        self.worker = BackgroundWorker(
            name="outbox-relay",
            step=self._step,
            idle_seconds=poll_seconds,
            # The acks, plus the two short transactions (each bounded by the database's own lock wait).
            step_timeout=publish_timeout + 2 * DATABASE_WAIT_SECONDS,
            wake_signal=outbox_written,
            engine=engine,
        )

    async def _step(self) -> bool:
        return await self.publish_pending() >= self._batch_size

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; returns how many were published.

        Raises ``UnacknowledgedError`` after marking the batch when some rows were not
        acknowledged: in the worker that is a failed step, so the retry waits its back-off
        instead of coming at once with the next commit.
        """
        published, failed = await self._publish_batch()
        if failed:
            raise UnacknowledgedError(failed)
        return published

    async def _publish_batch(self) -> tuple[int, int]:
        if self._nc is not None and not self._nc.is_connected:
            # Publishing now would only fill the client's reconnect buffer, and a publish it refuses
            # leaks one of its pending-publish slots; the next poll after the reconnect publishes.
            return 0, 0
        rows = await self._claim()
        if not rows:
            return 0, 0
        errors = await self._publish(rows)
        async with self._session_factory() as session, session.begin():
            return await self._mark(session, rows, errors)

    async def _claim(self) -> list[Row[Any]]:
        """The next batch of unpublished rows, in id order; on PostgreSQL leased to this instance.

        Core statements built once, and only the columns a publish needs: loading the rows as
        ORM objects (the identity map, the attribute state of each) and building the statements
        anew each time cost a fifth to a third of the relay's CPU per row (measured).
        """
        now = utcnow()
        async with self._session_factory() as session, session.begin():
            connection = await session.connection()
            if not self._lease_rows:
                # SQLite: one instance owns the file, so nobody else takes these rows.
                return list(await connection.execute(_pending_query(self._batch_size, leased=False)))
            rows = list(await connection.execute(_pending_query(self._batch_size, leased=True), {"now": now}))
            if rows:
                await connection.execute(
                    _lease_statement(), {"ids": [row.id for row in rows], "lease_until": now + self._lease}
                )
            return rows

    async def _publish(self, rows: list[Row[Any]]) -> list[BaseException | None]:
        """Each row's failure, or None once JetStream acknowledged it; returns within the publish timeout."""
        futures: list[asyncio.Future[Any]] = []
        stopped_by: BaseException | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        try:
            # The one bound on the whole batch, the client's stall on its pending-publish slots
            # included: nats-py turns the cancellation of that wait into TooManyStalledMsgsError,
            # which ends the batch like the timeout.  No ``wait_stall`` per publish: nats-py passes
            # it to ``asyncio.wait_for``, which makes a task and a timer per message and gives up
            # the event loop twice for each (measured: about 2.5 times the relay's CPU per row).
            async with asyncio.timeout_at(deadline):
                for row in rows:
                    futures.append(
                        await self._js.publish_async(
                            row.subject,
                            row.payload.encode(),
                            headers=headers_for(row, producer=self._producer),
                        )
                    )
                await asyncio.wait(futures)
        except Exception as exc:  # the timeout, or a publish refused at once (connection closed)
            stopped_by = exc
        finally:
            # nats-py resolves a future only with the server's ack; one lost with a connection would
            # stay pending for ever and hold one of the client's pending-publish slots.
            for future in futures:
                if not future.done():
                    future.cancel()
        not_acknowledged = TimeoutError(f"no acknowledgement within {self._publish_timeout} s")
        errors: list[BaseException | None] = []
        for index in range(len(rows)):
            if index >= len(futures):
                errors.append(stopped_by or not_acknowledged)
            elif futures[index].cancelled():
                errors.append(not_acknowledged)
            else:
                errors.append(futures[index].exception())
        return errors

    async def _mark(
        self, session: AsyncSession, rows: list[Row[Any]], errors: list[BaseException | None]
    ) -> tuple[int, int]:
        done_ids = [row.id for row, error in zip(rows, errors, strict=True) if error is None]
        failed_ids = [row.id for row, error in zip(rows, errors, strict=True) if error is not None]
        connection = await session.connection()
        if done_ids:
            await connection.execute(_published_statement(), {"ids": done_ids, "published_at": utcnow()})
        if failed_ids:
            await connection.execute(_failed_statement(), {"ids": failed_ids})
            first_error = next(error for error in errors if error is not None)
            log.warning(
                "some outbox rows were not acknowledged", failed=len(failed_ids), error=repr(first_error)
            )
        count_outbox(published=len(done_ids), unacknowledged=len(failed_ids))
        return len(done_ids), len(failed_ids)


# The relay's statements (``built_once``): the columns a publish needs, and the updates by id.
_PUBLISHED_COLUMNS = (
    "id",
    "event_id",
    "subject",
    "event_type",
    "event_version",
    "case_id",
    "correlation_id",
    "payload",
)


@built_once
def _pending_query(limit: int, *, leased: bool) -> sa.Select[Any]:
    outbox = table_of(OutboxMessage)
    query = (
        sa.select(*(outbox.c[name] for name in _PUBLISHED_COLUMNS))
        .where(outbox.c.published_at.is_(None))
        .order_by(outbox.c.id)
        .limit(limit)
    )
    if not leased:
        return query
    lease_free = or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < sa.bindparam("now"))
    return query.where(lease_free).with_for_update(skip_locked=True)


def _by_ids() -> Any:
    return table_of(OutboxMessage).c.id.in_(sa.bindparam("ids", expanding=True))


@built_once
def _lease_statement() -> sa.Update:
    outbox = table_of(OutboxMessage)
    return sa.update(outbox).where(_by_ids()).values(lease_until=sa.bindparam("lease_until"))


@built_once
def _published_statement() -> sa.Update:
    outbox = table_of(OutboxMessage)
    return (
        sa.update(outbox).where(_by_ids()).values(published_at=sa.bindparam("published_at"), lease_until=None)
    )


@built_once
def _failed_statement() -> sa.Update:
    outbox = table_of(OutboxMessage)
    return sa.update(outbox).where(_by_ids()).values(attempts=outbox.c.attempts + 1, lease_until=None)


class UnacknowledgedError(RuntimeError):
    """Some rows of a batch were not acknowledged; they stay unpublished and are tried again later."""

    def __init__(self, failed: int) -> None:
        super().__init__(f"{failed} outbox rows were not acknowledged")
        self.failed = failed


async def oldest_unpublished_age(conn: AsyncConnection) -> float | None:
    """Seconds since the oldest unpublished row was written, or None when everything is published."""
    created = (
        await conn.execute(
            select(OutboxMessage.created_at)
            .where(col(OutboxMessage.published_at).is_(None))
            .order_by(col(OutboxMessage.id))
            .limit(1)
        )
    ).scalar()
    return None if created is None else max((utcnow() - created).total_seconds(), 0.0)
