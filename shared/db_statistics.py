"""The query planner's statistics on SQLite, kept by each service for its own database.

SQLite plans from ``sqlite_stat1``, which only ANALYZE writes.  Without it the planner guesses, and
at 100,000 complaints the ledger's first page did not answer within minutes (``bench/scale.py``
with the table dropped; the data generator used to be the only one that ran ANALYZE).
PostgreSQL keeps its statistics itself (autovacuum's ANALYZE).  So a service on SQLite analyses
its database when it starts and then every ``sqlite_analyze_hours``, reading at most
``ANALYSIS_LIMIT`` rows of each index: milliseconds per table, whatever the table's size.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.logging import get_logger
from shared.worker import BackgroundWorker

log = get_logger(__name__)

ANALYSIS_LIMIT = 2000


async def analyse(engine: AsyncEngine) -> None:
    """ANALYZE the database (SQLite), each index sampled: in one short write transaction."""
    async with engine.begin() as connection:
        await connection.run_sync(_analyse)


def _analyse(connection: Connection) -> None:
    connection.exec_driver_sql(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
    connection.exec_driver_sql("ANALYZE")


def analyse_if_never(connection: Connection) -> None:
    """Sampled statistics on a SQLite database that has none, before a back-fill reads the whole
    of it (a migration runs before the service's own worker).  Without them the ledger's rebuild
    probed running clocks by status, not by task: hours at a million matters, against seconds."""
    if connection.dialect.name != "sqlite":
        return
    if _tables_without_statistics(connection):
        _analyse(connection)


def _tables_without_statistics(connection: Connection) -> list[str]:
    """The tables holding rows that the planner has no statistics of.  Not only "never analysed":
    a database analysed while it was empty (at its first migration) has ``sqlite_stat1`` with a row
    for ``alembic_version`` alone, and a bulk load after that left the planner blind."""
    tables = connection.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).scalars()
    analysed: set[str] = set()
    if connection.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first():
        analysed = set(connection.exec_driver_sql("SELECT DISTINCT tbl FROM sqlite_stat1").scalars())
    # A quoted name from sqlite_master: the tables are the migrations' own.
    return [
        name
        for name in tables
        if name not in analysed
        and connection.exec_driver_sql(f'SELECT 1 FROM "{name}" LIMIT 1').first() is not None  # noqa: S608
    ]


def statistics_worker(engine: AsyncEngine, *, hours: float) -> BackgroundWorker | None:
    """The worker that keeps the planner's statistics on SQLite (None on PostgreSQL)."""
    if engine.dialect.name != "sqlite":
        return None

    async def step() -> bool:
        started = time.perf_counter()
        await analyse(engine)
        log.info("planner statistics refreshed", seconds=round(time.perf_counter() - started, 3))
        return False

    return BackgroundWorker(
        name="sqlite-statistics",
        step=step,
        idle_seconds=hours * 3600,
        step_timeout=120.0,
        backoff_max=300.0,
        # A statistics pass at shutdown would only delay it.
        finish_on_stop=False,
    )
