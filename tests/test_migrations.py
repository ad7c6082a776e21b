"""Each service's migrations build exactly the tables its models describe, on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

# Imported for their side effect: every service's tables in the metadata compared against.
from services.feedback import models as _feedback  # noqa: F401
from services.intake import models as _intake  # noqa: F401
from services.routing import models as _routing  # noqa: F401
from services.verification import models as _verification  # noqa: F401
from shared.db import create_engine
from shared.migrations import owned_tables, upgrade
from tests.conftest import BACKENDS
from tests.support import SERVICE_NAMES, Databases


async def _differences(url: str, service: str) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync_conn: compare_metadata(
                    MigrationContext.configure(
                        sync_conn,
                        opts={"include_object": owned_tables(f"{service}_"), "compare_type": True},
                    ),
                    SQLModel.metadata,
                )
            )
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_migrations_match_the_models(backend: str, service: str, tmp_path: Path) -> None:
    # A model changed without its migration works in the tests that build tables from the
    # models, and fails on a bureau's database that was migrated.
    databases = Databases(backend, tmp_path)
    url = asyncio.run(databases.url_for(service))
    try:
        upgrade(service, url)
        assert asyncio.run(_differences(url, service)) == []
    finally:
        asyncio.run(databases.drop_all())
