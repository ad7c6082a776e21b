"""The in-loop SQLite driver: same answers as any driver, and the loop never waits on the disk or a lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from shared.db import create_engine, create_session_factory, normalise_url
from shared.sqlite_driver import DRIVER


def test_plain_sqlite_urls_get_the_in_loop_driver_and_aiosqlite_stays_available() -> None:
    assert normalise_url("sqlite:///var/x.db").startswith(f"sqlite+{DRIVER}:///")
    assert normalise_url("sqlite+aiosqlite:///var/x.db").startswith("sqlite+aiosqlite:///")


async def test_statements_commit_roll_back_and_report_constraint_errors(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    factory = create_session_factory(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
            # Several statements on one AsyncConnection: each must count as awaited.
            await conn.execute(text("INSERT INTO item (name) VALUES ('甲')"))
            await conn.execute(text("INSERT INTO item (name) VALUES ('乙')"))
        with pytest.raises(IntegrityError):
            async with factory() as session, session.begin():
                conn = await session.connection()
                await conn.execute(text("INSERT INTO item (name) VALUES ('丙')"))
                await conn.execute(text("INSERT INTO item (name) VALUES ('甲')"))
        async with engine.connect() as conn:
            names = (await conn.execute(text("SELECT name FROM item ORDER BY id"))).scalars().all()
        assert names == ["甲", "乙"]  # the failed transaction left nothing behind
    finally:
        await engine.dispose()
    # Committed means on disk: another connection, outside SQLAlchemy, sees the rows.
    with sqlite3.connect(tmp_path / "db.sqlite") as raw:
        assert raw.execute("SELECT count(*) FROM item").fetchone() == (2,)


async def test_waiting_for_another_writer_does_not_block_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    factory = create_session_factory(engine)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)"))

    # Another process's writer (a migration, create-user) holds the write lock for a while.
    locked, release = threading.Event(), threading.Event()

    def other_writer() -> None:
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("INSERT INTO item (name) VALUES ('其他进程')")
        locked.set()
        release.wait(10)
        raw.execute("COMMIT")
        raw.close()

    holder = threading.Thread(target=other_writer)
    holder.start()
    await asyncio.to_thread(locked.wait, 10)

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def write() -> float:
        started = time.monotonic()
        async with factory() as session, session.begin():
            conn = await session.connection()
            await conn.execute(text("INSERT INTO item (name) VALUES ('本服务')"))
        return time.monotonic() - started

    ticking = asyncio.create_task(ticker())
    writing = asyncio.create_task(write())
    await asyncio.sleep(0.5)
    assert not writing.done()  # it waits for the lock...
    assert ticks >= 20  # ...while the loop goes on serving others
    release.set()
    waited = await writing
    ticking.cancel()
    await asyncio.to_thread(holder.join)
    assert waited >= 0.5
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT name FROM item ORDER BY id"))).scalars().all()
    assert rows == ["其他进程", "本服务"]
    await engine.dispose()
