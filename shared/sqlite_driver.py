"""SQLite for the async engine without a thread hop per statement.

aiosqlite runs every statement on its own thread and wakes the event loop for
each answer: measured here, a small ORM statement cost about four times the CPU
of the same statement run directly.  A SQLite statement on a local file takes
microseconds, so this driver runs statements on the event loop's thread, and
sends off only the calls that can wait on the disk or on another process:
``COMMIT`` (the fsync that makes the transaction durable) and a ``BEGIN`` that
finds another process holding the write lock.  Those run on a worker thread
while the loop serves other requests.

Only one coroutine uses a connection at a time (the pool hands it out), so the
hand-over to the worker thread and back is safe; ``check_same_thread`` is off
for that reason alone.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from sqlalchemy import pool
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine.url import URL
from sqlalchemy.util.concurrency import await_, in_greenlet

DRIVER = "svsqlite"

# Statements that can wait on the disk: COMMIT (the fsync) and an explicit checkpoint.
_DISK_PREFIXES = ("COMMIT", "END", "PRAGMA WAL_CHECKPOINT")


def _off_the_loop(call: Any, *args: Any) -> Any:
    if in_greenlet():
        return await_(asyncio.to_thread(call, *args))
    return call(*args)


async def _nothing() -> None:
    return None


def _checkpoint() -> None:
    """Pass once through the event loop's side of SQLAlchemy's greenlet bridge.

    ``AsyncConnection.execute`` insists that a statement awaited something and raises
    ``AwaitRequired`` otherwise; awaiting a finished coroutine satisfies it for about a
    microsecond, without giving up the loop.
    """
    if in_greenlet():
        await_(_nothing())


class _Cursor(sqlite3.Cursor):
    connection: _Connection

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        head = sql.lstrip()[:22].upper()
        if head.startswith("BEGIN"):
            self._begin(sql, parameters)
        elif head.startswith(_DISK_PREFIXES):
            _off_the_loop(super().execute, sql, parameters)
        else:
            _checkpoint()
            super().execute(sql, parameters)
        return self

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> _Cursor:
        _checkpoint()
        super().executemany(sql, seq_of_parameters)
        return self

    def _begin(self, sql: str, parameters: Any) -> None:
        """BEGIN at once when nobody else holds the write lock, else wait for it off the loop.

        Another process (a migration, ``create-user``) may hold the lock; SQLite's busy
        handler would then sleep on the loop's thread for up to the busy timeout.
        """
        busy_ms = self.connection.busy_timeout_ms
        super().execute("PRAGMA busy_timeout=0")
        try:
            _checkpoint()
            super().execute(sql, parameters)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        finally:
            super().execute(f"PRAGMA busy_timeout={busy_ms}")
        _off_the_loop(super().execute, sql, parameters)

    async def _async_soft_close(self) -> None:
        """SQLAlchemy's async results call this; rows come straight from SQLite, nothing to wait for."""


class _Connection(sqlite3.Connection):
    busy_timeout_ms = 5000

    def cursor(self, factory: Any = _Cursor) -> Any:
        return super().cursor(factory)

    def commit(self) -> None:
        _off_the_loop(super().commit)


def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    kwargs["factory"] = _Connection
    kwargs["check_same_thread"] = False
    connection = sqlite3.connect(*args, **kwargs)
    assert isinstance(connection, _Connection)
    connection.busy_timeout_ms = round(float(kwargs.get("timeout", 5.0)) * 1000)
    return connection


class _Module:
    """sqlite3, with ``connect`` handing out the connection class above."""

    def __getattr__(self, name: str) -> Any:
        return getattr(sqlite3, name)

    connect = staticmethod(connect)


class SQLiteDialect_svsqlite(SQLiteDialect_pysqlite):  # noqa: N801 - SQLAlchemy's naming scheme
    driver = DRIVER
    is_async = True
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        return _Module()

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        if cls._is_url_file_db(url):
            return pool.AsyncAdaptedQueuePool
        return pool.StaticPool


registry.register(f"sqlite.{DRIVER}", __name__, "SQLiteDialect_svsqlite")
