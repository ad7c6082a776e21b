"""The databases' side of ``backup`` and ``restore``: SQLite snapshots, pg_dump/pg_restore, the outbox.

SQLite is copied with the online backup API, so a service may keep writing while it runs:
the copy is the database as of one read transaction. PostgreSQL is dumped with
``pg_dump -Fc`` (one consistent snapshot per database) and restored with ``pg_restore``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import io
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import text, update
from sqlalchemy.engine import URL, make_url
from sqlmodel import col

from services.cli.common import CommandError, display_url
from shared.db import create_engine, is_sqlite
from shared.outbox import OutboxMessage

SQLITE_BUSY_SECONDS = 30.0


def private_dir(path: Path) -> Path:
    """A folder only the owner can enter (0700), created with its parents if missing."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@contextlib.contextmanager
def private_file(path: Path) -> Iterator[io.BufferedWriter]:
    """A new file only the owner can read (0600), open for writing; refuses to overwrite."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(descriptor, "wb") as handle:
        yield handle


@dataclass(frozen=True)
class Database:
    """One service's database as the backup sees it."""

    service: str
    url: str

    @property
    def backend(self) -> str:
        return "sqlite" if is_sqlite(self.url) else "postgresql"

    @property
    def file_name(self) -> str:
        return f"{self.service}.sqlite3" if self.backend == "sqlite" else f"{self.service}.dump"

    @property
    def sqlite_path(self) -> Path:
        database = make_url(self.url).database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            raise CommandError(f"{self.service}: cannot back up SQLite database {database!r}")
        return Path(database)


# SQLite -------------------------------------------------------------------------------------


def snapshot_sqlite(databases: list[Database], directory: Path) -> None:
    """Copy the SQLite databases, opening their read transactions one right after the other.

    The read transactions are opened in the order given (the caller puts the consumers of an
    event before its producer) and held until every copy is done, so the copies are as close
    to one instant as SQLite allows. WAL mode lets the services write meanwhile.
    """
    sources: list[tuple[Database, sqlite3.Connection]] = []
    try:
        for database in databases:
            if not database.sqlite_path.is_file():
                raise CommandError(f"{database.service}: database file {database.sqlite_path} not found")
            source = sqlite3.connect(database.sqlite_path, timeout=SQLITE_BUSY_SECONDS, isolation_level=None)
            sources.append((database, source))
            source.execute("BEGIN")
            # A deferred BEGIN takes its snapshot at the first read.
            source.execute("SELECT count(*) FROM sqlite_master").fetchone()
        for database, source in sources:
            target_path = directory / database.file_name
            with private_file(target_path):
                pass
            target = sqlite3.connect(target_path)
            try:
                source.backup(target)
                # One self-contained file: reading it later makes no -wal/-shm beside it.
                target.execute("PRAGMA journal_mode=DELETE").fetchone()
            finally:
                target.close()
    finally:
        for _, source in sources:
            source.close()


def sqlite_revisions(path: Path) -> list[str]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sorted(row[0] for row in connection.execute("SELECT version_num FROM alembic_version"))
    except sqlite3.OperationalError:
        return []
    finally:
        connection.close()


def sqlite_has_data(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return bool(
            connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        )
    finally:
        connection.close()


def restore_sqlite(database: Database, source_file: Path) -> None:
    """Write the backed-up database into the service's file, through SQLite (WAL and all)."""
    target_path = database.sqlite_path
    if not target_path.parent.exists():
        private_dir(target_path.parent)
    source = sqlite3.connect(f"file:{source_file}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(target_path, timeout=SQLITE_BUSY_SECONDS)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    target_path.chmod(0o600)


# PostgreSQL ---------------------------------------------------------------------------------


def pg_tool(name: str) -> str:
    """``pg_dump`` or ``pg_restore``: on PATH, else the newest under /usr/lib/postgresql."""
    found = shutil.which(name)
    if found:
        return found

    def version(path: str) -> int:
        number = Path(path).parent.parent.name
        return int(number) if number.isdigit() else 0

    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version)
    if candidates:
        return candidates[-1]
    raise CommandError(
        f"{name} not found on PATH nor under /usr/lib/postgresql/*/bin; install the PostgreSQL "
        "client tools (Debian/Ubuntu: apt-get install postgresql-client) of the server's version or newer"
    )


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without the password, and the environment that carries it.

    The password goes in PGPASSWORD rather than on the command line, where ``ps`` shows it.
    """
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    query = dict(parsed.query)
    # asyncpg spells it ssl=require; libpq sslmode=require.
    ssl = query.pop("ssl", None) or query.pop("sslmode", None)
    # URL.create, not parsed.set: set() takes password=None as "keep the password".
    plain = URL.create(
        "postgresql",
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query={"sslmode": ssl} if ssl else {},
    )
    return plain.render_as_string(hide_password=False), env


def run_tool(command: list[str], *, env: dict[str, str], bound: float, what: str) -> None:
    try:
        completed = subprocess.run(  # noqa: S603 - a fixed tool with arguments we built
            command, env=env, capture_output=True, text=True, timeout=bound, check=False
        )
    except subprocess.TimeoutExpired:
        raise CommandError(f"{what}: no result after {bound:.0f} s (--timeout)") from None
    if completed.returncode != 0:
        raise CommandError(f"{what} failed ({completed.returncode}): {completed.stderr.strip()[-2000:]}")


def dump_postgres(database: Database, directory: Path, *, bound: float) -> None:
    target_path = directory / database.file_name
    with private_file(target_path):
        pass  # pg_dump truncates the file and keeps its mode
    conninfo, env = libpq_target(database.url)
    command = [pg_tool("pg_dump"), "--format=custom", f"--file={target_path}", f"--dbname={conninfo}"]
    run_tool(command, env=env, bound=bound, what=f"{database.service}: pg_dump")


def restore_postgres(database: Database, source_file: Path, *, bound: float) -> None:
    conninfo, env = libpq_target(database.url)
    command = [
        pg_tool("pg_restore"),
        "--clean",
        "--if-exists",
        "--no-owner",
        "--single-transaction",
        "--exit-on-error",
        f"--dbname={conninfo}",
        str(source_file),
    ]
    run_tool(command, env=env, bound=bound, what=f"{database.service}: pg_restore")


# Both ---------------------------------------------------------------------------------------


async def alembic_revisions(database: Database, *, bound: float, path: Path | None = None) -> list[str]:
    """The alembic revisions a database is at (the service's head and the platform's)."""
    if database.backend == "sqlite":
        return await asyncio.to_thread(sqlite_revisions, path or database.sqlite_path)
    engine = create_engine(database.url)
    try:
        async with asyncio.timeout(bound), engine.connect() as connection:
            has_table = await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
            if not has_table:
                return []
            rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
            return sorted(str(row[0]) for row in rows)
    except TimeoutError:
        raise CommandError(f"{database.service}: no answer from {display_url(database.url)}") from None
    finally:
        await engine.dispose()


async def has_data(database: Database, *, bound: float) -> bool:
    """Whether restoring would overwrite a database that was already migrated."""
    if database.backend == "sqlite":
        return await asyncio.to_thread(sqlite_has_data, database.sqlite_path)
    return bool(await alembic_revisions(database, bound=bound))


async def republish_since(database: Database, since: datetime, *, bound: float) -> int:
    """Mark the outbox rows published at or after ``since`` as unpublished again.

    Between the copies of two databases, or between a publish and the consumer's commit, an
    event may be in one service's database as published and not yet in its consumer's
    database. The relay sends these rows again after the restore; the consumers' inbox drops
    the ones they had already applied. Returns how many rows it marked.
    """
    engine = create_engine(database.url)
    try:
        async with asyncio.timeout(bound), engine.begin() as connection:
            result = await connection.execute(
                update(OutboxMessage)
                .where(col(OutboxMessage.published_at) >= since)
                .values(published_at=None, lease_until=None)
            )
            return int(result.rowcount or 0)
    except TimeoutError:
        raise CommandError(f"{database.service}: no answer from {display_url(database.url)}") from None
    finally:
        await engine.dispose()
