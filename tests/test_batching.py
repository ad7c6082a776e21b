"""The batching layer's declarations and checks: the guard, ``@batched_writes``, per-subscription limits.

The guard (``shared.batchguard``) turns the two rules of the batching layer into failures: a
batched handler must not read back a row it wrote (its rows are not flushed yet), and a request
in a write group must look at the pending rows of a table it queries.  The slices here are
applied without NATS (``SliceApplier`` is what the consumer runs once it has decoded a slice).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.models import MatterSnapshot
from shared.audit import AuditEntry, audit, trail, verify_chain
from shared.batchguard import BatchingRuleBroken
from shared.bus import Subscription, batched_writes, consumer_config
from shared.db import create_engine, create_session_factory, new_row, table_of, utcnow
from shared.events import CaseClosed, CaseReopened, Event
from shared.groupcommit import GroupCommitter
from shared.idempotency import IdempotencyRecord
from shared.inbox import InboxRecord
from shared.settings import ServiceSettings
from shared.slice_rows import (
    add_later,
    keep_loaded_rows_for_the_slice,
    lookup,
    pending_rows,
    prefetch_rows,
    prefetched_without_rows,
    rows_with,
)
from shared.slices import SliceApplier, SliceEvent, Verdict
from tests.conftest import BACKENDS
from tests.databases import Databases
from tests.support import TEST_SECRET_KEY

TABLES = [InboxRecord, AuditEntry, MatterSnapshot, IdempotencyRecord]


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    databases = Databases(str(request.param), tmp_path)
    engine = create_engine(await databases.url_for("batching"))
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all, tables=[table_of(model) for model in TABLES])
    try:
        yield engine
    finally:
        await engine.dispose()
        await databases.drop_all()


def closed(case_id: str | None = None) -> CaseClosed:
    return CaseClosed(case_id=case_id or f"case-{uuid4().hex[:12]}", note="办结归档")


async def apply_slice(engine: AsyncEngine, handler: Any, events: Sequence[Event]) -> list[Verdict]:
    """The events applied as one slice with their handler batched and the guard on."""
    applier = SliceApplier(
        consumer=f"batching-{uuid4().hex[:8]}",
        session_factory=create_session_factory(engine),
        batched=frozenset({CaseClosed}),
        prefetch_by_case=(MatterSnapshot,),
        guard=True,
    )
    message = SimpleNamespace(headers={})
    outcomes = await applier.apply([SliceEvent(message, event, handler) for event in events])  # type: ignore[arg-type]
    return [outcome.verdict for outcome in outcomes]


def snapshot(case_id: str) -> MatterSnapshot:
    return new_row(
        MatterSnapshot,
        case_id=case_id,
        case_kind="complaint",
        tracking_code="C-test",
        received_at=utcnow(),
        title="测试",
        text="民警态度粗暴。",
    )


async def test_the_guard_catches_a_batched_handler_reading_back_its_own_unflushed_row(
    engine: AsyncEngine,
) -> None:
    async def write_then_read_back(*, session: AsyncSession, event: Event) -> None:
        await audit(session, case_id=event.case_id, action="case_closed", actor="batching")
        # Autoflush is off: the entry just added is not in the database this query reads.
        query = select(func.count()).select_from(AuditEntry).where(AuditEntry.case_id == event.case_id)
        (await session.exec(query)).one()

    with pytest.raises(BatchingRuleBroken, match="own matter"):
        await apply_slice(engine, write_then_read_back, [closed(), closed()])
    # Nothing of the slice was committed (and it was not quietly redone event by event).
    async with create_session_factory(engine)() as session:
        assert list(await session.exec(select(AuditEntry))) == []


async def test_the_guard_catches_a_batched_handler_reading_across_matters(engine: AsyncEngine) -> None:
    async def count_every_matter(*, session: AsyncSession, event: Event) -> None:
        (await session.exec(select(func.count()).select_from(AuditEntry))).one()
        await audit(session, case_id=event.case_id, action="case_closed", actor="batching")

    with pytest.raises(BatchingRuleBroken, match="pending AuditEntry"):
        await apply_slice(engine, count_every_matter, [closed(), closed()])


async def test_a_batched_handler_keeping_to_the_rules_is_unaffected(engine: AsyncEngine) -> None:
    async with create_session_factory(engine)() as session, session.begin():
        known = closed()
        session.add(snapshot(known.case_id))
        await audit(session, case_id=known.case_id, action="received", actor="batching")
    same_matter = closed()
    events = [known, closed(), same_matter, closed(), closed(same_matter.case_id)]

    async def keep_to_own_matter(*, session: AsyncSession, event: Event) -> None:
        # Queries of its own matter while other matters' rows of the same tables are pending:
        # the audit chain's head, a snapshot by key, and twice an entry for the same matter.
        await session.get(MatterSnapshot, event.case_id)
        if await lookup(session, MatterSnapshot, event.case_id) is None:
            session.add(snapshot(event.case_id))
        await audit(session, case_id=event.case_id, action="case_closed", actor="batching")
        await audit(session, case_id=event.case_id, action="archived", actor="batching")

    assert await apply_slice(engine, keep_to_own_matter, events) == [Verdict.HANDLED] * 5
    async with create_session_factory(engine)() as session:
        for event in events:
            assert verify_chain(await trail(session, event.case_id))
        assert len(await trail(session, known.case_id)) == 3
        assert len(await trail(session, same_matter.case_id)) == 4


async def test_rows_added_later_are_inserted_by_the_slice_and_kept_to_the_rules(engine: AsyncEngine) -> None:
    same_matter = closed()
    events = [closed(), same_matter, closed(), closed(same_matter.case_id)]
    seen: list[int] = []

    async def add_one_later(*, session: AsyncSession, event: Event) -> None:
        # The event of a matter already written in the slice finds the earlier event's row:
        # the slice inserted it before this event ran.
        query = (
            select(func.count()).select_from(MatterSnapshot).where(MatterSnapshot.case_id == event.case_id)
        )
        seen.append((await session.exec(query)).one())
        if not seen[-1]:
            add_later(session, snapshot(event.case_id))

    assert await apply_slice(engine, add_one_later, events) == [Verdict.HANDLED] * 4
    assert seen == [0, 0, 0, 1]
    async with create_session_factory(engine)() as session:
        stored = list(await session.exec(select(MatterSnapshot.case_id)))
    assert sorted(stored) == sorted({event.case_id for event in events})

    async def read_across_matters(*, session: AsyncSession, event: Event) -> None:
        add_later(session, snapshot(event.case_id))
        (await session.exec(select(func.count()).select_from(MatterSnapshot))).one()

    with pytest.raises(BatchingRuleBroken, match="pending MatterSnapshot"):
        await apply_slice(engine, read_across_matters, [closed(), closed()])


async def test_rows_prefetched_by_a_case_id_column_are_answered_from_the_session(engine: AsyncEngine) -> None:
    async with create_session_factory(engine)() as session, session.begin():
        session.add(snapshot("case-known"))
        session.add(snapshot("case-other"))
    async with create_session_factory(engine)() as session, session.begin():
        keep_loaded_rows_for_the_slice(session)
        by_case = col(MatterSnapshot.case_id)
        await prefetch_rows(session, by_case, {"case-known", "case-new"})
        assert [row.case_id for row in await rows_with(session, by_case, "case-known")] == ["case-known"]
        assert await rows_with(session, by_case, "case-new") == []
        # Not prefetched: one query finds it.
        assert [row.case_id for row in await rows_with(session, by_case, "case-other")] == ["case-other"]
        # A row written since counts, pending or flushed, as a query would have found it.
        session.add(snapshot("case-new"))
        assert [row.case_id for row in await rows_with(session, by_case, "case-new")] == ["case-new"]
        await session.flush()
        assert [row.case_id for row in await rows_with(session, by_case, "case-new")] == ["case-new"]
        # What the prefetch found without rows, for a commit hook (the ledger's entries).
        sync_session = session.sync_session
        assert (
            prefetched_without_rows(sync_session, by_case, {"case-known", "case-new", "case-none"}) == set()
        )
        await prefetch_rows(session, by_case, {"case-none"})
        assert prefetched_without_rows(sync_session, by_case, {"case-known", "case-none", "case-other"}) == {
            "case-none"
        }


def remember(key: str, *, look_first: bool) -> Any:
    """A request that checks its key is new, then records it; it may forget the pending rows."""

    async def unit(session: AsyncSession) -> str:
        if look_first:
            assert not [r for r in pending_rows(session, IdempotencyRecord) if r.key == key]
        found = (await session.exec(select(IdempotencyRecord).where(IdempotencyRecord.key == key))).first()
        assert found is None
        session.add(
            new_row(
                IdempotencyRecord,
                key=key,
                username="operator1",
                endpoint="complaints",
                request_hash="h",
                status_code=201,
                response_body="{}",
            )
        )
        return key

    return unit


async def test_the_guard_catches_a_grouped_request_that_ignores_pending_rows(engine: AsyncEngine) -> None:
    writes = GroupCommitter(create_session_factory(engine), max_group=8, guard=True)
    await writes.run(remember("k0", look_first=False))  # alone: nothing pending, autoflush on
    outcomes = await asyncio.gather(
        *(writes.run(remember(f"k{i}", look_first=False)) for i in range(1, 4)), return_exceptions=True
    )
    # The first of the group found nothing pending; the second queried past the first's row.
    assert any(isinstance(outcome, BatchingRuleBroken) for outcome in outcomes), outcomes


async def test_a_grouped_request_that_looks_at_pending_rows_is_unaffected(engine: AsyncEngine) -> None:
    writes = GroupCommitter(create_session_factory(engine), max_group=8, guard=True)
    await writes.run(remember("k0", look_first=True))
    outcomes = await asyncio.gather(*(writes.run(remember(f"k{i}", look_first=True)) for i in range(1, 6)))
    assert outcomes == [f"k{i}" for i in range(1, 6)]


async def test_without_the_guard_nothing_is_checked(engine: AsyncEngine) -> None:
    writes = GroupCommitter(create_session_factory(engine), max_group=8, guard=False)
    await writes.run(remember("k0", look_first=False))
    outcomes = await asyncio.gather(*(writes.run(remember(f"k{i}", look_first=False)) for i in range(1, 4)))
    assert outcomes == ["k1", "k2", "k3"]


@batched_writes
async def on_closed(*, session: AsyncSession, event: CaseClosed, ctx: object) -> None:
    await audit(session, case_id=event.case_id, action="case_closed", actor="batching")


async def on_reopened(*, session: AsyncSession, event: CaseReopened) -> None:
    await audit(session, case_id=event.case_id, action="case_reopened", actor="batching")


def test_a_subscription_batches_the_events_whose_handlers_declare_it() -> None:
    subscription = Subscription(
        durable="batching", handlers={CaseClosed: partial(on_closed, ctx=object()), CaseReopened: on_reopened}
    )
    assert subscription.batched_events == frozenset({CaseClosed})
    listed = Subscription(
        durable="batching", handlers={CaseReopened: on_reopened}, batched_writes=frozenset({CaseReopened})
    )
    assert listed.batched_events == frozenset({CaseReopened})


def test_a_subscription_may_set_its_own_ack_wait_and_deliveries() -> None:
    handlers: dict[type[Event], Any] = {CaseReopened: on_reopened}
    default = consumer_config(Subscription(durable="a", handlers=handlers), max_deliver=8, ack_wait=30.0)
    assert (default.max_deliver, default.ack_wait) == (8, 30.0)
    own = consumer_config(
        Subscription(durable="b", handlers=handlers, ack_wait=5.0, max_deliver=3),
        max_deliver=8,
        ack_wait=30.0,
    )
    assert (own.max_deliver, own.ack_wait) == (3, 5.0)


def test_the_old_names_of_the_batching_settings_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("CONSUMER_TRANSACTION_SIZE", "7")
    monkeypatch.setenv("CONSUMER_BATCH_SIZE", "9")
    settings = ServiceSettings()
    assert (settings.consumer_slice_size, settings.consumer_fetch_batch_size) == (7, 9)
    monkeypatch.setenv("CONSUMER_SLICE_SIZE", "3")
    assert ServiceSettings().consumer_slice_size == 3
