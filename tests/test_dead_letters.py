"""Dead letters a person can act on (``shared.deadletters``): listed, replayed after a fix, discarded.

Real nats-server and a real (migrated) database, as in ``tests/test_bus.py``: each test has its
own "DLTEST" stream and "DLTEST_DLQ", deleted afterwards, and its own durable names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from nats.js import JetStreamContext
from sqlalchemy import delete
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.audit import audit, trail
from shared.bus import (
    DEAD_LETTER_STREAM_SUFFIX,
    HEADER_DEAD_LETTER_REASON,
    EventConsumer,
    PermanentError,
    Subscription,
    replay_subject,
)
from shared.deadletters import (
    DeadLetter,
    DeadLetterBox,
    DeadLetterOutcome,
    DeadLetterStatus,
    count_parked,
    discard_dead_letter,
    list_dead_letters,
    replay_all,
    replay_dead_letter,
)
from shared.errors import FieldProblems, NotFound
from shared.events import CaseClosed
from shared.outbox import HEADER_EVENT_TYPE, HEADER_EVENT_VERSION, HEADER_MSG_ID
from tests.audit_support import erase_audit_log
from tests.conftest import BACKENDS
from tests.databases import MigratedDatabase as Db
from tests.databases import migrated_database
from tests.support import NatsServer, eventually, scratch_stream

STREAM = "DLTEST"
DLQ_STREAM = STREAM + DEAD_LETTER_STREAM_SUFFIX


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    async with scratch_stream(nats_server.url, STREAM) as context:
        yield context


@pytest.fixture(scope="module", params=BACKENDS)
async def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Db]:
    async with migrated_database(str(request.param), tmp_path_factory.mktemp("deadletters"), "routing") as db:
        yield db


@pytest.fixture
async def db(database: Db) -> Db:
    async with database.sessions() as session, session.begin():
        await session.exec(delete(DeadLetterOutcome))
        await erase_audit_log(session)
    return database


class Handler:
    """Applies an event (an audit row) unless it is ``broken``: then it fails, as a bug would."""

    def __init__(self, *, broken: bool = False, failure: type[Exception] = RuntimeError) -> None:
        self.broken = broken
        self.failure = failure
        self.applied: Counter[str] = Counter()
        self.calls = 0

    async def __call__(self, *, session: AsyncSession, event: CaseClosed) -> None:
        self.calls += 1
        if self.broken:
            raise self.failure(f"cannot read the note of {event.event_id}")
        await audit(session, case_id=event.case_id, action="case_closed", actor="dltest")
        self.applied[event.event_id] += 1


def durable_name() -> str:
    return f"dltest-{uuid4().hex[:8]}"


def closed_event() -> CaseClosed:
    return CaseClosed(case_id=f"case-{uuid4().hex[:12]}", note="办结归档")


async def publish(js: JetStreamContext, event: CaseClosed) -> None:
    headers = {
        HEADER_MSG_ID: event.event_id,
        HEADER_EVENT_TYPE: event.event_type,
        HEADER_EVENT_VERSION: str(event.version),
    }
    await js.publish(event.subject(), event.model_dump_json().encode(), headers=headers)


@contextlib.asynccontextmanager
async def consuming(
    js: JetStreamContext, db: Db, durable: str, handler: Handler, *, max_deliver: int = 8
) -> AsyncIterator[EventConsumer]:
    consumer = EventConsumer(
        js=js,
        stream=STREAM,
        subscription=Subscription(durable=durable, handlers={CaseClosed: handler}),
        session_factory=db.sessions,
        max_deliver=max_deliver,
        ack_wait=30.0,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


def box_for(js: JetStreamContext, *durables: str) -> DeadLetterBox:
    return DeadLetterBox(js=js, stream=STREAM, durables=durables, timeout=5.0)


async def parked_letters(db: Db, box: DeadLetterBox, expected: int) -> list[DeadLetter]:
    async def probe() -> list[DeadLetter] | None:
        letters = await list_dead_letters(sessions=db.sessions, box=box)
        return letters if len(letters) >= expected else None

    return list(await eventually(probe, timeout=15, what="dead letters"))


async def actions_of(db: Db, case_id: str) -> list[tuple[str, str, str | None]]:
    async with db.sessions() as session:
        return [(entry.action, entry.actor, entry.reason) for entry in await trail(session, case_id)]


async def test_a_poison_event_is_listed_then_replayed_after_the_fix_and_applied_once(
    js: JetStreamContext, db: Db
) -> None:
    flaky, flaky_durable = Handler(broken=True), durable_name()
    healthy, healthy_durable = Handler(), durable_name()
    item = closed_event()
    await publish(js, item)
    box = box_for(js, flaky_durable)
    # Deliveries 1 and 2 fail (a nak of 0.5 s between them); the second is the last, and parked.
    async with (
        consuming(js, db, flaky_durable, flaky, max_deliver=2),
        consuming(js, db, healthy_durable, healthy),
    ):
        (letter,) = await parked_letters(db, box, expected=1)
        assert letter.status == DeadLetterStatus.PARKED
        assert (letter.consumer, letter.subject, letter.event_type) == (
            flaky_durable,
            item.subject(),
            "CaseClosed",
        )
        assert (letter.case_id, letter.event_id, letter.tries) == (item.case_id, item.event_id, 2)
        assert (
            letter.reason.startswith("gave up after 2 deliveries") and "cannot read the note" in letter.reason
        )
        assert letter.parked_at is not None
        assert await count_parked(sessions=db.sessions, box=box) == 1
        await eventually(
            lambda: asyncio.sleep(0, healthy.applied[item.event_id] == 1), what="healthy applied"
        )

        flaky.broken = False  # the fix is deployed
        replayed = await replay_dead_letter(
            sessions=db.sessions, box=box, letter_id=letter.id, actor="supervisor1"
        )
        assert replayed.status == DeadLetterStatus.REPLAYED and replayed.decided_by == "supervisor1"
        await eventually(
            lambda: asyncio.sleep(0, flaky.applied[item.event_id] == 1), what="the replay applied"
        )
        await asyncio.sleep(0.3)
        # The replay was for the consumer that parked it: the healthy one never saw it.
        healthy_info = await js.consumer_info(STREAM, healthy_durable)
        assert healthy_info.delivered.stream_seq == 1 and healthy_info.num_pending == 0

    assert flaky.applied == {item.event_id: 1} and healthy.applied == {item.event_id: 1}
    assert healthy.calls == 1
    (listed,) = await list_dead_letters(sessions=db.sessions, box=box)
    assert listed.status == DeadLetterStatus.REPLAYED and listed.decided_by == "supervisor1"
    assert await count_parked(sessions=db.sessions, box=box) == 0
    assert await list_dead_letters(sessions=db.sessions, box=box, status=DeadLetterStatus.PARKED) == []

    # The replay went out on the consumer's replay subject under a fresh message id; the payload
    # kept the event's id.
    last = await js.get_msg(STREAM, seq=(await js.stream_info(STREAM)).state.last_seq)
    assert (
        last.subject
        == replay_subject(flaky_durable, item.subject())
        == f"sv.replay.{flaky_durable}.CaseClosed.v1"
    )
    headers = last.headers or {}
    assert headers[HEADER_MSG_ID] == f"{item.event_id}.replay.{letter.id}"
    assert HEADER_DEAD_LETTER_REASON not in headers and headers[HEADER_EVENT_TYPE] == "CaseClosed"
    assert CaseClosed.model_validate_json(last.data or b"").event_id == item.event_id

    with pytest.raises(FieldProblems) as again:
        await replay_dead_letter(sessions=db.sessions, box=box, letter_id=letter.id, actor="supervisor1")
    assert again.value.status_code == 409
    assert ("dead_letter_replayed", "supervisor1", None) in await actions_of(db, item.case_id)


async def test_discarding_needs_a_reason_and_records_it(js: JetStreamContext, db: Db) -> None:
    handler, durable = Handler(broken=True, failure=PermanentError), durable_name()
    item = closed_event()
    await publish(js, item)
    box = box_for(js, durable)
    async with consuming(js, db, durable, handler):
        (letter,) = await parked_letters(db, box, expected=1)
    assert letter.tries == 1 and letter.reason == f"cannot read the note of {item.event_id}"

    with pytest.raises(FieldProblems) as blank:
        await discard_dead_letter(
            sessions=db.sessions, box=box, letter_id=letter.id, actor="supervisor1", reason=" "
        )
    assert blank.value.status_code == 422 and blank.value.problems[0][0] == "reason"
    assert (await list_dead_letters(sessions=db.sessions, box=box))[0].status == DeadLetterStatus.PARKED

    discarded = await discard_dead_letter(
        sessions=db.sessions,
        box=box,
        letter_id=letter.id,
        actor="supervisor1",
        reason="事项已人工办结，无需补发",
    )
    assert discarded.status == DeadLetterStatus.DISCARDED
    (listed,) = await list_dead_letters(sessions=db.sessions, box=box)
    assert (listed.status, listed.decided_by, listed.decision_reason) == (
        DeadLetterStatus.DISCARDED,
        "supervisor1",
        "事项已人工办结，无需补发",
    )
    assert listed.decided_at is not None
    assert await count_parked(sessions=db.sessions, box=box) == 0
    assert ("dead_letter_discarded", "supervisor1", "事项已人工办结，无需补发") in await actions_of(
        db, item.case_id
    )
    # A discarded event is not replayed, alone or with the rest.
    with pytest.raises(FieldProblems):
        await replay_dead_letter(sessions=db.sessions, box=box, letter_id=letter.id, actor="supervisor1")
    assert await replay_all(sessions=db.sessions, box=box, actor="supervisor1") == []


async def test_replay_all_replays_every_parked_event_and_only_the_services_own(
    js: JetStreamContext, db: Db
) -> None:
    mine, theirs = Handler(broken=True, failure=PermanentError), Handler(broken=True, failure=PermanentError)
    my_durable, their_durable = durable_name(), durable_name()
    items = [closed_event(), closed_event()]
    for item in items:
        await publish(js, item)
    box = box_for(js, my_durable)
    async with consuming(js, db, my_durable, mine), consuming(js, db, their_durable, theirs):
        await parked_letters(db, box, expected=2)
        their_letters = await parked_letters(db, box_for(js, their_durable), expected=2)
        # Another service's dead letter is not this service's to show or touch.
        with pytest.raises(NotFound):
            await replay_dead_letter(sessions=db.sessions, box=box, letter_id=their_letters[0].id, actor="s")
        mine.broken = False
        replayed = await replay_all(sessions=db.sessions, box=box, actor="supervisor1")
        assert len(replayed) == 2 and {letter.event_id for letter in replayed} == {i.event_id for i in items}
        await eventually(lambda: asyncio.sleep(0, len(mine.applied) == 2), what="both replays applied")
    assert mine.applied == {item.event_id: 1 for item in items}
    assert await count_parked(sessions=db.sessions, box=box) == 0
    # The replays were not the other consumer's: its dead letters are as they were.
    assert await count_parked(sessions=db.sessions, box=box_for(js, their_durable)) == 2
    with pytest.raises(NotFound):
        await discard_dead_letter(
            sessions=db.sessions, box=box, letter_id=10_000, actor="s", reason="不存在的"
        )
