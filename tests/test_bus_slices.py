"""Many events at a time on the bus: two instances sharing a durable, and the slices a fetch is applied in.

A consumer applies each fetched batch in slices, a database transaction each (shared/bus.py).
The stream, the databases and the helpers are tests/test_bus.py's: real nats-server, a
SQLite file and, when TEST_POSTGRES_URL is set, a fresh PostgreSQL database.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any
from uuid import uuid4

from nats.js import JetStreamContext
from sqlalchemy import func
from sqlalchemy.event import listen as event_listen
from sqlalchemy.event import remove as event_remove
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.models import MatterSnapshot
from shared.audit import AuditEntry, audit, trail, verify_chain
from shared.bus import PermanentError, Subscription
from shared.db import utcnow
from shared.events import CaseClosed, CaseReopened, Event
from shared.outbox import OutboxMessage, OutboxRelay, record_event
from shared.slice_rows import lookup
from tests.databases import MigratedDatabase as Db
from tests.support import eventually
from tests.test_bus import (
    Recorder,
    audit_count,
    closed_event,
    consuming,
    database,
    db,
    dead_letters,
    durable_name,
    inbox_count,
    js,
    publish,
    settled,
    subscription,
)

__all__ = ["database", "db", "js"]  # fixtures used by name below (this module migrates its own database)


# --------------------------------------------------------------------------- helpers


async def audit_case_ids(db: Db) -> list[str]:
    async with db.sessions() as session:
        return list(await session.exec(select(AuditEntry.case_id)))


async def consume_published(js: JetStreamContext, db: Db, consumer: Subscription, events: list[Any]) -> None:
    """Publish ``events``, then run ``consumer`` until it has taken every one of them."""
    for item in events:
        await publish(js, item)
    async with consuming(js, db, consumer):
        await settled(js, consumer.durable, delivered=len(events))


# --------------------------------------------------------------------------- two instances


async def test_two_instances_share_a_durable_and_apply_each_event_once(js: JetStreamContext, db: Db) -> None:
    durable = durable_name()
    first, second = Recorder(tag="-1"), Recorder(tag="-2")
    events = [closed_event() for _ in range(200)]
    async with (
        consuming(js, db, subscription(durable, first), batch_size=10),
        consuming(js, db, subscription(durable, second), batch_size=10),
    ):
        async with db.sessions() as session, session.begin():
            for item in events:
                record_event(session, item)
        relay = OutboxRelay(engine=db.engine, session_factory=db.sessions, js=js, batch_size=500)
        assert await relay.publish_pending() == 200

        async def all_applied() -> bool:
            return await audit_count(db) >= 200

        await eventually(all_applied, timeout=30, what="200 effects")
        info = await settled(js, durable, delivered=200)

    case_ids = await audit_case_ids(db)
    assert len(case_ids) == 200
    assert Counter(case_ids) == Counter(e.case_id for e in events)
    assert await inbox_count(db, durable) == 200
    assert info.num_ack_pending == 0 and info.num_pending == 0
    handled = first.calls + second.calls
    assert set(handled) == {e.event_id for e in events}
    # Both instances took part, and no event reached a handler twice.
    assert first.calls and second.calls
    assert max(handled.values()) == 1


# --------------------------------------------------------------------------- slices


async def test_one_bad_event_does_not_undo_the_rest_of_its_slice(js: JetStreamContext, db: Db) -> None:
    durable = durable_name()
    events = [closed_event() for _ in range(5)]
    bad = events[2]

    class FailsOnOne(Recorder):
        async def __call__(self, *, session: AsyncSession, event: Event) -> None:
            await super().__call__(session=session, event=event)
            if event.event_id == bad.event_id:
                raise PermanentError("this one contradicts what the service knows")

    handler = FailsOnOne()
    for item in events:
        await publish(js, item)
    # All five are in the stream before the consumer starts: one fetch, one slice.
    async with consuming(js, db, subscription(durable, handler)):
        (parked,) = await dead_letters(js, durable, expected=1)
        await settled(js, durable, delivered=5)
    assert json.loads(parked.data or b"")["event_id"] == bad.event_id
    # The first pass ran up to the bad event; the second ran the others, not the bad one again.
    assert handler.calls == Counter(
        {
            events[0].event_id: 2,
            events[1].event_id: 2,
            bad.event_id: 1,
            events[3].event_id: 1,
            events[4].event_id: 1,
        }
    )
    good = [e.case_id for e in events if e is not bad]
    assert sorted(await audit_case_ids(db)) == sorted(good)
    assert await inbox_count(db, durable) == 4


async def test_batched_writes_still_see_what_earlier_events_did_to_their_matter(
    js: JetStreamContext, db: Db
) -> None:
    durable = durable_name()
    case_id = f"case-{uuid4().hex[:12]}"
    events = [
        closed_event(case_id=case_id),
        closed_event(),
        closed_event(case_id=case_id),
        closed_event(),
        closed_event(case_id=case_id),
    ]
    seen: list[int] = []

    async def count_then_write(*, session: AsyncSession, event: Event) -> None:
        # Reads its own matter's rows (no autoflush here) and writes one more.
        if event.case_id == case_id:
            query = select(func.count()).select_from(AuditEntry).where(AuditEntry.case_id == case_id)
            seen.append(int((await session.exec(query)).one()))
        await audit(session, case_id=event.case_id, action="case_closed", actor="bustest")

    batched = Subscription(
        durable=durable, handlers={CaseClosed: count_then_write}, batched_writes=frozenset({CaseClosed})
    )
    await consume_published(js, db, batched, events)
    assert seen == [0, 1, 2]
    assert await audit_count(db, [case_id]) == 3
    async with db.sessions() as session:
        assert verify_chain(await trail(session, case_id))


async def test_events_a_slice_records_wait_for_its_flush_and_keep_their_order(
    js: JetStreamContext, db: Db
) -> None:
    """A batched handler's outgoing events are inserted with the slice's other kept rows, one
    statement for the slice, in the order the handlers recorded them (the relay's order)."""
    durable = durable_name()
    events = [closed_event() for _ in range(6)]
    outgoing: list[CaseClosed] = []
    unflushed: list[bool] = []

    async def answer(*, session: AsyncSession, event: Event) -> None:
        reply = closed_event(case_id=event.case_id, note="已回复")
        record_event(session, reply)
        outgoing.append(reply)
        unflushed.append(not any(isinstance(row, OutboxMessage) for row in session.sync_session.new))

    batched = Subscription(
        durable=durable, handlers={CaseClosed: answer}, batched_writes=frozenset({CaseClosed})
    )
    await consume_published(js, db, batched, events)
    assert unflushed == [True] * 6
    async with db.sessions() as session:
        rows = list(await session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))))
    assert [row.event_id for row in rows] == [reply.event_id for reply in outgoing]
    assert [row.case_id for row in rows] == [item.case_id for item in events]
    assert all(
        row.published_at is None and row.subject == reply.subject()
        for row, reply in zip(rows, outgoing, strict=True)
    )


async def test_a_slice_numbers_its_kept_audit_entries_after_those_its_flushes_wrote(
    js: JetStreamContext, db: Db
) -> None:
    """Entries of batched handlers wait for the slice's insert, those of a plain handler are
    flushed at once: the service's chain stays one unbroken sequence either way."""
    durable = durable_name()
    events: list[Event] = []
    for index in range(8):
        events.append(closed_event())
        if index % 3 == 0:
            events.append(
                CaseReopened(
                    case_id=f"case-{uuid4().hex[:12]}",
                    case_kind="complaint",
                    reason="不满意",
                    previous_team_codes=[],
                    round=2,
                )
            )

    kept_for_later: dict[str, bool] = {}

    async def audited(*, session: AsyncSession, event: Event) -> None:
        entry = await audit(session, case_id=event.case_id, action=event.event_type, actor="bustest")
        kept_for_later[event.event_type] = entry not in session.sync_session.new

    mixed = Subscription(
        durable=durable,
        handlers={CaseClosed: audited, CaseReopened: audited},
        batched_writes=frozenset({CaseClosed}),
    )
    await consume_published(js, db, mixed, events)
    async with db.sessions() as session:
        chain = list(await session.exec(select(AuditEntry).order_by(col(AuditEntry.seq))))
    assert kept_for_later == {"CaseClosed": True, "CaseReopened": False}
    assert [entry.seq for entry in chain] == list(range(1, len(chain) + 1))
    assert verify_chain(chain)
    mine = [
        entry for entry in chain if entry.actor == "bustest" and entry.case_id in {e.case_id for e in events}
    ]
    assert sorted(entry.case_id for entry in mine) == sorted(e.case_id for e in events)


def snapshot(case_id: str) -> MatterSnapshot:
    return MatterSnapshot(
        case_id=case_id,
        case_kind="complaint",
        tracking_code="C-test",
        received_at=utcnow(),
        title="测试",
        text="民警态度粗暴。",
    )


async def test_prefetched_lookups_cost_one_query_for_the_slice(js: JetStreamContext, db: Db) -> None:
    durable = durable_name()
    known = closed_event()
    async with db.sessions() as session, session.begin():
        session.add(snapshot(known.case_id))
    events = [known, *(closed_event() for _ in range(5))]
    found: dict[str, bool] = {}

    async def note_snapshot(*, session: AsyncSession, event: Event) -> None:
        existing = await lookup(session, MatterSnapshot, event.case_id)
        found[event.case_id] = existing is not None
        if existing is None:
            session.add(snapshot(event.case_id))

    queries: list[str] = []

    def count_snapshot_queries(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "verification_matter" in statement:
            queries.append(statement)

    for item in events:
        await publish(js, item)
    event_listen(db.engine.sync_engine, "before_cursor_execute", count_snapshot_queries)
    try:
        looked_up = Subscription(
            durable=durable,
            handlers={CaseClosed: note_snapshot},
            batched_writes=frozenset({CaseClosed}),
            prefetch_by_case=(MatterSnapshot,),
        )
        async with consuming(js, db, looked_up):
            await settled(js, durable, delivered=6)
    finally:
        event_remove(db.engine.sync_engine, "before_cursor_execute", count_snapshot_queries)
    assert found == {e.case_id: e is known for e in events}
    assert len(queries) == 1, queries
    async with db.sessions() as session:
        stored = list(await session.exec(select(MatterSnapshot.case_id)))
    assert sorted(stored) == sorted(e.case_id for e in events)
