"""NATS JetStream: streams, durable pull consumers, and the one consumer adapter.

A handler is a plain typed function ``async def handle(*, session, event) -> None``.
The adapter decodes and validates the message, runs the handler and records the
event in the inbox in one transaction, then acks.  A transient failure is
``nak``ed with a growing delay; a message that can never be valid (unknown type,
failed validation, ``PermanentError``) or that has used up its deliveries is
parked on the dead-letter subject with the reason, then ``term``ed.

A consumer pulls a *fetch batch* of messages and applies it in *slices*, a database
transaction each (``shared.slices``).  A handler marked ``@batched_writes`` lets its writes
wait for the slice's one flush.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.batchguard import BatchingRuleBroken, guard_enabled_by_environment
from shared.events import (
    DEAD_LETTER_PREFIX,
    REPLAY_PREFIX,
    SUBJECT_PREFIX,
    Event,
    UnknownEventError,
    decode_event,
)
from shared.logging import get_logger
from shared.metrics import count_dead_letter, count_slice
from shared.natsauth import NatsCredentials
from shared.outbox import HEADER_CORRELATION_ID, HEADER_EVENT_TYPE, HEADER_EVENT_VERSION, HEADER_PRODUCER
from shared.slice_rows import Prefetched
from shared.slices import (
    EventOutcome,
    Handler,
    PermanentError,
    SliceApplier,
    SliceEvent,
    Verdict,
    event_context,
)
from shared.worker import BackgroundWorker

__all__ = [
    "DEAD_LETTER_STREAM_SUFFIX",
    "EventConsumer",
    "Handler",
    "PermanentError",
    "Subscription",
    "batched_writes",
    "connect",
    "consumer_config",
    "ensure_streams",
    "original_subject",
    "replay_subject",
    "start_consumers",
]

log = get_logger(__name__)

DEAD_LETTER_STREAM_SUFFIX = "_DLQ"
# Headers of a parked copy, besides the original ones (its Nats-Msg-Id moves to its own header,
# so that the dead-letter stream does not deduplicate two parkings of one event).
HEADER_DEAD_LETTER_REASON = "Sv-Dead-Letter-Reason"
HEADER_DEAD_LETTER_CONSUMER = "Sv-Dead-Letter-Consumer"
HEADER_DEAD_LETTER_TRIES = "Sv-Dead-Letter-Tries"
HEADER_ORIGINAL_SUBJECT = "Sv-Original-Subject"
HEADER_ORIGINAL_MSG_ID = "Sv-Original-Msg-Id"
# A replayed dead letter goes to ``sv.replay.<durable>.<type>.v<version>`` (``REPLAY_PREFIX``):
# only the consumer that parked it takes it (its filter has the subject), and a service's NATS
# user may publish it without being allowed to publish the event itself (``shared.natsauth``).


def replay_subject(durable: str, subject: str) -> str:
    """Where the replay of an event parked by ``durable`` from ``subject`` is published."""
    return f"{REPLAY_PREFIX}.{durable}.{original_subject(subject).removeprefix(SUBJECT_PREFIX + '.')}"


def original_subject(subject: str) -> str:
    """The event's own subject (``sv.<type>.v<version>``), also for a replay."""
    if not subject.startswith(REPLAY_PREFIX + "."):
        return subject
    parts = subject.split(".", 3)  # sv, replay, durable, <type>.v<version>
    return f"{SUBJECT_PREFIX}.{parts[3]}" if len(parts) == 4 else subject


_Handler = TypeVar("_Handler", bound=Callable[..., Awaitable[None]])
_BATCHED_WRITES = "__batched_writes__"


def batched_writes(handler: _Handler) -> _Handler:
    """Declare the handler's batching contract: its writes may wait for the slice's one flush.

    The handler promises to read only rows of its own matter and never to read back a row it
    wrote itself (autoflush is off while it runs).  Its writes in a slice are then flushed
    together (one multi-row insert per table) instead of before each query; an event of a
    matter already written in the slice flushes first, so it still sees what the earlier events
    did.  The batching guard (``shared.batchguard``) checks the promise when on.  The mark
    survives ``functools.partial``, as the subscription factories bind the context.
    """
    setattr(handler, _BATCHED_WRITES, True)
    return handler


def declares_batched_writes(handler: Any) -> bool:
    while isinstance(handler, functools.partial):
        handler = handler.func
    return getattr(handler, _BATCHED_WRITES, False) is True


@dataclass(frozen=True)
class Subscription:
    """One durable consumer of one service: which events it takes and who handles each."""

    durable: str
    handlers: dict[type[Event], Handler]
    # Events to batch although their handlers carry no ``@batched_writes`` (a handler object
    # that cannot be marked, as in the tests); the handlers' marks are the usual declaration.
    batched_writes: frozenset[type[Event]] = frozenset()
    # Tables keyed by the matter's case id whose rows the slice's handlers look up
    # (``shared.slice_rows.lookup``), and case id columns of tables with several rows per matter
    # (``col(Task.case_id)``, read with ``shared.slice_rows.rows_with``): loaded in one query per table
    # instead of one per event.
    prefetch_by_case: tuple[Prefetched, ...] = ()
    # Lock each matter of a slice (``shared.matter_locks``) before it reads any of the matter's
    # rows: for handlers that read what another consumer writes about the same matter.
    serialise_by_case: bool = False
    # Redelivery delay of an unacknowledged event and deliveries before a failing one is
    # parked; None: the service's settings (CONSUMER_ACK_WAIT_SECONDS, CONSUMER_MAX_DELIVER).
    ack_wait: float | None = None
    max_deliver: int | None = None

    @property
    def filter_subjects(self) -> list[str]:
        # Two versions of one event share a filter (``sv.<type>.*``): listed once.  The replays
        # of this consumer's dead letters come on its own subject (``replay_subject``).
        events = sorted({event_type.subject_filter() for event_type in self.handlers})
        return [*events, f"{REPLAY_PREFIX}.{self.durable}.>"]

    @property
    def batched_events(self) -> frozenset[type[Event]]:
        """The events whose writes wait for the slice's flush (``batched_writes``)."""
        marked = {
            event_type for event_type, handler in self.handlers.items() if declares_batched_writes(handler)
        }
        return self.batched_writes | marked


async def connect(
    url: str, *, name: str, client: NatsClient | None = None, credentials: NatsCredentials | None = None
) -> NatsClient:
    """Connect to the first server that answers, trying again until one does.

    The retries (``max_reconnect_attempts=-1`` applies to the first connection too) never end
    by themselves: the app runs this in the background and cancels it to give up.  Pass your
    own ``client`` to be able to close it after such a cancellation.  ``credentials``: the
    service's NATS user, TLS and inbox prefix (``shared.natsauth``).
    """
    client = client or NatsClient()

    async def on_error(exc: Exception) -> None:
        if isinstance(exc, nats.errors.AuthorizationError) or "permissions violation" in str(exc).lower():
            # A refused user or a publish outside the user's subjects: a configuration error.
            log.error(
                "nats refused the service's user", error=str(exc), user=credentials and credentials.user
            )
            return
        log.warning("nats error", error=str(exc))

    async def on_disconnect() -> None:
        log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    await client.connect(
        servers=url.split(","),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,  # type: ignore[arg-type]  # seconds for asyncio.sleep, typed int
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        **(credentials.connect_options() if credentials is not None else {}),
    )
    return client


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
    """The durable consumer's server-side settings; ``max_deliver`` and ``ack_wait`` are the
    service's defaults, for a subscription that sets none of its own."""
    return ConsumerConfig(
        durable_name=subscription.durable,
        name=subscription.durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait if subscription.ack_wait is None else subscription.ack_wait,
        max_deliver=max_deliver if subscription.max_deliver is None else subscription.max_deliver,
        filter_subjects=subscription.filter_subjects,
        max_ack_pending=10_000,
    )


def nak_delay(num_delivered: int) -> float:
    """0.5 s, 1 s, 2 s ... capped at 30 s."""
    return float(min(0.5 * 2 ** max(num_delivered - 1, 0), 30.0))


class EventConsumer:
    """Pulls one durable consumer and feeds each message through the adapter.

    ``batch_size`` is the fetch batch (messages pulled at once), ``slice_size`` the events
    applied per transaction; ``max_deliver`` and ``ack_wait`` are the service's defaults, for a
    subscription that sets none.  ``guard``: check the batching rules (``shared.batchguard``);
    None: as ``BATCHING_GUARD`` says.
    """

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
        slice_size: int = 100,
        guard: bool | None = None,
    ) -> None:
        self._js = js
        self._stream = stream
        self.subscription = subscription
        self._batch_size = batch_size
        self._max_deliver = max_deliver if subscription.max_deliver is None else subscription.max_deliver
        self._ack_wait = ack_wait if subscription.ack_wait is None else subscription.ack_wait
        self._handlers = {(e.event_type, e.version): h for e, h in subscription.handlers.items()}
        self._slices = SliceApplier(
            consumer=subscription.durable,
            session_factory=session_factory,
            batched=subscription.batched_events,
            prefetch_by_case=subscription.prefetch_by_case,
            serialise_by_case=subscription.serialise_by_case,
            guard=guard_enabled_by_environment() if guard is None else guard,
        )
        self._stopping = asyncio.Event()
        self.worker: BackgroundWorker | None = None
        self._psub: Any = None
        self._slice_size = slice_size

    async def start(self) -> None:
        config = consumer_config(self.subscription, max_deliver=self._max_deliver, ack_wait=self._ack_wait)
        # CONSUMER.CREATE with an existing name updates it, so a changed filter takes effect on restart.
        await self._js.add_consumer(self._stream, config=config)
        self._psub = await self._js.pull_subscribe_bind(
            durable=self.subscription.durable, stream=self._stream
        )
        self.worker = BackgroundWorker(
            name=f"consumer-{self.subscription.durable}",
            step=self._step,
            # The fetch itself waits for messages, so no idle time between steps.
            idle_seconds=0.0,
            # A backstop for an ack or a slice that hangs: the slice is rolled back and comes back
            # after ack_wait anyway; a slow but live slice must not be cut short.
            step_timeout=max(60.0, 2 * self._ack_wait),
            # A failed fetch is the connection being down: retry each second, as the client reconnects.
            backoff_base=1.0,
            backoff_max=1.0,
        )
        self.worker.start()

    async def stop(self, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - passed on to the worker
        self._stopping.set()
        if self.worker is not None:
            await self.worker.stop(timeout=timeout)
        if self._psub is not None:
            try:
                await asyncio.wait_for(self._psub.unsubscribe(), timeout=1.0)
            except Exception as exc:  # the connection may already be draining
                log.debug("unsubscribe failed", error=str(exc))

    async def _step(self) -> bool:
        """One fetch (which waits up to a second for messages) and the slices of what it brought."""
        if self._stopping.is_set():
            return False
        try:
            messages = await self._psub.fetch(self._batch_size, timeout=1.0)
        except (TimeoutError, nats.errors.TimeoutError):
            return True
        for start in range(0, len(messages), self._slice_size):
            if self._stopping.is_set():
                # Hand the rest back at once rather than waiting for ack_wait to expire.
                for rest in messages[start:]:
                    await _quiet(rest.nak())
                return False
            await self.handle_slice(messages[start : start + self._slice_size])
        return True

    def _decode(self, msg: Msg) -> tuple[Event, Handler] | str:
        """The event and its handler, or why the message can never be handled."""
        headers = msg.headers or {}
        try:
            subject = original_subject(msg.subject)
            event_type = headers.get(HEADER_EVENT_TYPE) or subject.split(".")[1]
            version = int(headers.get(HEADER_EVENT_VERSION) or subject.rsplit(".v", 1)[1])
            decoded = decode_event(event_type, version, msg.data)
        except (UnknownEventError, ValidationError, ValueError, IndexError) as exc:
            return f"invalid event: {exc}"
        producer = headers.get(HEADER_PRODUCER)
        if producer is not None and producer != decoded.owner:
            # NATS's permissions should have refused the publish; this catches a server run
            # without them.  An event without the header (published before it existed) passes.
            return (
                f"wrong producer: {decoded.event_type} is published by {decoded.owner}, "
                f"this copy says it came from {producer}"
            )
        handler = self._handlers.get((decoded.event_type, decoded.version))
        if handler is None:
            return f"no handler for {decoded.event_type} v{decoded.version}"
        return decoded, handler

    async def handle_slice(self, messages: Sequence[Msg]) -> None:
        """Apply one slice of messages in one transaction (``shared.slices``), then ack or nak each."""
        consumer = self.subscription.durable
        work: list[SliceEvent] = []
        for msg in messages:
            decoded = self._decode(msg)
            if isinstance(decoded, str):
                with structlog.contextvars.bound_contextvars(
                    correlation_id=(msg.headers or {}).get(HEADER_CORRELATION_ID), consumer=consumer
                ):
                    await self._dead_letter(msg, reason=decoded)
                continue
            work.append(SliceEvent(msg, *decoded))
        if not work:
            return
        try:
            outcomes = await self._slices.apply(work)
        except BatchingRuleBroken:
            raise
        except Exception as exc:
            # The commit itself failed (database gone, lock timeout): everything comes back later.
            for item in work:
                with event_context(item.msg, item.event, consumer=consumer):
                    await self._retry_or_park(item.msg, item.event, _delivered(item.msg), exc)
            return
        count_slice(consumer=consumer, events=len(work))
        for item, outcome in zip(work, outcomes, strict=True):
            if outcome.verdict in (Verdict.HANDLED, Verdict.DUPLICATE):
                await _quiet(item.msg.ack())
                self._log_acked(item, outcome)
                continue
            with event_context(item.msg, item.event, consumer=consumer):
                await self._settle(item, outcome)

    def _log_acked(self, item: SliceEvent, outcome: EventOutcome) -> None:
        """The line of an acked event, with the ids ``event_context`` would bind.

        Given to the one line directly: binding and unbinding four context variables per event
        cost as much as the line itself, and a handled event logs nothing else here.
        """
        event = item.event
        log.info(
            "event handled" if outcome.verdict == Verdict.HANDLED else "duplicate event ignored",
            event_type=event.event_type,
            case_id=event.case_id,
            event_id=event.event_id,
            correlation_id=event.correlation_id or (item.msg.headers or {}).get(HEADER_CORRELATION_ID),
            consumer=self.subscription.durable,
        )

    async def _settle(self, item: SliceEvent, outcome: EventOutcome) -> None:
        """A failed event: dead-lettered, or handed back for a later retry."""
        msg, event = item.msg, item.event
        match outcome.verdict:
            case Verdict.HANDLED | Verdict.DUPLICATE:
                await _quiet(msg.ack())
            case Verdict.PERMANENT:
                await self._dead_letter(msg, reason=str(outcome.error))
            case Verdict.RETRY:
                assert outcome.error is not None
                await self._retry_or_park(msg, event, _delivered(msg), outcome.error)

    async def _retry_or_park(self, msg: Msg, decoded: Event, delivered: int, exc: BaseException) -> None:
        if delivered >= self._max_deliver:
            await self._dead_letter(msg, reason=f"gave up after {delivered} deliveries: {exc!r}")
            return
        delay = nak_delay(delivered)
        log.warning("event handling failed; will retry", error=repr(exc), delivered=delivered, retry_in=delay)
        await _quiet(msg.nak(delay=delay))

    async def _dead_letter(self, msg: Msg, *, reason: str) -> None:
        headers = dict(msg.headers or {})
        # The parked copy keeps what a replay needs (``shared.deadletters``): the original subject
        # and message id, who parked it, why, and after how many deliveries.
        original_msg_id = headers.pop("Nats-Msg-Id", None)
        if original_msg_id:
            headers[HEADER_ORIGINAL_MSG_ID] = original_msg_id
        headers[HEADER_DEAD_LETTER_REASON] = reason[:500]
        headers[HEADER_DEAD_LETTER_CONSUMER] = self.subscription.durable
        headers[HEADER_DEAD_LETTER_TRIES] = str(_delivered(msg))
        headers[HEADER_ORIGINAL_SUBJECT] = original_subject(msg.subject)
        subject = f"{DEAD_LETTER_PREFIX}.{self.subscription.durable}"
        try:
            await self._js.publish(subject, msg.data, headers=headers)
        except Exception as exc:
            # Without a parked copy, terminating would lose the event: let it come back instead.
            log.error("could not park event on dead-letter subject", error=str(exc))
            await _quiet(msg.nak(delay=5.0))
            return
        log.error("event parked on dead-letter subject", reason=reason, subject=subject)
        count_dead_letter(consumer=self.subscription.durable, reason=reason)
        await _quiet(msg.term())


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
    slice_size: int = 100,
    guard: bool | None = None,
) -> list[EventConsumer]:
    """Start a consumer per subscription; see ``EventConsumer`` for the sizes and defaults."""
    consumers = [
        EventConsumer(
            js=js,
            stream=stream,
            subscription=subscription,
            session_factory=session_factory,
            batch_size=batch_size,
            max_deliver=max_deliver,
            ack_wait=ack_wait,
            slice_size=slice_size,
            guard=guard,
        )
        for subscription in subscriptions
    ]
    for consumer in consumers:
        await consumer.start()
    return consumers
