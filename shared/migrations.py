"""Alembic, one migration history per service database, plus the platform branch they share.

Every service keeps its migrations under ``services/<name>/migrations``.  Its
``env.py`` calls ``run_migrations_env`` with the table-name prefix it owns, so
autogenerate never sees another service's tables even when all the models are
imported into one test process.

The tables every service database has (outbox, inbox, audit log, idempotency keys,
dead-letter outcomes; their models are in ``shared/``) have their migrations once, in
``shared/platform_migrations/versions``: a branch labelled ``platform`` that each
service's script directory lists as a second version location.  A service database
therefore has two heads, its own and the platform's, and is upgraded to ``heads``.
Each service's ``0001`` depends on the platform's base revision, so on a fresh
database the platform tables come first.  A platform change is one revision there
(``command.revision(alembic_config(...), head="platform@head",
version_path=str(PLATFORM_VERSIONS))``); a service change is a revision on the
service's own branch, labelled with its name (``head="<service>@head"``).

Platform revisions change a table only where the change is missing (``table_exists``,
``column_exists``): before the branch existed each service created these tables in its
own ``0001`` and ``0002``, and a database migrated then must upgrade to the same schema
as a fresh one.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config
from sqlmodel import SQLModel

# The tables every service database has; importing them also puts them in the metadata.
from shared import audit, deadletters, idempotency, inbox, outbox
from shared.db import is_sqlite, normalise_url, private_sqlite_files, table_of

SERVICES_ROOT = Path(__file__).resolve().parent.parent / "services"
PLATFORM_VERSIONS = Path(__file__).resolve().parent / "platform_migrations" / "versions"
PLATFORM_BRANCH = "platform"
SHARED_TABLES = frozenset(
    table_of(model).name
    for model in (
        outbox.OutboxMessage,
        inbox.InboxRecord,
        audit.AuditEntry,
        idempotency.IdempotencyRecord,
        deadletters.DeadLetterOutcome,
    )
)


def _ini_value(text: str) -> str:
    # Config options go through ConfigParser interpolation, where "%" starts a reference.
    return text.replace("%", "%%")


def alembic_config(service: str, database_url: str) -> Config:
    """The service's script directory with the platform branch as a second version location."""
    migrations = SERVICES_ROOT / service / "migrations"
    config = Config()
    config.set_main_option("script_location", _ini_value(str(migrations)))
    config.set_main_option("path_separator", "os")
    version_locations = os.pathsep.join(str(path) for path in (migrations / "versions", PLATFORM_VERSIONS))
    config.set_main_option("version_locations", _ini_value(version_locations))
    config.set_main_option("sqlalchemy.url", _ini_value(normalise_url(database_url)))
    config.attributes["service"] = service
    return config


# Alembic's ``context`` and ``op`` are module state: two upgrades at once in one process (threads
# of a test, or of a tool migrating several databases) would run on each other's configuration.
_ONE_UPGRADE_AT_A_TIME = threading.Lock()


def upgrade(service: str, database_url: str, revision: str = "heads") -> None:
    """Bring ``service``'s database to ``revision``; safe to run on every start.

    ``heads``, not ``head``: the database has the service's branch and the platform's.
    """
    if is_sqlite(database_url):
        private_sqlite_files(normalise_url(database_url))
    with _ONE_UPGRADE_AT_A_TIME:
        command.upgrade(alembic_config(service, database_url), revision)


def table_exists(name: str) -> bool:
    """For a platform revision: whether the database being migrated has the table."""
    return sa.inspect(op.get_bind()).has_table(name)


def column_exists(table: str, column: str) -> bool:
    """For a platform revision: whether ``table`` in the database being migrated has ``column``."""
    return any(found["name"] == column for found in sa.inspect(op.get_bind()).get_columns(table))


def owned_tables(table_prefix: str) -> Callable[[object, str | None, str, bool, object], bool]:
    """Alembic's ``include_object`` for one service: its own tables and the shared ones."""

    def include_object(
        obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
    ) -> bool:
        if type_ == "table":
            return bool(name) and (name in SHARED_TABLES or str(name).startswith(table_prefix))
        return True

    return include_object


def run_migrations_env(*, table_prefix: str) -> None:
    """Body of each service's env.py."""
    config = context.config
    include_object = owned_tables(table_prefix)
    url = config.get_main_option("sqlalchemy.url") or ""

    def do_run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            include_object=include_object,
            render_as_batch=is_sqlite(url),
            compare_type=True,
            # One transaction per revision: a back-fill's streamed read (a server-side cursor on
            # PostgreSQL) ends with its revision instead of keeping its tables busy for a later
            # revision's ALTER, and an upgrade over years of data keeps what it finished.
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=SQLModel.metadata, include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()
        return

    async def run_async() -> None:
        engine = async_engine_from_config(
            config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
        )
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
        await engine.dispose()

    asyncio.run(run_async())
