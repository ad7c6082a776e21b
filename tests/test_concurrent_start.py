"""Instances of routing starting at the same moment on one fresh database all come up and seed once.

Each instance has its own engine and context, as two processes would; on PostgreSQL the database
is a fresh one of this test's own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.routing import main as routing_main
from services.routing.context import RoutingContext
from services.routing.main import seed_reference_data
from services.routing.models import RoutingRule, Team, Unit
from services.routing.rulebook import DEFAULT_RULES_FILE
from services.routing.settings import RoutingSettings
from shared.db import create_engine, create_session_factory, lock_key, serialise_on
from shared.migrations import upgrade
from shared.reference import Organisation
from tests.conftest import BACKENDS
from tests.databases import Databases
from tests.support import TEST_SECRET_KEY

INSTANCES = 2


@pytest.fixture(params=BACKENDS)
async def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """(backend, url) of a migrated routing database nobody has started on yet."""
    backend = str(request.param)
    databases = Databases(backend, tmp_path)
    try:
        url = await databases.url_for("routing")
        # Alembic runs its own event loop.
        await asyncio.to_thread(upgrade, "routing", url)
        yield backend, url
    finally:
        await databases.drop_all()


def expected_counts(organisation: Organisation) -> dict[type, int]:
    units = 2 + len(organisation.city_units)
    units += sum(2 + len(county.aliases) for county in organisation.counties.values())
    rules = json.loads(DEFAULT_RULES_FILE.read_text(encoding="utf-8"))["rules"]
    return {Team: 1 + len(organisation.counties), Unit: units, RoutingRule: len(rules)}


async def stored_counts(sessions: async_sessionmaker[AsyncSession]) -> dict[type, int]:
    async with sessions() as session:
        return {
            model: (await session.exec(select(func.count()).select_from(model))).one()
            for model in (Team, Unit, RoutingRule)
        }


async def start_instances(url: str) -> tuple[list[AsyncEngine], list[RoutingContext]]:
    engines = [create_engine(url) for _ in range(INSTANCES)]
    contexts = [
        RoutingContext.from_settings(RoutingSettings(secret_key=TEST_SECRET_KEY, database_url=url))
        for _ in range(INSTANCES)
    ]
    # Connected before the race, so that neither instance gets a head start by connecting sooner.
    for engine in engines:
        async with engine.connect():
            pass
    return engines, contexts


async def seed_all_at_once(engines: list[AsyncEngine], contexts: list[RoutingContext]) -> None:
    await asyncio.gather(
        *(
            seed_reference_data(
                session_factory=create_session_factory(engine),
                organisation=ctx.seed_organisation,
                rules_file=DEFAULT_RULES_FILE,
            )
            for engine, ctx in zip(engines, contexts, strict=True)
        )
    )


async def test_instances_starting_at_once_seed_the_organisation_and_rules_once(
    fresh_database: tuple[str, str],
) -> None:
    _backend, url = fresh_database
    engines, contexts = await start_instances(url)
    try:
        await seed_all_at_once(engines, contexts)
        expected = expected_counts(contexts[0].seed_organisation)
        assert await stored_counts(create_session_factory(engines[0])) == expected
        # A later start (a restart, a third instance) leaves the seeded database as it is.
        await seed_all_at_once(engines, contexts)
        assert await stored_counts(create_session_factory(engines[1])) == expected
    finally:
        for engine in engines:
            await engine.dispose()


async def test_seeding_without_the_lock_still_stores_one_copy_of_each_row(
    fresh_database: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both instances find empty tables and insert: the inserts skip what the other stored.
    async def no_lock(_session: AsyncSession, _name: str) -> None:
        return None

    monkeypatch.setattr(routing_main, "serialise_on", no_lock)
    _backend, url = fresh_database
    engines, contexts = await start_instances(url)
    try:
        await seed_all_at_once(engines, contexts)
        expected = expected_counts(contexts[0].seed_organisation)
        assert await stored_counts(create_session_factory(engines[0])) == expected
    finally:
        for engine in engines:
            await engine.dispose()


async def test_transactions_serialised_on_one_name_run_one_after_another(
    fresh_database: tuple[str, str],
) -> None:
    backend, url = fresh_database
    if backend != "postgres":
        pytest.skip("SQLite's writers run one at a time without a lock")
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    try:
        async with sessions() as first, first.begin():
            await serialise_on(first, "routing.seed")

            async def second_holder() -> None:
                async with sessions() as second, second.begin():
                    await serialise_on(second, "routing.seed")

            waiting = asyncio.create_task(second_holder())
            await asyncio.sleep(0.3)
            assert not waiting.done(), "the second transaction took the lock the first holds"
            # Another name is another lock.
            async with sessions() as other, other.begin():
                await asyncio.wait_for(serialise_on(other, "intake.seed"), timeout=5)
        # The first transaction's commit released the lock.
        await asyncio.wait_for(waiting, timeout=5)
    finally:
        await engine.dispose()


async def test_several_names_are_locked_in_one_order_whatever_the_callers_order(
    fresh_database: tuple[str, str],
) -> None:
    """A transaction naming two locks in the opposite order to another's waits for the first one
    in key order without holding the second: the two never wait for each other in a circle."""
    backend, url = fresh_database
    if backend != "postgres":
        pytest.skip("SQLite's writers run one at a time without a lock")
    low, high = sorted(("warning:officer:a", "warning:unit:b"), key=lock_key)
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    try:
        async with sessions() as first, first.begin():
            await serialise_on(first, low)

            async def both_in_reverse() -> None:
                async with sessions() as second, second.begin():
                    await serialise_on(second, high, low)

            waiting = asyncio.create_task(both_in_reverse())
            await asyncio.sleep(0.3)
            assert not waiting.done(), "the second transaction took a lock the first holds"
            # Taken in the caller's order, the second would now hold ``high`` and this would wait
            # for it in a circle (PostgreSQL would end one of them as deadlocked).
            await asyncio.wait_for(serialise_on(first, high), timeout=5)
        await asyncio.wait_for(waiting, timeout=5)
    finally:
        await engine.dispose()
