"""NATS JetStream: streams, durable pull consumers, and the one consumer adapter.

A handler is a plain typed function ``async def handle(*, session, event) -> None``.
The adapter decodes and validates the message, runs the handler and records the
event in the inbox in one transaction, then acks.  A transient failure is
``nak``ed with a growing delay; a message that can never be valid (unknown type,
failed validation, ``PermanentError``) or that has used up its deliveries is
parked on the dead-letter subject with the reason, then ``term``ed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from pydantic import ValidationError
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import keep_loaded_rows_for_the_slice, new_row, prefetch_rows, table_of, utcnow
from shared.events import DEAD_LETTER_PREFIX, SUBJECT_PREFIX, Event, UnknownEventError, decode_event
from shared.inbox import InboxRecord
from shared.logging import get_logger
from shared.outbox import HEADER_CORRELATION_ID, HEADER_EVENT_TYPE, HEADER_EVENT_VERSION

log = get_logger(__name__)

DEAD_LETTER_STREAM_SUFFIX = "_DLQ"


class _AlreadyProcessed(Exception):
    pass


class PermanentError(Exception):
    """The event can never be handled (it contradicts what this service knows); do not retry."""


class Handler(Protocol):
    def __call__(self, *, session: AsyncSession, event: Any) -> Awaitable[None]: ...


@dataclass(frozen=True)
class Subscription:
    """One durable consumer of one service: which events it takes and who handles each."""

    durable: str
    handlers: dict[type[Event], Handler]
    extra: dict[str, Any] = field(default_factory=dict)
    # Events whose handlers read only rows of their own matter and never read back a row they
    # wrote themselves.  Their writes in a slice are flushed together (one multi-row insert per
    # table) instead of before each query; an event of a matter already written in the slice
    # flushes first, so it still sees what the earlier events did.
    batched_writes: frozenset[type[Event]] = frozenset()
    # Tables keyed by the matter's case id whose rows the slice's handlers look up
    # (``shared.db.lookup``): loaded in one query per table instead of one per event.
    prefetch_by_case: tuple[type[SQLModel], ...] = ()

    @property
    def filter_subjects(self) -> list[str]:
        return sorted(event_type.subject_filter() for event_type in self.handlers)


async def connect(url: str, *, name: str) -> NatsClient:
    async def on_error(exc: Exception) -> None:
        log.warning("nats error", error=str(exc))

    async def on_disconnect() -> None:
        log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    return await nats.connect(
        servers=url.split(","),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


async def ensure_streams(js: JetStreamContext, *, stream: str, max_age_days: int, replicas: int = 1) -> None:
    """Create or update the event stream and its dead-letter stream."""
    configs = [
        StreamConfig(
            name=stream,
            subjects=[f"{SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=max_age_days * 86400,
            duplicate_window=120,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=stream + DEAD_LETTER_STREAM_SUFFIX,
            subjects=[f"{DEAD_LETTER_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
        ),
    ]
    for config in configs:
        try:
            await js.stream_info(config.name or "")
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)


def consumer_config(subscription: Subscription, *, max_deliver: int, ack_wait: float) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=subscription.durable,
        name=subscription.durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        filter_subjects=subscription.filter_subjects,
        max_ack_pending=10_000,
    )


def nak_delay(num_delivered: int) -> float:
    """0.5 s, 1 s, 2 s ... capped at 30 s."""
    return float(min(0.5 * 2 ** max(num_delivered - 1, 0), 30.0))


class EventConsumer:
    """Pulls one durable consumer and feeds each message through the adapter."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        stream: str,
        subscription: Subscription,
        session_factory: async_sessionmaker[AsyncSession],
        batch_size: int = 100,
        max_deliver: int = 8,
        ack_wait: float = 30.0,
        transaction_size: int = 100,
    ) -> None:
        self._js = js
        self._stream = stream
        self.subscription = subscription
        self._session_factory = session_factory
        self._batch_size = batch_size
        self._max_deliver = max_deliver
        self._ack_wait = ack_wait
        self._handlers = {(e.event_type, e.version): h for e, h in subscription.handlers.items()}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._psub: Any = None
        self._transaction_size = transaction_size

    async def start(self) -> None:
        config = consumer_config(self.subscription, max_deliver=self._max_deliver, ack_wait=self._ack_wait)
        # CONSUMER.CREATE with an existing name updates it, so a changed filter takes effect on restart.
        await self._js.add_consumer(self._stream, config=config)
        self._psub = await self._js.pull_subscribe_bind(
            durable=self.subscription.durable, stream=self._stream
        )
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.subscription.durable}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        if self._psub is not None:
            try:
                await self._psub.unsubscribe()
            except Exception as exc:  # the connection may already be draining
                log.debug("unsubscribe failed", error=str(exc))

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                messages = await self._psub.fetch(self._batch_size, timeout=1.0)
            except TimeoutError:
                continue
            except nats.errors.TimeoutError:
                continue
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.warning("fetch failed", consumer=self.subscription.durable, error=str(exc))
                await asyncio.sleep(1.0)
                continue
            for start in range(0, len(messages), self._transaction_size):
                if self._stopping.is_set():
                    # Hand the rest back at once rather than waiting for ack_wait to expire.
                    for rest in messages[start:]:
                        await _quiet(rest.nak())
                    return
                await self.handle_batch(messages[start : start + self._transaction_size])

    def _decode(self, msg: Msg) -> tuple[Event, Handler] | str:
        """The event and its handler, or why the message can never be handled."""
        headers = msg.headers or {}
        try:
            event_type = headers.get(HEADER_EVENT_TYPE) or msg.subject.split(".")[1]
            version = int(headers.get(HEADER_EVENT_VERSION) or msg.subject.rsplit(".v", 1)[1])
            decoded = decode_event(event_type, version, msg.data)
        except (UnknownEventError, ValidationError, ValueError, IndexError) as exc:
            return f"invalid event: {exc}"
        handler = self._handlers.get((decoded.event_type, decoded.version))
        if handler is None:
            return f"no handler for {decoded.event_type} v{decoded.version}"
        return decoded, handler

    async def handle_message(self, msg: Msg) -> None:
        await self.handle_batch([msg])

    async def handle_batch(self, messages: Sequence[Msg]) -> None:
        """Handle messages in one transaction, then ack or nak each.

        One commit for many events is what makes a consumer keep up (a commit is a disk
        flush).  The slice is first tried in one go; only when that fails is it redone with a
        savepoint per event, which keeps one bad event from undoing the others.  Nothing is
        acked before the commit, so a crash between the two means redelivery, and the
        inbox rows committed with the effects make the redelivery a no-op.
        """
        consumer = self.subscription.durable
        work: list[tuple[Msg, Event, Handler]] = []
        for msg in messages:
            decoded = self._decode(msg)
            if isinstance(decoded, str):
                with structlog.contextvars.bound_contextvars(
                    correlation_id=(msg.headers or {}).get(HEADER_CORRELATION_ID), consumer=consumer
                ):
                    await self._dead_letter(msg, reason=decoded)
                continue
            work.append((msg, *decoded))
        if not work:
            return
        together = await self._apply_together(consumer, work)
        if isinstance(together, _SliceFailure):
            try:
                outcomes = await self._apply_one_by_one(consumer, work, known=together)
            except Exception as exc:
                # The commit itself failed (database gone, lock timeout): everything comes back later.
                for msg, event, _ in work:
                    with self._context(msg, event):
                        await self._retry_or_park(msg, event, _delivered(msg), exc)
                return
        else:
            outcomes = together
        for (msg, event, _), (outcome, error) in zip(work, outcomes, strict=True):
            with self._context(msg, event):
                if outcome == "handled":
                    await _quiet(msg.ack())
                    log.info("event handled", event_type=event.event_type)
                elif outcome == "duplicate":
                    await _quiet(msg.ack())
                    log.info("duplicate event ignored", event_type=event.event_type)
                elif outcome == "permanent":
                    await self._dead_letter(msg, reason=str(error))
                else:
                    assert error is not None
                    await self._retry_or_park(msg, event, _delivered(msg), error)

    async def _apply_together(
        self, consumer: str, work: list[tuple[Msg, Event, Handler]]
    ) -> list[tuple[str, Exception | None]] | _SliceFailure:
        """The common case: every event of the slice handled in one transaction, no savepoints.

        Duplicates are found with one query instead of a failed insert each, and the rows of
        all handlers are flushed together, so the database sees a few multi-row statements
        instead of a dozen small ones per event.  If anything goes wrong the whole transaction
        is rolled back and the failure returned: the slice is then handled event by event.
        """
        event_ids = [event.event_id for _, event, _ in work]
        failed_at: int | None = None
        try:
            async with self._session_factory() as session, session.begin():
                keep_loaded_rows_for_the_slice(session)
                processed = set(
                    await session.exec(
                        select(InboxRecord.event_id).where(
                            InboxRecord.consumer == consumer, col(InboxRecord.event_id).in_(event_ids)
                        )
                    )
                )
                outcomes: list[tuple[str, Exception | None]] = []
                fresh: list[tuple[int, Msg, Event, Handler]] = []
                for index, (msg, event, handler) in enumerate(work):
                    if event.event_id in processed:
                        outcomes.append(("duplicate", None))
                        continue
                    processed.add(event.event_id)
                    outcomes.append(("handled", None))
                    fresh.append((index, msg, event, handler))
                if fresh:
                    # One multi-row insert for the slice's inbox rows, in the same transaction;
                    # on the table, since the ORM's bulk insert costs several times the CPU.
                    now = utcnow()
                    await session.exec(
                        insert(table_of(InboxRecord)),
                        params=[
                            {
                                "consumer": consumer,
                                "event_id": event.event_id,
                                "event_type": event.event_type,
                                "case_id": event.case_id,
                                "processed_at": now,
                            }
                            for _, _, event, _ in fresh
                        ],
                    )
                fresh_cases = {event.case_id for _, _, event, _ in fresh}
                for model in self.subscription.prefetch_by_case:
                    await prefetch_rows(session, model, fresh_cases)
                unflushed_cases: set[str] = set()
                for index, msg, event, handler in fresh:
                    failed_at = index
                    batched = type(event) in self.subscription.batched_writes
                    if unflushed_cases and (not batched or event.case_id in unflushed_cases):
                        await session.flush()
                        unflushed_cases.clear()
                    with self._context(msg, event):
                        if batched:
                            with session.no_autoflush:
                                await handler(session=session, event=event)
                            unflushed_cases.add(event.case_id)
                        else:
                            await handler(session=session, event=event)
                            # Its writes may concern any matter: the next event sees them all.
                            await session.flush()
                    failed_at = None
        except Exception as exc:
            # An integrity error may be another instance's inbox row, flushed along with the
            # handler's: only the event-by-event pass can tell, so no event is blamed for it.
            blamed = None if isinstance(exc, IntegrityError) else failed_at
            log.info("slice handled event by event after a failure", consumer=consumer, error=repr(exc))
            return _SliceFailure(index=blamed, error=exc)
        return outcomes

    async def _apply_one_by_one(
        self, consumer: str, work: list[tuple[Msg, Event, Handler]], *, known: _SliceFailure
    ) -> list[tuple[str, Exception | None]]:
        outcomes: list[tuple[str, Exception | None]] = []
        async with self._session_factory() as session, session.begin():
            for index, (msg, event, handler) in enumerate(work):
                if index == known.index:
                    # Its handler just failed: running it again would repeat whatever it did outside
                    # the database, and the retry or the dead letter decides its fate anyway.
                    outcomes.append(_failure_outcome(known.error))
                    continue
                with self._context(msg, event):
                    outcomes.append(await self._apply(session, consumer, event, handler))
        return outcomes

    def _context(self, msg: Msg, event: Event) -> Any:
        return structlog.contextvars.bound_contextvars(
            case_id=event.case_id,
            event_id=event.event_id,
            correlation_id=event.correlation_id or (msg.headers or {}).get(HEADER_CORRELATION_ID),
            consumer=self.subscription.durable,
        )

    async def _apply(
        self, session: AsyncSession, consumer: str, event: Event, handler: Handler
    ) -> tuple[str, Exception | None]:
        try:
            async with session.begin_nested():
                # The inbox row goes first: if this event was processed before (here or by another
                # instance), the unique key says so before the handler touches anything.
                session.add(
                    new_row(
                        InboxRecord,
                        consumer=consumer,
                        event_id=event.event_id,
                        event_type=event.event_type,
                        case_id=event.case_id,
                    )
                )
                try:
                    await session.flush()
                except IntegrityError:
                    raise _AlreadyProcessed from None
                await handler(session=session, event=event)
                await session.flush()
        except _AlreadyProcessed:
            return "duplicate", None
        except Exception as exc:
            return _failure_outcome(exc)
        return "handled", None

    async def _retry_or_park(self, msg: Msg, decoded: Event, delivered: int, exc: BaseException) -> None:
        if delivered >= self._max_deliver:
            await self._dead_letter(msg, reason=f"gave up after {delivered} deliveries: {exc!r}")
            return
        delay = nak_delay(delivered)
        log.warning("event handling failed; will retry", error=repr(exc), delivered=delivered, retry_in=delay)
        await _quiet(msg.nak(delay=delay))

    async def _dead_letter(self, msg: Msg, *, reason: str) -> None:
        headers = dict(msg.headers or {})
        headers.pop("Nats-Msg-Id", None)
        headers["Sv-Dead-Letter-Reason"] = reason[:500]
        headers["Sv-Dead-Letter-Consumer"] = self.subscription.durable
        headers["Sv-Original-Subject"] = msg.subject
        subject = f"{DEAD_LETTER_PREFIX}.{self.subscription.durable}"
        try:
            await self._js.publish(subject, msg.data, headers=headers)
        except Exception as exc:
            # Without a parked copy, terminating would lose the event: let it come back instead.
            log.error("could not park event on dead-letter subject", error=str(exc))
            await _quiet(msg.nak(delay=5.0))
            return
        log.error("event parked on dead-letter subject", reason=reason, subject=subject)
        await _quiet(msg.term())


@dataclass(frozen=True)
class _SliceFailure:
    """Why a slice could not be handled in one go, and which event's handler raised (if one did)."""

    index: int | None
    error: Exception


def _failure_outcome(exc: Exception) -> tuple[str, Exception | None]:
    return ("permanent" if isinstance(exc, PermanentError) else "retry"), exc


def _delivered(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered or 1)
    except Exception:  # a message without JetStream metadata counts as a first delivery
        return 1


async def _quiet(operation: Awaitable[Any]) -> None:
    try:
        await operation
    except Exception as exc:  # an ack lost on a closed connection is redelivered and deduplicated
        log.warning("ack operation failed", error=str(exc))


async def start_consumers(
    *,
    js: JetStreamContext,
    stream: str,
    subscriptions: Sequence[Subscription],
    session_factory: async_sessionmaker[AsyncSession],
    batch_size: int,
    max_deliver: int,
    ack_wait: float,
    transaction_size: int = 100,
) -> list[EventConsumer]:
    consumers = [
        EventConsumer(
            js=js,
            stream=stream,
            subscription=subscription,
            session_factory=session_factory,
            batch_size=batch_size,
            max_deliver=max_deliver,
            ack_wait=ack_wait,
            transaction_size=transaction_size,
        )
        for subscription in subscriptions
    ]
    for consumer in consumers:
        await consumer.start()
    return consumers
