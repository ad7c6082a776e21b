"""Each service's migrations build exactly the tables its models describe, on both databases."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from shared.db import create_engine, normalise_url, table_of, utcnow
from shared.migrations import (
    PLATFORM_BRANCH,
    PLATFORM_VERSIONS,
    SERVICES_ROOT,
    SHARED_TABLES,
    alembic_config,
    owned_tables,
    upgrade,
)
from shared.outbox import OutboxMessage
from tests.conftest import BACKENDS
from tests.databases import Databases
from tests.support import SERVICE_NAMES, import_every_service_module

import_every_service_module()


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


# The last commit whose services created the platform tables in their own 0001 and 0002: the
# schema, and version table, of every database migrated before the platform branch existed.
BEFORE_PLATFORM_BRANCH = "12deea5ba5a2deb9cbffcfdf294aa76d91678eca"
REPOSITORY = Path(__file__).resolve().parent.parent


def _migrations_before_platform_branch(service: str, into: Path) -> Path:
    if shutil.which("git") is None or not (REPOSITORY / ".git").exists():
        pytest.skip("the migrations before the platform branch are read from the git history")
    folder = f"services/{service}/migrations"
    for name in ("env.py", "versions/0001_initial_schema.py", "versions/0002_batch_insert_sentinels.py"):
        text = subprocess.run(
            ["git", "show", f"{BEFORE_PLATFORM_BRANCH}:{folder}/{name}"],
            cwd=REPOSITORY,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (into / name).write_text(text)
    return into


def _old_head_config(service: str, url: str, tmp_path: Path) -> Config:
    config = Config()
    script_location = _migrations_before_platform_branch(service, tmp_path / "before" / service)
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


async def _write_outbox_row(url: str, event_id: str) -> None:
    # Only the columns the old schema has: the insert must work before the upgrade.
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(table_of(OutboxMessage)).values(
                    event_id=event_id,
                    subject="sv.test",
                    event_type="test",
                    event_version=1,
                    case_id="case-1",
                    payload="{}",
                    created_at=utcnow(),
                    attempts=0,
                )
            )
    finally:
        await engine.dispose()


async def _outbox_rows_and_versions(url: str) -> tuple[list[Any], set[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            outbox = table_of(OutboxMessage)
            rows = (await conn.execute(sa.select(outbox.c.event_id, outbox.c.lease_until))).all()
            versions = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars()
            return [tuple(row) for row in rows], set(versions)
    finally:
        await engine.dispose()


def _heads(service: str, url: str) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(service, url)).get_heads())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_a_database_migrated_before_the_platform_branch_upgrades_to_the_models(
    backend: str, service: str, tmp_path: Path
) -> None:
    # Bureaus' databases were made when each service created the platform tables itself; they
    # must reach the same schema as a fresh database, keeping their rows.
    databases = Databases(backend, tmp_path)
    url = asyncio.run(databases.url_for(service))
    try:
        command.upgrade(_old_head_config(service, url, tmp_path), "head")
        asyncio.run(_write_outbox_row(url, "event-before-upgrade"))

        upgrade(service, url)

        assert asyncio.run(_differences(url, service)) == []
        rows, versions = asyncio.run(_outbox_rows_and_versions(url))
        assert rows == [("event-before-upgrade", None)]
        assert versions == _heads(service, url)
    finally:
        asyncio.run(databases.drop_all())


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_every_service_has_its_own_head_and_the_shared_platform_head(service: str) -> None:
    script = ScriptDirectory.from_config(alembic_config(service, "sqlite://"))
    platform_head = script.get_revision(f"{PLATFORM_BRANCH}@head")
    assert platform_head is not None
    assert Path(platform_head.path).parent == PLATFORM_VERSIONS
    own_heads = [head for head in script.get_revisions("heads") if head is not platform_head]
    assert len(own_heads) == 1
    assert own_heads[0] is not None and service in own_heads[0].branch_labels


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_service_revisions_leave_the_platform_tables_to_the_platform_branch(service: str) -> None:
    # A platform change is one revision on the platform branch, not one per service.
    for revision_file in (SERVICES_ROOT / service / "migrations" / "versions").glob("*.py"):
        code = revision_file.read_text()
        for table in SHARED_TABLES:
            assert f'"{table}"' not in code, f"{revision_file.name} changes the platform table {table}"
