"""Group commit: concurrent writes share a transaction, yet each succeeds or fails on its own."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.audit import AuditEntry, audit, trail, verify_chain
from shared.db import create_engine, create_session_factory, new_row, table_of
from shared.groupcommit import GroupCommitter
from shared.idempotency import IdempotencyRecord
from shared.slice_rows import pending_rows
from tests.conftest import BACKENDS
from tests.databases import Databases

request_name: contextvars.ContextVar[str] = contextvars.ContextVar("request_name", default="")


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    databases = Databases(str(request.param), tmp_path)
    engine = create_engine(await databases.url_for("groupcommit"))
    key = "INTEGER PRIMARY KEY" if request.param == "sqlite" else "SERIAL PRIMARY KEY"
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE item (id {key}, name VARCHAR(20) UNIQUE)"))
        await conn.run_sync(
            SQLModel.metadata.create_all, tables=[table_of(IdempotencyRecord), table_of(AuditEntry)]
        )
    try:
        yield engine
    finally:
        await engine.dispose()
        await databases.drop_all()


def count_commits(engine: AsyncEngine) -> list[int]:
    commits: list[int] = []
    event.listen(engine.sync_engine, "commit", lambda _conn: commits.append(1))
    return commits


async def names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT name FROM item ORDER BY id"))).scalars())


def insert(name: str, *, then_fail: bool = False):  # type: ignore[no-untyped-def]
    async def unit(session: AsyncSession) -> str:
        await session.exec(text("INSERT INTO item (name) VALUES (:name)"), params={"name": name})
        if then_fail:
            raise ValueError(f"{name} refused after writing")
        return f"{name} by {request_name.get()}"

    return unit


async def as_request(writes: GroupCommitter, name: str, unit) -> str:  # type: ignore[no-untyped-def]
    request_name.set(name)
    result: str = await writes.run(unit)
    return result


async def test_concurrent_writes_share_commits_and_each_gets_its_own_answer(engine: AsyncEngine) -> None:
    writes = GroupCommitter(create_session_factory(engine), max_group=8)
    commits = count_commits(engine)
    answers = await asyncio.gather(*(as_request(writes, f"r{i}", insert(f"item{i}")) for i in range(40)))
    # Each unit ran in its own request's context, and its answer came after its commit.
    assert answers == [f"item{i} by r{i}" for i in range(40)]
    assert sorted(await names(engine)) == sorted(f"item{i}" for i in range(40))
    # The first request commits alone; the rest waited in groups of at most eight.
    assert 5 <= len(commits) <= 10


async def test_a_failing_write_is_rolled_back_alone(engine: AsyncEngine) -> None:
    writes = GroupCommitter(create_session_factory(engine), max_group=8)
    await writes.run(insert("existing"))
    outcomes = await asyncio.gather(
        writes.run(insert("a")),
        writes.run(insert("b", then_fail=True)),  # wrote, then raised
        writes.run(insert("existing")),  # violates the unique name
        writes.run(insert("c")),
        return_exceptions=True,
    )
    assert outcomes[0] == "a by " and outcomes[3] == "c by "
    assert isinstance(outcomes[1], ValueError)
    assert isinstance(outcomes[2], IntegrityError)
    assert await names(engine) == ["existing", "a", "c"]


async def test_a_later_write_in_the_group_sees_the_earlier_ones(engine: AsyncEngine) -> None:
    writes = GroupCommitter(create_session_factory(engine), max_group=8)

    async def count_then_insert(session: AsyncSession) -> int:
        seen = (await session.exec(text("SELECT count(*) FROM item"))).scalar_one()
        await session.exec(text("INSERT INTO item (name) VALUES (:n)"), params={"n": f"n{seen}"})
        return int(seen)

    seen = await asyncio.gather(*(writes.run(count_then_insert) for _ in range(6)))
    assert sorted(seen) == [0, 1, 2, 3, 4, 5]


async def test_a_failed_commit_fails_every_write_of_the_group(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    writes = GroupCommitter(sessions, max_group=8)
    fail_next = [True]

    def refuse(_conn: object) -> None:
        if fail_next and fail_next.pop():
            raise OSError("disk full")

    event.listen(engine.sync_engine, "commit", refuse)
    outcomes = await asyncio.gather(
        *(writes.run(remember(f"x{i}")) for i in range(3)),
        writes.run(remember("y", then_fail=True)),
        return_exceptions=True,
    )
    assert all(isinstance(o, OSError) for o in outcomes[:3]), outcomes
    assert isinstance(outcomes[3], ValueError)  # its own error, not the commit's
    assert await stored_keys(engine) == []
    # The committer goes on working after the failure.
    assert await writes.run(remember("later")) == ""
    assert await stored_keys(engine) == ["later"]


async def test_a_request_that_stops_waiting_still_has_its_write_committed(engine: AsyncEngine) -> None:
    writes = GroupCommitter(create_session_factory(engine), max_group=8)
    started = asyncio.Event()

    async def slow(session: AsyncSession) -> str:
        started.set()
        await asyncio.sleep(0.05)
        await session.exec(text("INSERT INTO item (name) VALUES ('slow')"))
        return "slow"

    waiting = asyncio.create_task(writes.run(slow))
    await started.wait()
    waiting.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await writes.close()
    assert await names(engine) == ["slow"]


async def test_a_request_arriving_as_the_last_transaction_ends_is_answered(engine: AsyncEngine) -> None:
    # Seen once in the benchmark: the last of a thousand paced complaints never got an answer.
    # It arrived in the very turn of the event loop in which the transaction that had emptied
    # the queue ended, and found that transaction still counted as running, so nothing ran it.
    writes = GroupCommitter(create_session_factory(engine), max_group=4)

    def under_way() -> bool:
        return any(task.get_name() == "group-commit" for task in asyncio.all_tasks())

    async def turn_by_turn_until(condition: Callable[[], bool]) -> None:
        # One turn of the event loop at a time, not an Event: the moment sought lasts one turn.
        for _ in range(1_000_000):
            if condition():
                return
            await asyncio.sleep(0)
        raise AssertionError("never happened")

    for i in range(20):
        first = asyncio.create_task(writes.run(insert(f"first{i}")))
        await turn_by_turn_until(under_way)
        await turn_by_turn_until(lambda: not under_way())
        # The first turn with no transaction under way: arrive now, in this very turn.
        async with asyncio.timeout(10):
            assert await writes.run(insert(f"second{i}")) == f"second{i} by "
        await first
    assert len(await names(engine)) == 40


def test_group_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        GroupCommitter(None, max_group=0)  # type: ignore[arg-type]


def remember(key: str, *, then_fail: bool = False):  # type: ignore[no-untyped-def]
    """A unit that adds an ORM row (left to the group's one flush), and may fail after adding it."""

    async def unit(session: AsyncSession) -> str:
        earlier = [r.key for r in pending_rows(session, IdempotencyRecord)]
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
        if then_fail:
            raise ValueError(f"{key} refused after adding its row")
        return ",".join(earlier)

    return unit


async def stored_keys(engine: AsyncEngine) -> list[str]:
    async with create_session_factory(engine)() as session:
        return sorted(r.key for r in await session.exec(select(IdempotencyRecord)))


async def test_added_rows_are_written_at_the_groups_commit_and_a_clean_failure_leaves_none(
    engine: AsyncEngine,
) -> None:
    writes = GroupCommitter(create_session_factory(engine), max_group=8)
    await writes.run(remember("k0"))  # alone; the next four then wait for one transaction together
    commits = count_commits(engine)
    outcomes = await asyncio.gather(
        writes.run(remember("k1")),
        writes.run(remember("k2", then_fail=True)),
        writes.run(remember("k3")),
        writes.run(remember("k4")),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], ValueError)
    # Each saw the rows its group's earlier requests had added (k2's was forgotten when it failed).
    assert outcomes[0] == "" and outcomes[2] == "k1" and outcomes[3] == "k1,k3"
    assert await stored_keys(engine) == ["k0", "k1", "k3", "k4"]
    assert len(commits) == 1


async def test_a_conflict_found_at_commit_redoes_the_group_a_transaction_each(engine: AsyncEngine) -> None:
    writes = GroupCommitter(create_session_factory(engine), max_group=8)
    await writes.run(remember("k0"))
    outcomes = await asyncio.gather(
        writes.run(remember("k1")),
        writes.run(remember("k0")),  # the same primary key: the group's flush fails
        writes.run(remember("k2")),
        return_exceptions=True,
    )
    assert outcomes[0] == "" and outcomes[2] == ""
    assert isinstance(outcomes[1], IntegrityError)
    assert await stored_keys(engine) == ["k0", "k1", "k2"]


async def test_a_forgotten_audit_entry_is_not_chained_to(engine: AsyncEngine) -> None:
    writes = GroupCommitter(create_session_factory(engine), max_group=8)

    def audited(action: str, *, then_fail: bool = False):  # type: ignore[no-untyped-def]
        async def unit(session: AsyncSession) -> str:
            await audit(session, case_id="case-1", action=action, actor="operator1")
            if then_fail:
                raise ValueError(f"{action} refused after auditing")
            return action

        return unit

    await writes.run(audited("received"))
    outcomes = await asyncio.gather(
        writes.run(audited("first")),
        writes.run(audited("undone", then_fail=True)),
        writes.run(audited("second")),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], ValueError)
    async with create_session_factory(engine)() as session:
        entries = await trail(session, "case-1")
    assert [e.action for e in entries] == ["received", "first", "second"]
    assert verify_chain(entries)
