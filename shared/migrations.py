"""Alembic, one migration history per service, each in its own database.

Every service keeps its migrations under ``services/<name>/migrations``.  Its
``env.py`` calls ``run_migrations_env`` with the table-name prefix it owns, so
autogenerate never sees another service's tables even when all the models are
imported into one test process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config
from sqlmodel import SQLModel

# Imported for their side effect: the tables every service database has.
from shared import audit, idempotency, inbox, outbox  # noqa: F401
from shared.db import is_sqlite, normalise_url

SERVICES_ROOT = Path(__file__).resolve().parent.parent / "services"
SHARED_TABLES = frozenset({"outbox", "inbox", "audit_log", "idempotency"})


def alembic_config(service: str, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SERVICES_ROOT / service / "migrations"))
    config.set_main_option("sqlalchemy.url", normalise_url(database_url).replace("%", "%%"))
    config.attributes["service"] = service
    return config


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    """Bring ``service``'s database to ``revision``; safe to run on every start."""
    command.upgrade(alembic_config(service, database_url), revision)


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
