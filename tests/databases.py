"""Databases for tests: one per service on the backend under test (a SQLite file, or a fresh
PostgreSQL database dropped afterwards), migrated ones, and a session that reads one snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.migrations import upgrade


class Databases:
    """One database per service: a SQLite file, or a fresh PostgreSQL database dropped afterwards."""

    def __init__(self, backend: str, root: Path) -> None:
        self.backend = backend
        self.root = root
        self.created: list[str] = []

    async def url_for(self, service: str) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.root / f'{service}-{uuid.uuid4().hex[:8]}.db'}"
        import asyncpg

        base = os.environ["TEST_POSTGRES_URL"]
        name = f"sv_{uuid.uuid4().hex[:10]}_{service}"
        conn = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return base.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"

    async def drop_all(self) -> None:
        if not self.created:
            return
        import asyncpg

        base = os.environ["TEST_POSTGRES_URL"].replace("postgresql+asyncpg://", "postgresql://")

        async def drop(name: str) -> None:
            conn = await asyncpg.connect(base)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        # Together: each drop waits for a checkpoint of its own.
        await asyncio.gather(*(drop(name) for name in self.created))
        self.created.clear()


@dataclass
class MigratedDatabase:
    engine: Any
    sessions: Any


@contextlib.asynccontextmanager
async def migrated_database(backend: str, folder: Path, service: str) -> AsyncIterator[MigratedDatabase]:
    """A fresh database of ``backend`` migrated as ``service``'s, dropped afterwards."""
    from shared.db import create_engine, create_session_factory

    databases = Databases(backend, folder)
    url = await databases.url_for(service)
    await asyncio.to_thread(upgrade, service, url)
    engine = create_engine(url)
    try:
        yield MigratedDatabase(engine=engine, sessions=create_session_factory(engine))
    finally:
        await engine.dispose()
        await databases.drop_all()


@contextlib.asynccontextmanager
async def one_snapshot(factory: Any) -> AsyncIterator[Any]:
    """A session whose every read sees one snapshot, rolled back at the end.

    A check that compares what the services kept with what the tables make reads several times
    while the consumers keep committing: on PostgreSQL's default READ COMMITTED each statement
    would see a later state. SQLite's transaction already reads one snapshot.
    """
    async with factory() as session:
        if session.bind.dialect.name == "postgresql":
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        try:
            yield session
        finally:
            await session.rollback()
