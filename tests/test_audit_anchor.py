"""The audit trail proves itself: tampering with a chain after a checkpoint is found by ``audit verify``.

Each test has its own migrated database and its own service name (so its own checkpoint subject)
on a NATS server of this module's own: the checkpoints of other tests' services cannot mix in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import nats
import pytest
from nats.js import JetStreamContext
from sqlalchemy import delete, text, update
from sqlalchemy.exc import DatabaseError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from services.cli import main as cli_main
from services.cli.audit import checkpoint_services, verify_services
from shared.audit import AuditEntry, audit, trail, verify_chain
from shared.audit_anchor import (
    CHECKPOINT_STREAM,
    ChainBroken,
    all_checkpoints,
    checkpoint_worker,
    publish_checkpoint,
)
from shared.db import create_engine, create_session_factory
from shared.migrations import upgrade
from tests.audit_support import bypassing_the_triggers
from tests.support import TEST_SECRET_KEY, NatsServer, start_nats

MATTERS = ("case-a", "case-b", "case-c")


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("audit-nats"))
    yield server
    server.stop()


@pytest.fixture
async def js(own_nats: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(own_nats.url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


@dataclass
class Chain:
    service: str
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    await asyncio.to_thread(upgrade, "routing", url)
    engine = create_engine(url)
    try:
        yield Chain(f"svc{uuid4().hex[:10]}", url, engine, create_session_factory(engine))
    finally:
        await engine.dispose()


async def write_entries(chain: Chain, matters: tuple[str, ...] = MATTERS, rounds: int = 2) -> None:
    """Entries of several matters, interleaved, in a few transactions."""
    for round_ in range(rounds):
        async with chain.sessions() as session, session.begin():
            for matter in matters:
                await audit(session, case_id=matter, action=f"step{round_}", actor="tester", reason="理由")


async def tamper(chain: Chain, statement: object) -> None:
    async with chain.sessions() as session, session.begin():
        await bypassing_the_triggers(session, statement)


async def verify(chain: Chain, own_nats: NatsServer, lines: list[str] | None = None) -> bool:
    said = lines if lines is not None else []
    return await verify_services({chain.service: chain.url}, nats_url=own_nats.url, report=said.append)


async def checkpointed(chain: Chain, js: JetStreamContext) -> None:
    published, more = await publish_checkpoint(js, chain.engine, service=chain.service)
    assert published is not None and not more


async def test_an_intact_chain_passes_and_its_checkpoint_is_kept(
    chain: Chain, js: JetStreamContext, own_nats: NatsServer
) -> None:
    await write_entries(chain)
    await checkpointed(chain, js)
    lines: list[str] = []
    assert await verify(chain, own_nats, lines)
    assert lines == [f"{chain.service}: OK (6 entries, head seq 6, 1 checkpoints)"]
    # Nothing new: no second checkpoint.  Then more entries, and one more checkpoint.
    assert await publish_checkpoint(js, chain.engine, service=chain.service) == (None, False)
    await write_entries(chain, rounds=1)
    await checkpointed(chain, js)
    assert [c.seq for c in await all_checkpoints(js, chain.service)] == [6, 9]
    assert await verify(chain, own_nats)
    # The stream only grows: its messages cannot be deleted, nor the stream purged.
    info = await js.stream_info(CHECKPOINT_STREAM)
    assert info.config.deny_delete and info.config.deny_purge
    with pytest.raises(nats.js.errors.APIError):
        await js.purge_stream(CHECKPOINT_STREAM)


@pytest.mark.parametrize(
    "how",
    ["edit a reason", "delete the tail", "delete a matter", "delete the newest matter", "truncate"],
)
async def test_tampering_after_a_checkpoint_is_detected(
    how: str, chain: Chain, js: JetStreamContext, own_nats: NatsServer
) -> None:
    await write_entries(chain, rounds=2)
    async with chain.sessions() as session, session.begin():
        await audit(session, case_id="case-last", action="received", actor="tester")
    await checkpointed(chain, js)
    assert await verify(chain, own_nats)

    statements = {
        "edit a reason": update(AuditEntry).where(col(AuditEntry.seq) == 2).values(reason="改过的理由"),
        "delete the tail": delete(AuditEntry).where(col(AuditEntry.seq) > 5),
        "delete a matter": delete(AuditEntry).where(col(AuditEntry.case_id) == "case-b"),
        "delete the newest matter": delete(AuditEntry).where(col(AuditEntry.case_id) == "case-last"),
        "truncate": delete(AuditEntry),
    }
    await tamper(chain, statements[how])
    lines: list[str] = []
    assert not await verify(chain, own_nats, lines)
    assert lines[0].startswith(f"{chain.service}: BROKEN: ")
    if how != "edit a reason":
        # The service's own checkpoint step refuses to anchor a chain that lost entries (it
        # checks only the entries since its last checkpoint: an edit before it is for verify).
        with pytest.raises(ChainBroken):
            await publish_checkpoint(js, chain.engine, service=chain.service)


async def test_a_chain_without_any_checkpoint_is_not_proven(
    chain: Chain, js: JetStreamContext, own_nats: NatsServer
) -> None:
    await write_entries(chain, rounds=1)
    lines: list[str] = []
    assert not await verify(chain, own_nats, lines)
    assert "no checkpoint" in lines[0]
    assert await verify_services(
        {chain.service: chain.url}, nats_url=own_nats.url, allow_unanchored=True, report=lines.append
    )


async def test_the_database_refuses_to_change_or_delete_entries(chain: Chain) -> None:
    await write_entries(chain, rounds=1)
    for statement in ("UPDATE audit_log SET reason = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DatabaseError, match="append-only"):
            async with chain.engine.begin() as connection:
                await connection.execute(text(statement))
    async with chain.sessions() as session:
        assert verify_chain(await trail(session, "case-a"))


async def test_a_matter_trail_is_checked_against_its_neighbours_in_the_service_chain(chain: Chain) -> None:
    await write_entries(chain, rounds=2)  # seq: a1 b2 c3 a4 b5 c6
    async with chain.sessions() as session:
        intact = await trail(session, "case-b")
        assert [e.seq for e in intact] == [2, 5] and sorted(intact.around) == [1, 3, 4, 6]
        assert verify_chain(intact)
    # Another matter's entry next to case-b's goes: case-b's entry after it no longer links.
    await tamper(chain, delete(AuditEntry).where(col(AuditEntry.seq) == 4))
    async with chain.sessions() as session:
        assert not verify_chain(await trail(session, "case-b"))
        assert verify_chain(await trail(session, "case-c"))


async def test_concurrent_appends_keep_the_chain_gap_free(tmp_path: Path, chain: Chain) -> None:
    # Two engines on one file: two instances of the service, writing at once.
    other = create_engine(chain.url)
    sessions = [chain.sessions, create_session_factory(other)]

    async def append(index: int) -> None:
        async with sessions[index % 2]() as session, session.begin():
            for step in range(3):
                await audit(session, case_id=f"case-{index % 5}", action=f"step{step}", actor="tester")

    async def append_then_fail(index: int) -> None:
        # A rolled-back transaction takes no number.
        async with sessions[index % 2]() as session:
            with pytest.raises(ValueError):
                async with session.begin():
                    await audit(session, case_id="case-undone", action="undone", actor="tester")
                    await session.flush()
                    raise ValueError("refused")

    try:
        await asyncio.gather(*(append(i) for i in range(20)), *(append_then_fail(i) for i in range(4)))
    finally:
        await other.dispose()
    async with chain.engine.connect() as connection:
        from shared.audit_anchor import scan_chain

        scan = await scan_chain(connection)
    assert scan.problem is None and scan.entries == 60 and scan.head[0] == 60


async def test_the_checkpoint_worker_anchors_the_chain_and_stops_at_a_break(
    chain: Chain, js: JetStreamContext
) -> None:
    await write_entries(chain, rounds=1)
    worker = checkpoint_worker(
        service=chain.service, engine=chain.engine, jetstream=lambda: js, interval_seconds=0.05
    )
    worker.start()
    try:
        for _ in range(100):
            if [c.seq for c in await all_checkpoints(js, chain.service)] == [3]:
                break
            await asyncio.sleep(0.05)
        assert [c.seq for c in await all_checkpoints(js, chain.service)] == [3]
        await tamper(chain, delete(AuditEntry).where(col(AuditEntry.seq) == 3))
        await write_entries(chain, rounds=1)
        for _ in range(100):
            if worker.health.consecutive_failures:
                break
            await asyncio.sleep(0.05)
        assert worker.health.consecutive_failures and "seq 3" in (worker.health.last_error or "")
        assert [c.seq for c in await all_checkpoints(js, chain.service)] == [3]
    finally:
        await worker.stop(timeout=5)


async def test_the_commands_exit_non_zero_on_a_break(
    chain: Chain, own_nats: NatsServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROUTING_DATABASE_URL", chain.url)
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("NATS_URL", own_nats.url)
    await write_entries(chain, rounds=1)

    def run(*argv: str) -> int:
        return cli_main(["audit", *argv, "--service", "routing"])

    assert await asyncio.to_thread(run, "checkpoint") == 0
    assert await asyncio.to_thread(run, "verify") == 0
    assert "routing: OK (3 entries" in capsys.readouterr().out
    await tamper(chain, delete(AuditEntry).where(col(AuditEntry.seq) == 3))
    assert await asyncio.to_thread(run, "verify") == 1
    assert "routing: BROKEN: the checkpoint of" in capsys.readouterr().out
    assert await asyncio.to_thread(run, "checkpoint") == 1
    # The same through the module's function, for a second, untouched chain name.
    assert not await checkpoint_services({"routing": chain.url}, nats_url=own_nats.url, report=print)


async def test_after_a_restore_the_anchor_is_restarted_and_the_restart_stays_visible(
    chain: Chain, js: JetStreamContext, own_nats: NatsServer
) -> None:
    await write_entries(chain, rounds=2)
    await checkpointed(chain, js)
    # A restore brings back an older database: the newest entries are gone.
    await tamper(chain, delete(AuditEntry).where(col(AuditEntry.seq) > 4))
    assert not await verify(chain, own_nats)
    with pytest.raises(ChainBroken):
        await publish_checkpoint(js, chain.engine, service=chain.service)

    said: list[str] = []
    databases = {chain.service: chain.url}
    assert await checkpoint_services(
        databases, nats_url=own_nats.url, restart="从备份恢复", report=said.append
    )
    assert said == [f"{chain.service}: checkpoint at seq 4"]
    lines: list[str] = []
    assert await verify(chain, own_nats, lines)
    assert "anchored anew at seq 4" in lines[0] and "从备份恢复" in lines[0]
    assert "1 earlier checkpoints not checked" in lines[0]
    # The service's own checkpoints go on from the restart.
    await write_entries(chain, rounds=1)
    await checkpointed(chain, js)
    assert [c.seq for c in await all_checkpoints(js, chain.service)] == [6, 4, 7]
    assert await verify(chain, own_nats)

    # A chain broken in itself is not anchored anew.
    await tamper(chain, update(AuditEntry).where(col(AuditEntry.seq) == 2).values(reason="改过"))
    assert not await checkpoint_services(
        databases, nats_url=own_nats.url, restart="再次恢复", report=said.append
    )
    assert said[-1].startswith(f"{chain.service}: BROKEN: ")
