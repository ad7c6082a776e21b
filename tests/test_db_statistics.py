"""The query planner's statistics on SQLite (``shared.db_statistics``): written by the service, so
that SQLite does not guess its plans over a bureau's years of data."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, text

from shared.db import create_engine
from shared.db_statistics import analyse, analyse_if_never, statistics_worker


async def test_analysing_writes_the_statistics_of_every_index(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE task (id INTEGER PRIMARY KEY, team TEXT, status TEXT)"))
            await conn.execute(text("CREATE INDEX ix_task_team_status ON task (team, status)"))
            await conn.execute(text("CREATE INDEX ix_task_status ON task (status)"))
            rows = [{"team": f"t{i % 7}", "status": "done" if i % 20 else "open"} for i in range(5_000)]
            await conn.execute(text("INSERT INTO task (team, status) VALUES (:team, :status)"), rows)
        await analyse(engine)
        async with engine.connect() as conn:
            found = dict((await conn.execute(text("SELECT idx, stat FROM sqlite_stat1"))).all())
        assert set(found) == {"ix_task_team_status", "ix_task_status"}
        # The rows, estimated from the sample (ANALYSIS_LIMIT): the planner's numbers, not its guesses.
        assert 4_000 <= int(found["ix_task_status"].split()[0]) <= 6_000
    finally:
        await engine.dispose()


async def test_only_a_service_on_sqlite_runs_the_worker(tmp_path: Path) -> None:
    sqlite = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    postgres = create_engine("postgresql://postgres@127.0.0.1:5432/test")  # not connected
    try:
        worker = statistics_worker(sqlite, hours=6)
        assert worker is not None and worker.name == "sqlite-statistics"
        assert statistics_worker(postgres, hours=6) is None
    finally:
        await sqlite.dispose()
        await postgres.dispose()


async def test_a_back_fill_analyses_tables_loaded_after_an_empty_analysis(tmp_path: Path) -> None:
    """Analysed when empty (the first migration), then loaded in bulk: ``analyse_if_never`` finds
    the loaded table without statistics and analyses; once it has them, it leaves them."""
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE version (num TEXT PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO version VALUES ('0001')"))
            await conn.execute(text("CREATE TABLE task (id INTEGER PRIMARY KEY, status TEXT)"))
            await conn.execute(text("CREATE INDEX ix_task_status ON task (status)"))
            await conn.execute(text("CREATE TABLE empty (id INTEGER PRIMARY KEY)"))
            await conn.execute(text("ANALYZE"))
            await conn.execute(
                text("INSERT INTO task (status) VALUES (:status)"),
                [{"status": "open" if i % 9 else "done"} for i in range(2_000)],
            )

        def statistics(sync: Connection) -> set[str]:
            return set(sync.exec_driver_sql("SELECT DISTINCT tbl FROM sqlite_stat1").scalars())

        async with engine.begin() as conn:
            assert "task" not in await conn.run_sync(statistics)
            await conn.run_sync(analyse_if_never)
            assert "task" in await conn.run_sync(statistics)
            await conn.execute(text("DELETE FROM sqlite_stat1 WHERE tbl = 'version'"))
            await conn.execute(text("INSERT INTO version VALUES ('0002')"))
            await conn.execute(text("DELETE FROM sqlite_stat1 WHERE tbl = 'task'"))
            await conn.execute(text("INSERT INTO sqlite_stat1 VALUES ('task', 'ix_task_status', '7 1')"))
            await conn.execute(text("INSERT INTO sqlite_stat1 VALUES ('version', NULL, '2')"))
            await conn.run_sync(analyse_if_never)
            # Every table with rows has statistics: they are left as they were.
            kept = (await conn.execute(text("SELECT stat FROM sqlite_stat1 WHERE tbl = 'task'"))).scalar()
            assert kept == "7 1"
    finally:
        await engine.dispose()
