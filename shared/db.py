"""Async database access, the same code on SQLite and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL`` so that a committed
transaction (and with it an outbox row) survives a power cut, and every
transaction starts with ``BEGIN IMMEDIATE``: a deferred transaction that later
wants to write can fail with "database is locked" without waiting, whereas an
immediate one queues on ``busy_timeout``.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import os
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, ParamSpec, Protocol, Self, TypeVar, cast

from sqlalchemy import Column, DateTime, Table, event, insert_sentinel, inspect, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.types import TypeDecorator
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import sqlite_driver

SQLITE_BUSY_TIMEOUT_MS = 30_000

_Row = TypeVar("_Row")


class _Filterable(Protocol):
    def where(self, *whereclause: Any) -> Self: ...


_Query = TypeVar("_Query", bound=_Filterable)
_Statement = TypeVar("_Statement")
_Args = ParamSpec("_Args")


_ROW_PLANS: dict[type[Any], tuple[frozenset[str], tuple[tuple[str, Any, Any], ...]]] = {}


def _row_plan(model: type[Any]) -> tuple[frozenset[str], tuple[tuple[str, Any, Any], ...]]:
    plan = _ROW_PLANS.get(model)
    if plan is None:
        # The constructor would configure the mappers on first use; without them a row's
        # attributes cannot even be read.
        configure_mappers()
        defaults = tuple(
            (name, field.default, _copier(field.default, field.default_factory))
            for name, field in model.model_fields.items()
            if not field.is_required()
        )
        plan = (frozenset(model.model_fields) | frozenset(model.__sqlmodel_relationships__), defaults)
        _ROW_PLANS[model] = plan
    return plan


# Defaults a row may share with every other row: copying them cost a few percent of a consumer
# that writes many rows with many defaulted columns (py-spy).
_SHARED_DEFAULTS = (type(None), bool, int, float, str, bytes, Enum, datetime, date, tuple, frozenset)


def _copier(default: Any, factory: Callable[[], Any] | None) -> Callable[[], Any] | None:
    """What makes a new row's value of a defaulted field: the field's factory, or for a mutable
    default a copy of it, as SQLModel's constructor would; None where the default itself will do."""
    if factory is not None or isinstance(default, _SHARED_DEFAULTS):
        return factory
    return functools.partial(copy.copy, default)


def built_once(build: Callable[_Args, _Statement]) -> Callable[_Args, _Statement]:
    """Build a hot path's statement once, with bound parameters for what changes per call.

    SQLAlchemy builds a statement and its cache key anew whenever the code that writes it
    runs; for the lookups and updates made on every complaint and every event that cost about
    as much as running them (py-spy).  A statement built once keeps its cache key.  The
    builder's arguments (a model, a limit) choose among a few statements, each built once.
    """
    return cast(Callable[_Args, _Statement], functools.cache(build))


def table_of(model: type[Any]) -> Table:
    """The Core table of a SQLModel table class, for statements that should skip the ORM."""
    table = inspect(model).local_table
    assert isinstance(table, Table)
    return table


def new_row(model: type[_Row], **values: Any) -> _Row:
    """A new table row, as ``model(**values)`` builds it, at a fraction of the CPU.

    SQLModel's constructor sets every field through SQLAlchemy's attribute events and
    pydantic's ``__setattr__``: measured at up to a fifth of a consumer's CPU.  A pending
    row needs none of that, since a flush inserts what the row's ``__dict__`` holds; this
    builds the row the way SQLAlchemy builds one it loads (``new_instance``) and fills in
    the field defaults as SQLModel would.  Table models do not validate in either path.
    """
    names, defaults = _row_plan(model)
    unknown = values.keys() - names
    if unknown:
        raise TypeError(f"{model.__name__} has no field {sorted(unknown)[0]!r}")
    row = model._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    attributes = row.__dict__
    for name, default, factory in defaults:
        if name not in values:
            attributes[name] = factory() if factory is not None else default
    attributes.update(values)
    object.__setattr__(row, "__pydantic_fields_set__", set(values))
    return cast(_Row, row)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A new row's string key."""
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime in, an aware UTC datetime out, on every database.

    SQLite has no time zone type and hands back naive values; a naive value in
    this product is a bug (deadlines are compared across time zones), so it is
    refused on the way in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime cannot be stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite stores text: the same text SQLAlchemy's DATETIME writes, made in one step; its
        # %-formatting after our conversion cost a few percent of a consumer's CPU (py-spy).  A
        # value already in UTC (nearly all: ``utcnow``, and what the database gave back) skips the
        # conversion, and its text is cut before the offset instead of copying the value naive.
        def to_text(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not UTC:
                naive_utc = self.process_bind_param(value, dialect)
                assert naive_utc is not None
                return naive_utc.isoformat(" ", "microseconds")
            return value.isoformat(" ", "microseconds")[:26]

        return to_text


def batch_insert_sentinel() -> Column[Any]:
    """A column that lets the ORM insert many rows with generated ids in one statement on SQLite.

    For a table whose id the database generates, the ORM must learn each new row's id.  On
    SQLite it cannot trust the order of ``RETURNING`` rows, so without this column it sent one
    ``INSERT`` per row (about 200 us each, against 25 us in a multi-row insert, measured): nine
    such rows per complaint across the services.  The column holds a number the ORM sets to
    match rows to their ids; nothing else reads it.  Every hot append-only table has one.
    """
    return insert_sentinel("sentinel")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def normalise_url(url: str) -> str:
    """Accept the URLs people type (postgresql://, sqlite:///) and pick the async drivers.

    A plain SQLite URL gets the project's own driver (``shared.sqlite_driver``); an explicit
    ``sqlite+aiosqlite://`` is honoured, at about three times the CPU per statement.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername in {"postgresql", "postgres", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite" and parsed.drivername in {"sqlite", "sqlite+pysqlite"}:
        parsed = parsed.set(drivername=f"sqlite+{sqlite_driver.DRIVER}")
    return parsed.render_as_string(hide_password=False)


def private_sqlite_files(url: str) -> None:
    """Create a SQLite database file readable by the service's own user only (0600, folder 0700).

    The files hold complainants' data. SQLite gives its -wal and -shm files the database file's
    mode, so setting it on the database covers them; a file made earlier with looser bits is
    tightened. A folder that already exists is left as it is (it may be shared, like /tmp).
    """
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            file.chmod(0o600)


def create_engine(
    url: str, *, echo: bool = False, pool_size: int = 10, max_overflow: int = 10
) -> AsyncEngine:
    """An engine for the URL; on PostgreSQL ``pool_size`` connections kept, ``max_overflow`` more at peaks."""
    url = normalise_url(url)
    if is_sqlite(url):
        private_sqlite_files(url)
        # One connection: SQLite has one writer at a time anyway, and waiting for the pool is an
        # asyncio wait, whereas waiting on a locked database is SQLite's busy handler sleeping in
        # steps of up to 100 ms, which collapses throughput under concurrent requests.
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=1,
            max_overflow=0,
        )
        _configure_sqlite(engine)
        return engine
    engine = create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        # Each distinct statement text is prepared once per connection and kept; SQLAlchemy keeps
        # 100 by default, and the multi-row inserts and IN lists of a slice (one text per row
        # count) pushed the hot statements out: measured, re-preparing cost a fifth of the CPU.
        connect_args={"prepared_statement_cache_size": 1000},
    )
    _drop_closed_connections(engine)
    return engine


def _drop_closed_connections(engine: AsyncEngine) -> None:
    """Replace a pooled connection the server has closed before anyone uses it.

    ``pool_pre_ping`` asks the server on every checkout, a round trip per transaction (5 % of
    a service's CPU, measured).  asyncpg notices a connection the server closed (a restart, an
    administrator terminating it) as soon as the socket says so, so asking the driver is enough
    for those; a connection lost silently fails its first statement, which the caller retries.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver.is_closed():
            raise DisconnectionError("connection closed by the server")


def _switch_to_wal(cursor: Any) -> None:
    """``journal_mode=WAL`` on a new connection.  Switching takes the file's exclusive lock, and
    SQLite answers "database is locked" at once, without its busy handler, while another instance
    holds a lock; a file already in WAL (every file after its first connection) needs no switch,
    so that answer is then harmless."""
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except Exception as error:
        if "locked" not in str(error):
            raise
        cursor.execute("PRAGMA journal_mode")
        row = cursor.fetchone()
        if not row or str(row[0]).lower() != "wal":
            raise


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # The busy timeout first: a second instance connecting while the first writes must wait
        # for the lock, not fail its connect with "database is locked".
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def where_given(query: _Query, *filters: tuple[Any, object]) -> _Query:
    """``query`` narrowed to ``column == value`` for each (column, value) given a value; None or "": no filter."""
    for column, value in filters:
        if value:
            query = query.where(column == value)
    return query


def lock_key(name: str) -> int:
    """The advisory-lock key of a name: a signed 64-bit number, the same in every process and release."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


_LOCK_ONE = text("SELECT pg_advisory_xact_lock(CAST(:key AS BIGINT))")
# Each key's lock, in the array's order (the callers sort the keys).
LOCK_EACH = text("SELECT pg_advisory_xact_lock(key) FROM unnest(CAST(:keys AS BIGINT[])) AS key")


async def serialise_on(session: AsyncSession, *names: str) -> None:
    """Make the transactions that call this with the same name run one after another.

    Call it first in a transaction whose check-then-write must not interleave with another
    instance's (start-up seeding): on PostgreSQL it waits for a transaction-scoped advisory lock,
    which the commit or rollback releases, and at the engines' isolation (READ COMMITTED) the
    statements after it see what the previous holder committed.  On SQLite it does nothing: every
    transaction begins IMMEDIATE, so writers already run one at a time.  Several names: one
    statement takes their locks in key order, so two callers never wait for each other in a circle.
    """
    if not names or session.sync_session.get_bind().dialect.name != "postgresql":
        return
    connection = await session.connection()
    if len(names) == 1:
        await connection.execute(_LOCK_ONE, {"key": lock_key(names[0])})
    else:
        await connection.execute(LOCK_EACH, {"keys": sorted({lock_key(name) for name in names})})


async def insert_missing(session: AsyncSession, model: type[Any], rows: Sequence[Any]) -> None:
    """Insert the rows of ``model`` whose key is not stored yet; the others are skipped.

    ``INSERT ... ON CONFLICT DO NOTHING``: a key another transaction inserted and has not
    committed yet is waited for, then skipped, so instances seeding at once cannot collide.  A Core
    statement on the session's connection: the rows are not added to the session, and the
    batching guard does not see it; used for seeding, where nothing pending concerns these tables.
    """
    if not rows:
        return
    table = table_of(model)
    values = [row.model_dump() for row in rows]
    dialect = session.sync_session.get_bind().dialect.name
    statement: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        statement = postgresql.insert(table).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(table).values(values).on_conflict_do_nothing()
    else:
        raise RuntimeError(f"no INSERT ... ON CONFLICT for the {dialect} database")
    connection = await session.connection()
    await connection.execute(statement)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


class CommitSignal:
    """Wakes the waiters of an engine after a commit that said it concerns them.

    A background worker (the outbox relay, feedback's delivery worker) would otherwise only notice
    new rows at its next poll; a rolled-back transaction wakes nobody.
    """

    def __init__(self, name: str) -> None:
        self._flag = f"commit_signal:{name}"
        self._waiters: dict[Any, list[asyncio.Event]] = {}
        event.listen(Session, "after_commit", self._after_commit)
        event.listen(Session, "after_rollback", self._after_rollback)

    def mark(self, session: AsyncSession) -> None:
        session.sync_session.info[self._flag] = True

    def register(self, engine: AsyncEngine, wake: asyncio.Event) -> None:
        self._waiters.setdefault(engine.sync_engine, []).append(wake)

    def unregister(self, engine: AsyncEngine, wake: asyncio.Event) -> None:
        waiting = self._waiters.get(engine.sync_engine, [])
        if wake in waiting:
            waiting.remove(wake)

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(self._flag, False):
            for wake in self._waiters.get(session.get_bind(), ()):
                wake.set()

    def _after_rollback(self, session: Session) -> None:
        session.info.pop(self._flag, None)
