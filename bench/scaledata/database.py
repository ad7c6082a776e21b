"""The four databases: made empty, migrated by the services' own alembic, seeded by their own seeders."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import notification_summary
from services.intake.accounts import seed_demo_accounts
from services.intake.models import User
from services.routing.main import seed_reference_data
from services.routing.rulebook import DEFAULT_RULES_FILE
from services.verification import figures, ledger_entries, measure_facts, open_figures
from services.verification.measure_rules import load_settings as load_measure_settings
from shared.db import create_engine, table_of
from shared.migrations import upgrade
from shared.workcalendar import SHANGHAI

from .common import SERVICES, World

PG_PREFIX = "scale_"


def url_of(backend: str, out: Path, postgres_url: str, service: str, prefix: str = PG_PREFIX) -> str:
    if backend == "sqlite":
        return f"sqlite:///{(out / f'{service}.db').resolve()}"
    plain = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    return plain.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{prefix}{service}"


async def prepare(backend: str, out: Path, postgres_url: str, prefix: str = PG_PREFIX) -> dict[str, str]:
    """Empty databases, migrated: SQLite files under ``out`` or ``<prefix><service>`` on the server."""
    urls: dict[str, str] = {}
    if backend == "sqlite":
        for service in SERVICES:
            path = out / f"{service}.db"
            for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                file.unlink(missing_ok=True)
            urls[service] = url_of(backend, out, postgres_url, service)
    else:
        import asyncpg

        plain = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncio.wait_for(asyncpg.connect(plain), timeout=30)
        try:
            for service in SERVICES:
                name = f"{prefix}{service}"
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await connection.execute(f'CREATE DATABASE "{name}"')
                urls[service] = url_of(backend, out, postgres_url, service, prefix)
        finally:
            await connection.close()
    for service, url in urls.items():
        await asyncio.to_thread(upgrade, service, url)
    return urls


def engine(url: str) -> AsyncEngine:
    made = create_engine(url, pool_size=2, max_overflow=0)
    if made.dialect.name == "sqlite":

        @sa.event.listens_for(made.sync_engine, "connect")
        def _bulk_load(dbapi_connection: Any, _record: Any) -> None:
            # A load that fails is run again from scratch: no fsync per batch.
            dbapi_connection.execute("PRAGMA synchronous=OFF")

    return made


async def seed_reference(
    engines: dict[str, AsyncEngine], *, world: World, deputies: list[tuple[str, str, str]]
) -> None:
    """Routing's organisation and rules, intake's demo accounts, and the deputies' accounts."""
    await seed_reference_data(
        session_factory=async_sessionmaker(engines["routing"], class_=AsyncSession, expire_on_commit=False),
        organisation=world.organisation,
        rules_file=DEFAULT_RULES_FILE,
        demo=True,
    )
    factory = async_sessionmaker(engines["intake"], class_=AsyncSession, expire_on_commit=False)
    async with factory() as session, session.begin():
        await seed_demo_accounts(session=session, organisation=world.organisation)
    async with factory() as session, session.begin():
        shared_hash = (await session.exec(select(User.password_hash).where(User.username == "deputy1"))).one()
        for account, name, delegation in deputies:
            if account == "deputy1":
                continue
            session.add(
                User(
                    username=account,
                    password_hash=shared_hash,
                    role="deputy",
                    display_name=f"{name}代表",
                    deputy_name=name,
                    deputy_delegation=delegation,
                )
            )


async def finish(engines: dict[str, AsyncEngine]) -> None:
    """On PostgreSQL, move each sequence past the ids given here; make verification's dashboard
    summaries, its ledger's entries and its measures' facts from the rows written (``figures.rebuild``,
    ``open_figures.rebuild``, ``ledger_entries.rebuild``, ``measure_facts.build_all``) and feedback's notification figures
    (``notification_summary.summarise_settled``); then refresh the planner's statistics (and, on PostgreSQL, vacuum)."""
    if "verification" in engines:
        async with engines["verification"].begin() as connection:
            # The data set's bureau is the default one, in the default time zone.
            await connection.run_sync(figures.rebuild, SHANGHAI)
            await connection.run_sync(open_figures.rebuild)
            await connection.run_sync(ledger_entries.rebuild)
            # As the service's worker would after its first start, in one go.
            await connection.run_sync(measure_facts.build_all, load_measure_settings(), SHANGHAI)
    if "feedback" in engines:
        async with engines["feedback"].begin() as connection:
            # The 通知送达 figures' summary of the settled days, as migration 0011 back-fills it.
            await connection.run_sync(notification_summary.summarise_settled, SHANGHAI)
    for engine_ in engines.values():
        async with engine_.begin() as connection:
            if connection.dialect.name == "postgresql":
                for table in SQLModel.metadata.sorted_tables:
                    column = table.c.get("id")
                    if column is None or not isinstance(column.type, sa.Integer):
                        continue
                    exists = await connection.scalar(
                        sa.text("SELECT to_regclass(:name)"), {"name": table.name}
                    )
                    if exists is None:
                        continue
                    # The models' own table names, nothing from outside.
                    await connection.execute(
                        sa.text(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "  # noqa: S608
                            f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
                        )
                    )
            else:
                await connection.execute(sa.text("ANALYZE"))
        if engine_.dialect.name == "postgresql":
            # VACUUM as well: it marks the pages all-visible, without which no read is from an index
            # alone (a bureau's autovacuum does it; a freshly written data set, and a server with
            # autovacuum off, have none of it: intake's figures 167 ms against 38 once vacuumed).
            async with engine_.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(sa.text("VACUUM (ANALYZE)"))


async def row_counts(engines: dict[str, AsyncEngine]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for service, engine_ in engines.items():
        async with engine_.connect() as connection:
            names = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
            found: dict[str, int] = {}
            for name in sorted(names):
                if name == "alembic_version":
                    continue
                query = sa.text(f'SELECT count(*) FROM "{name}"')  # noqa: S608 - the database's own tables
                found[name] = int(await connection.scalar(query) or 0)
            counts[service] = found
    return counts


def model_tables() -> dict[str, Any]:
    return {table.name: table for table in SQLModel.metadata.sorted_tables}


__all__ = ["engine", "finish", "model_tables", "prepare", "row_counts", "seed_reference", "table_of"]
