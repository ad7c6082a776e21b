"""A PostgreSQL restart or a terminated connection costs no request: the pool replaces closed connections."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from sqlalchemy import text

from shared.db import create_engine

pytestmark = pytest.mark.skipif(not os.environ.get("TEST_POSTGRES_URL"), reason="needs TEST_POSTGRES_URL")


async def test_connections_terminated_by_the_server_are_replaced_before_use() -> None:
    import asyncpg

    server = os.environ["TEST_POSTGRES_URL"].replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(server)
    name = f"sv_reconnect_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(server.rsplit("/", 1)[0] + f"/{name}")
    try:
        # Several pooled connections, all idle in the pool afterwards.
        async def use() -> int:
            async with engine.connect() as conn:
                await asyncio.sleep(0.05)
                return int((await conn.execute(text("SELECT 1"))).scalar_one())

        assert await asyncio.gather(*(use() for _ in range(4))) == [1, 1, 1, 1]
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1", name
        )
        assert killed >= 1
        await asyncio.sleep(0.2)  # the server's goodbye reaches the sockets
        assert await asyncio.gather(*(use() for _ in range(4))) == [1, 1, 1, 1]
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
