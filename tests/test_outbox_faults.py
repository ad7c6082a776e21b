"""A NATS that stops answering never freezes a service: bounded publishes, start-up without NATS.

Each test runs its own nats-server, since it pauses (SIGSTOP) or withholds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import nats
import pytest
from nats.js import JetStreamContext
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.registry import SERVICES
from shared.bus import ensure_streams
from shared.db import create_engine, create_session_factory
from shared.events import CaseClosed
from shared.migrations import upgrade
from shared.outbox import OutboxMessage, OutboxRelay, UnacknowledgedError, record_event
from tests import fixtures
from tests.support import (
    TEST_IDENTITY_KEY,
    TEST_SECRET_KEY,
    InProcessServices,
    NatsServer,
    eventually,
    free_port,
    nats_server_binary,
)

STREAM = "FAULTS"

Sessions = async_sessionmaker[AsyncSession]


def start_nats_on(store_dir: Path, port: int) -> NatsServer:
    store_dir.mkdir(parents=True, exist_ok=True)
    config = store_dir / "nats.conf"
    config.write_text(
        f'listen: "127.0.0.1:{port}"\njetstream {{\n  store_dir: "{store_dir / "js"}"\n}}\n', encoding="utf-8"
    )
    process = subprocess.Popen(
        [nats_server_binary(), "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return NatsServer(url=f"nats://127.0.0.1:{port}", process=process, store_dir=store_dir, port=port)


@contextlib.contextmanager
def paused(server: NatsServer) -> Iterator[None]:
    """The server keeps its connections but answers nothing: publish acks never come."""
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    running = start_nats_on(tmp_path / "nats", free_port())
    try:
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.process.pid, signal.SIGCONT)
        running.stop()


@pytest.fixture
async def js(server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(server.url, connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    context = nc.jetstream(timeout=2.0)
    try:
        await eventually(lambda: _ensure(context), timeout=10, what="JetStream to accept the stream")
        yield context
    finally:
        await nc.close()


async def _ensure(js: JetStreamContext) -> bool:
    try:
        await ensure_streams(js, stream=STREAM, max_age_days=1)
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
async def database(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('faults') / 'outbox.db'}"
    await asyncio.to_thread(upgrade, "verification", url)
    yield url


@pytest.fixture
async def relay_parts(database: str, js: JetStreamContext) -> AsyncIterator[tuple[AsyncEngine, Sessions]]:
    engine = create_engine(database)
    sessions = create_session_factory(engine)
    async with sessions() as session, session.begin():
        await session.exec(delete(OutboxMessage))
    try:
        yield engine, sessions
    finally:
        await engine.dispose()


async def write_events(sessions: Sessions, count: int) -> list[str]:
    events = [CaseClosed(case_id=f"case-{uuid4().hex[:12]}", note="办结归档") for _ in range(count)]
    async with sessions() as session, session.begin():
        for item in events:
            record_event(session, item)
    return [item.event_id for item in events]


async def outbox(sessions: Sessions) -> list[OutboxMessage]:
    async with sessions() as session:
        return list(await session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))))


async def stream_count(js: JetStreamContext) -> int:
    return int((await js.stream_info(STREAM)).state.messages)


async def test_publish_without_acks_returns_in_time_counts_failed_and_retries_later(
    server: NatsServer, js: JetStreamContext, relay_parts: tuple[AsyncEngine, Sessions]
) -> None:
    engine, sessions = relay_parts
    relay = OutboxRelay(engine=engine, session_factory=sessions, js=js, publish_timeout=0.5)
    await write_events(sessions, 20)
    with paused(server):
        began = time.monotonic()
        with pytest.raises(UnacknowledgedError):
            await relay.publish_pending()
        assert time.monotonic() - began < 2.0
    rows = await outbox(sessions)
    assert all(row.published_at is None and row.attempts == 1 for row in rows)

    # The server is back; what it took before the pause is dropped by the duplicate window.
    assert await relay.publish_pending() == 20
    assert all(row.published_at is not None for row in await outbox(sessions))
    assert await stream_count(js) == 20


async def test_relay_worker_backs_off_stops_in_time_and_catches_up(
    server: NatsServer, js: JetStreamContext, relay_parts: tuple[AsyncEngine, Sessions]
) -> None:
    engine, sessions = relay_parts
    relay = OutboxRelay(engine=engine, session_factory=sessions, js=js, publish_timeout=0.3, poll_seconds=0.1)
    relay.worker.start()
    try:
        with paused(server):
            await write_events(sessions, 10)  # the commit wakes the relay
            await eventually(
                lambda: _true(relay.worker.health.consecutive_failures >= 1), timeout=5, what="a failed step"
            )
            assert "UnacknowledgedError" in (relay.worker.health.last_error or "")
            relay_with_long_wait = OutboxRelay(
                engine=engine,
                session_factory=sessions,
                js=js,
                publish_timeout=30,
            )
            await relay.worker.stop(timeout=1.0)
            # Stopping a relay that waits for acks that will not come finishes within its bound.
            relay_with_long_wait.worker.start()
            await asyncio.sleep(0.3)
            began = time.monotonic()
            await relay_with_long_wait.worker.stop(timeout=1.0)
            assert time.monotonic() - began < 1.5
        relay.worker.start()

        async def all_published() -> bool:
            return all(row.published_at is not None for row in await outbox(sessions))

        await eventually(all_published, timeout=15, what="the backlog to be published")
        assert await stream_count(js) == 10
        assert relay.worker.health.consecutive_failures == 0
    finally:
        await relay.worker.stop(timeout=2.0)


async def test_a_service_started_without_nats_serves_http_and_catches_up(tmp_path: Path) -> None:
    port = free_port()
    spec = SERVICES["intake"]
    env = {
        "SECRET_KEY": TEST_SECRET_KEY,
        "IDENTITY_KEY": TEST_IDENTITY_KEY,
        "NATS_URL": f"nats://127.0.0.1:{port}",
        "DEMO_MODE": "true",
        "LOG_JSON": "true",
        "OUTBOX_POLL_SECONDS": "0.2",
        "STOP_TIMEOUT_SECONDS": "2",
        spec.database_env: f"sqlite:///{tmp_path / 'intake.db'}",
        spec.port_env: str(free_port()),
    }
    services = InProcessServices()
    await services.start("intake", env)
    server: NatsServer | None = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{env[spec.port_env]}", timeout=10) as client:
            assert (await client.get("/healthz")).status_code == 200
            response = await client.get("/readyz")
            assert response.status_code == 503
            body = response.json()
            assert body["database"] is True and body["bus"] is False and body["ready"] is False
            assert "NATS is not connected" in body["reasons"]

            token = await client.post(
                "/api/v1/auth/token", data={"username": "operator1", "password": "demo"}
            )
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            created = await client.post("/api/v1/complaints", json=fixtures.complaint(), headers=headers)
            assert created.status_code == 201, created.text
            assert (await client.get("/readyz")).json()["outbox_oldest_unpublished_seconds"] is not None

            server = start_nats_on(tmp_path / "nats", port)

            async def ready() -> dict[str, object] | None:
                response = await client.get("/readyz")
                return response.json() if response.status_code == 200 else None

            body = await eventually(ready, timeout=20, what="/readyz to answer 200 once NATS runs")
            assert body["bus"] is True and body["reasons"] == []
            assert "outbox-relay" in body["workers"]

            async def published() -> bool:
                response = await client.get("/readyz")
                return response.json()["outbox_oldest_unpublished_seconds"] is None

            await eventually(published, timeout=10, what="the complaint's events to be published")
    finally:
        await services.stop_all()
        if server is not None:
            server.stop()


async def test_stopping_a_service_that_waits_for_nats_finishes_in_time(tmp_path: Path) -> None:
    spec = SERVICES["intake"]
    env = {
        "SECRET_KEY": TEST_SECRET_KEY,
        "IDENTITY_KEY": TEST_IDENTITY_KEY,
        "NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "LOG_JSON": "true",
        "STOP_TIMEOUT_SECONDS": "2",
        spec.database_env: f"sqlite:///{tmp_path / 'intake.db'}",
        spec.port_env: str(free_port()),
    }
    services = InProcessServices()
    await services.start("intake", env)
    await asyncio.sleep(0.5)  # a few connection attempts
    began = time.monotonic()
    await services.stop_all()
    assert time.monotonic() - began < 3.0


async def _true(value: bool) -> bool:
    return value


async def test_a_leased_batch_is_skipped_by_another_relay_until_its_outcome_is_known(
    server: NatsServer, js: JetStreamContext, relay_parts: tuple[AsyncEngine, Sessions]
) -> None:
    # PostgreSQL's lease, run on SQLite (which ignores FOR UPDATE SKIP LOCKED; the lease alone decides).
    engine, sessions = relay_parts
    first, second = (
        OutboxRelay(engine=engine, session_factory=sessions, js=js, publish_timeout=1.0, lease_rows=True)
        for _ in range(2)
    )
    await write_events(sessions, 5)
    with paused(server):
        waiting = asyncio.create_task(first.publish_pending())
        await eventually(lambda: _leased(sessions), timeout=5, what="the first relay to lease the batch")
        assert await second.publish_pending() == 0, "leased rows are not published twice at once"
        with pytest.raises(UnacknowledgedError):
            await waiting
    rows = await outbox(sessions)
    assert all(row.lease_until is None and row.attempts == 1 for row in rows), "a failure releases the lease"
    assert await second.publish_pending() == 5
    assert all(row.published_at is not None and row.lease_until is None for row in await outbox(sessions))
    assert await stream_count(js) == 5


async def _leased(sessions: Sessions) -> bool:
    rows = await outbox(sessions)
    return bool(rows) and all(row.lease_until is not None for row in rows)


async def test_a_relay_whose_server_died_waits_for_the_reconnect_and_then_publishes(
    server: NatsServer, relay_parts: tuple[AsyncEngine, Sessions]
) -> None:
    engine, sessions = relay_parts
    nc = await nats.connect(server.url, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream(timeout=2.0)
    try:
        await eventually(lambda: _ensure(js), timeout=10, what="JetStream to accept the stream")
        relay = OutboxRelay(engine=engine, session_factory=sessions, js=js, nc=nc, publish_timeout=0.5)
        await write_events(sessions, 5)
        server.process.kill()
        server.process.wait()
        await eventually(lambda: _true(not nc.is_connected), timeout=5, what="the client to notice")
        began = time.monotonic()
        assert await relay.publish_pending() == 0
        assert time.monotonic() - began < 0.5
        assert all(row.attempts == 0 and row.published_at is None for row in await outbox(sessions))

        server.process = start_nats_on(server.store_dir, server.port).process

        async def published() -> bool:
            with contextlib.suppress(UnacknowledgedError):
                await relay.publish_pending()
            return all(row.published_at is not None for row in await outbox(sessions))

        await eventually(
            published, timeout=15, interval=0.2, what="the rows to be published after the restart"
        )
        assert await stream_count(js) == 5
    finally:
        await nc.close()
