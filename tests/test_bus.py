"""The messaging guarantees: transactional outbox, idempotent consumer, retry and dead-lettering.

Real nats-server (the session fixture) and real databases: a SQLite file and, when
TEST_POSTGRES_URL is set, a fresh PostgreSQL database.  Each test gets its own
"BUSTEST" stream (and "BUSTEST_DLQ"), deleted afterwards.  Many events at a time (two
instances on one durable, the slices a fetch is applied in) are tests/test_bus_slices.py's,
on these fixtures and helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from sqlalchemy import delete, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.models import MatterSnapshot
from shared.audit import AuditEntry, audit
from shared.bus import DEAD_LETTER_STREAM_SUFFIX, EventConsumer, PermanentError, Subscription, ensure_streams
from shared.events import DEAD_LETTER_PREFIX, CaseClosed, Event
from shared.inbox import InboxRecord
from shared.outbox import (
    HEADER_EVENT_TYPE,
    HEADER_EVENT_VERSION,
    HEADER_MSG_ID,
    OutboxMessage,
    OutboxRelay,
    record_event,
)
from tests.audit_support import erase_audit_log
from tests.conftest import BACKENDS
from tests.databases import MigratedDatabase as Db
from tests.databases import migrated_database
from tests.support import NatsServer, eventually, scratch_stream

STREAM = "BUSTEST"
DLQ_STREAM = STREAM + DEAD_LETTER_STREAM_SUFFIX


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    async with scratch_stream(nats_server.url, STREAM) as context:
        yield context


@pytest.fixture(scope="module", params=BACKENDS)
async def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Db]:
    async with migrated_database(str(request.param), tmp_path_factory.mktemp("bus"), "verification") as db:
        yield db


@pytest.fixture
async def db(database: Db) -> Db:
    """The migrated database of the backend, emptied: each test counts rows from zero."""
    async with database.sessions() as session, session.begin():
        for table in (OutboxMessage, InboxRecord, MatterSnapshot):
            await session.exec(delete(table))
        await erase_audit_log(session)  # append-only: its triggers refuse a plain DELETE
    return database


# --------------------------------------------------------------------------- helpers


def closed_event(**overrides: Any) -> CaseClosed:
    values: dict[str, Any] = {"case_id": f"case-{uuid4().hex[:12]}", "note": "办结归档"}
    return CaseClosed(**(values | overrides))


def event_headers(event: Event, *, msg_id: str | None = None) -> dict[str, str]:
    return {
        HEADER_MSG_ID: msg_id or event.event_id,
        HEADER_EVENT_TYPE: event.event_type,
        HEADER_EVENT_VERSION: str(event.version),
    }


async def publish(js: JetStreamContext, event: Event, *, msg_id: str | None = None) -> None:
    headers = event_headers(event, msg_id=msg_id)
    await js.publish(event.subject(), event.model_dump_json().encode(), headers=headers)


async def stream_count(js: JetStreamContext, stream: str = STREAM) -> int:
    return int((await js.stream_info(stream)).state.messages)


async def stream_messages(js: JetStreamContext, stream: str = STREAM) -> list[RawStreamMsg]:
    state = (await js.stream_info(stream)).state
    if not state.messages:
        return []
    return [await js.get_msg(stream, seq) for seq in range(state.first_seq, state.last_seq + 1)]


async def audit_count(db: Db, case_ids: list[str] | None = None) -> int:
    async with db.sessions() as session:
        query = select(func.count()).select_from(AuditEntry)
        if case_ids is not None:
            query = query.where(col(AuditEntry.case_id).in_(case_ids))
        return int((await session.exec(query)).one())


async def inbox_count(db: Db, consumer: str) -> int:
    async with db.sessions() as session:
        query = select(func.count()).select_from(InboxRecord).where(InboxRecord.consumer == consumer)
        return int((await session.exec(query)).one())


async def outbox_rows(db: Db) -> list[OutboxMessage]:
    async with db.sessions() as session:
        return list(await session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))))


def subscription(durable: str, handler: Recorder) -> Subscription:
    return Subscription(durable=durable, handlers={CaseClosed: handler})


def durable_name() -> str:
    return f"bustest-{uuid4().hex[:8]}"


class Recorder:
    """A handler whose effect is an audit row; it can be told to fail on given deliveries."""

    def __init__(
        self, *, fail_first: int = 0, fail_with: type[Exception] = RuntimeError, tag: str = ""
    ) -> None:
        self.calls: Counter[str] = Counter()
        self.fail_first = fail_first
        self.fail_with = fail_with
        self.tag = tag

    async def __call__(self, *, session: AsyncSession, event: Event) -> None:
        self.calls[event.event_id] += 1
        await audit(session, case_id=event.case_id, action="case_closed", actor=f"bustest{self.tag}")
        if self.calls[event.event_id] <= self.fail_first:
            raise self.fail_with(f"failure #{self.calls[event.event_id]} of {event.event_id}")


@contextlib.asynccontextmanager
async def consuming(
    js: JetStreamContext, db: Db, subscription: Subscription, *, max_deliver: int = 8, batch_size: int = 100
) -> AsyncIterator[EventConsumer]:
    consumer = EventConsumer(
        js=js,
        stream=STREAM,
        subscription=subscription,
        session_factory=db.sessions,
        batch_size=batch_size,
        max_deliver=max_deliver,
        ack_wait=30.0,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def settled(js: JetStreamContext, durable: str, *, delivered: int) -> Any:
    """Wait until the consumer has taken ``delivered`` stream messages and has nothing outstanding."""

    async def probe() -> Any:
        info = await js.consumer_info(STREAM, durable)
        done = info.delivered.stream_seq >= delivered and info.num_ack_pending == 0 and info.num_pending == 0
        return info if done else None

    return await eventually(probe, timeout=15, what=f"consumer {durable} to settle")


async def dead_letters(js: JetStreamContext, durable: str, expected: int) -> list[RawStreamMsg]:
    async def probe() -> list[RawStreamMsg] | None:
        subject = f"{DEAD_LETTER_PREFIX}.{durable}"
        parked = [m for m in await stream_messages(js, DLQ_STREAM) if m.subject == subject]
        return parked if len(parked) >= expected else None

    return list(await eventually(probe, timeout=15, what="dead letters"))


# --------------------------------------------------------------------------- outbox


async def test_committed_outbox_rows_are_published_once_per_event_id(js: JetStreamContext, db: Db) -> None:
    events = [closed_event(), closed_event()]
    async with db.sessions() as session, session.begin():
        for item in events:
            record_event(session, item)

    relay = OutboxRelay(engine=db.engine, session_factory=db.sessions, js=js)
    assert await relay.publish_pending() == 2
    assert await relay.publish_pending() == 0

    messages = await stream_messages(js)
    assert [m.headers[HEADER_MSG_ID] for m in messages if m.headers] == [e.event_id for e in events]
    assert [m.subject for m in messages] == ["sv.CaseClosed.v1"] * 2
    first = messages[0]
    assert first.headers is not None
    assert first.headers[HEADER_EVENT_TYPE] == "CaseClosed" and first.headers[HEADER_EVENT_VERSION] == "1"
    assert json.loads(first.data or b"")["case_id"] == events[0].case_id

    rows = await outbox_rows(db)
    assert [r.event_id for r in rows] == [e.event_id for e in events]
    assert all(r.published_at is not None for r in rows)

    # The relay published, then died before marking the row: it publishes the row again.
    async with db.sessions() as session, session.begin():
        await session.exec(
            update(OutboxMessage)
            .where(col(OutboxMessage.event_id) == events[0].event_id)
            .values(published_at=None)
        )
    assert await relay.publish_pending() == 1
    assert await stream_count(js) == 2, "the duplicate window must drop the republished row"
    assert all(r.published_at is not None for r in await outbox_rows(db))


async def test_rolled_back_transaction_publishes_nothing(js: JetStreamContext, db: Db) -> None:
    class AbortError(Exception):
        pass

    with pytest.raises(AbortError):
        async with db.sessions() as session, session.begin():
            record_event(session, closed_event())
            await session.flush()
            raise AbortError

    relay = OutboxRelay(engine=db.engine, session_factory=db.sessions, js=js)
    assert await relay.publish_pending() == 0
    assert await outbox_rows(db) == []
    assert await stream_count(js) == 0


async def test_unacknowledged_row_stays_pending_until_a_stream_takes_it(js: JetStreamContext, db: Db) -> None:
    item = closed_event()
    async with db.sessions() as session, session.begin():
        record_event(session, item)
    await js.delete_stream(STREAM)  # nothing listens on "sv.>": JetStream answers no one

    relay = OutboxRelay(engine=db.engine, session_factory=db.sessions, js=js)
    with contextlib.suppress(RuntimeError):
        assert await relay.publish_pending() == 0
    (row,) = await outbox_rows(db)
    assert row.published_at is None
    assert row.attempts == 1

    await ensure_streams(js, stream=STREAM, max_age_days=1)
    assert await relay.publish_pending() == 1
    (message,) = await stream_messages(js)
    assert (message.headers or {})[HEADER_MSG_ID] == item.event_id
    (row,) = await outbox_rows(db)
    assert row.published_at is not None


# --------------------------------------------------------------------------- consumer adapter


async def test_valid_event_is_handled_once_and_acked(js: JetStreamContext, db: Db) -> None:
    durable, handler = durable_name(), Recorder()
    item = closed_event()
    await publish(js, item)
    async with consuming(js, db, subscription(durable, handler)):
        await eventually(lambda: audit_count(db, [item.case_id]), what="the handler's effect")
        info = await settled(js, durable, delivered=1)
    # One delivery in all (a redelivery would advance the consumer sequence) and nothing awaiting an ack.
    assert info.delivered.consumer_seq == 1 and info.num_redelivered == 0
    assert handler.calls == {item.event_id: 1}
    assert await audit_count(db) == 1
    assert await inbox_count(db, durable) == 1


async def test_redelivered_event_is_applied_once(js: JetStreamContext, db: Db) -> None:
    durable, handler = durable_name(), Recorder()
    item = closed_event()
    # Two different message ids: JetStream keeps both, as it would a redelivery after a lost ack.
    await publish(js, item, msg_id=f"{item.event_id}-a")
    await publish(js, item, msg_id=f"{item.event_id}-b")
    assert await stream_count(js) == 2
    async with consuming(js, db, subscription(durable, handler)):
        info = await settled(js, durable, delivered=2)
    assert info.delivered.consumer_seq == 2
    assert handler.calls == {item.event_id: 1}, "the inbox must stop the second copy before the handler"
    assert await audit_count(db) == 1
    assert await inbox_count(db, durable) == 1


async def test_transient_failure_is_retried_and_applied_once(js: JetStreamContext, db: Db) -> None:
    durable, handler = durable_name(), Recorder(fail_first=2)
    item = closed_event()
    await publish(js, item)
    async with consuming(js, db, subscription(durable, handler), max_deliver=8):
        await eventually(lambda: audit_count(db), timeout=10, what="the effect after retries")
        info = await settled(js, durable, delivered=1)
    assert handler.calls == {item.event_id: 3}
    assert info.delivered.consumer_seq == 3
    # The failed attempts rolled back their audit rows: the effect is there exactly once.
    assert await audit_count(db) == 1
    assert await inbox_count(db, durable) == 1
    assert await stream_count(js, DLQ_STREAM) == 0


async def test_undecodable_events_are_dead_lettered_without_retry(js: JetStreamContext, db: Db) -> None:
    durable, handler = durable_name(), Recorder()
    good = closed_event()
    payload = good.model_dump_json().encode()

    def headers_of(msg_id: str, event_type: str) -> dict[str, str]:
        return {HEADER_MSG_ID: msg_id, HEADER_EVENT_TYPE: event_type, HEADER_EVENT_VERSION: "1"}

    await js.publish("sv.CaseClosed.v1", b"{not json", headers=headers_of("bad-json", "CaseClosed"))
    no_note = json.dumps({"case_id": "c-1"}).encode()
    await js.publish("sv.CaseClosed.v1", no_note, headers=headers_of("invalid", "CaseClosed"))
    await js.publish("sv.CaseClosed.v1", payload, headers=headers_of("unknown-type", "CaseVanished"))
    # No type headers: type and version come from the subject, and v9 does not exist.
    await js.publish("sv.CaseClosed.v9", payload, headers={HEADER_MSG_ID: "unknown-version"})

    async with consuming(js, db, subscription(durable, handler)):
        parked = await dead_letters(js, durable, expected=4)
        info = await settled(js, durable, delivered=4)
        await asyncio.sleep(0.6)  # longer than the first nak delay: a nak'ed message would be back by now
        info = await js.consumer_info(STREAM, durable)

    assert info.delivered.consumer_seq == 4 and info.num_ack_pending == 0
    assert handler.calls == Counter()
    assert await audit_count(db) == 0
    assert await stream_count(js, DLQ_STREAM) == 4
    reasons = [(m.headers or {}).get("Sv-Dead-Letter-Reason", "") for m in parked]
    assert all(reason.startswith("invalid event") for reason in reasons), reasons
    assert "CaseVanished" in reasons[2] and "v9" in reasons[3]
    for message in parked:
        headers = message.headers or {}
        assert headers["Sv-Dead-Letter-Consumer"] == durable
        assert headers["Sv-Original-Subject"].startswith("sv.CaseClosed.")
        assert HEADER_MSG_ID not in headers
    assert parked[0].data == b"{not json"


async def test_permanent_error_is_dead_lettered_without_retry(js: JetStreamContext, db: Db) -> None:
    durable, handler = durable_name(), Recorder(fail_first=100, fail_with=PermanentError)
    item = closed_event()
    await publish(js, item)
    async with consuming(js, db, subscription(durable, handler)):
        (parked,) = await dead_letters(js, durable, expected=1)
        await settled(js, durable, delivered=1)
        await asyncio.sleep(0.6)
        info = await js.consumer_info(STREAM, durable)
    assert info.delivered.consumer_seq == 1 and info.num_ack_pending == 0
    assert handler.calls == {item.event_id: 1}
    assert (parked.headers or {})["Sv-Dead-Letter-Reason"] == f"failure #1 of {item.event_id}"
    assert json.loads(parked.data or b"")["event_id"] == item.event_id
    assert await audit_count(db) == 0
    assert await inbox_count(db, durable) == 0


async def test_always_failing_handler_is_parked_after_max_deliver(js: JetStreamContext, db: Db) -> None:
    durable, handler = durable_name(), Recorder(fail_first=100)
    item = closed_event()
    await publish(js, item)
    # Deliveries 1 and 2 are nak'ed (0.5 s, then 1 s); the third is the last and is parked.
    async with consuming(js, db, subscription(durable, handler), max_deliver=3):
        (parked,) = await dead_letters(js, durable, expected=1)
        info = await settled(js, durable, delivered=1)
    assert handler.calls == {item.event_id: 3}
    assert info.delivered.consumer_seq == 3
    reason = (parked.headers or {})["Sv-Dead-Letter-Reason"]
    assert reason.startswith("gave up after 3 deliveries") and "RuntimeError" in reason
    assert await audit_count(db) == 0
    assert await inbox_count(db, durable) == 0
