"""``backup`` under load, ``restore`` into fresh databases, and the system ends consistent by itself.

The backup is taken while complaints keep arriving; the services are then stopped, the backup
is restored into new databases (and a new evidence bucket), and the services are started on
them. Every complaint of the backup must come back, each with its routing case, its
verification matter and task and its feedback case, once, and every outbox row published.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import ObjectMeta
from nats.js.errors import BucketNotFoundError
from sqlalchemy import text

from services.cli.backup import MANIFEST_NAME, backup, restore
from services.cli.backup_databases import libpq_target
from services.cli.common import CommandError
from services.registry import SERVICES
from shared.db import create_engine
from shared.settings import ServiceSettings
from tests.databases import Databases
from tests.support import (
    SERVICE_NAMES,
    InProcessServices,
    NatsServer,
    System,
    allocate,
    base_environment,
    eventually,
    patched_environ,
    reset_stream,
)
from tests.test_pipeline import create_complaint

OBJECTS = {"evidence-a": b"first evidence file " * 1000, "evidence-b": b"\x00\x01 second"}
LEGACY_CONTENT = b"an evidence file kept on disk before the object store"


@dataclass
class BackedUp:
    directory: Path
    before_backup: set[str]  # complaints acknowledged (201) before the backup began
    created: set[str]  # every complaint acknowledged, before, during and after the backup
    env: dict[str, str]
    bucket: str
    root: Path


def settings_for(env: dict[str, str]) -> dict[str, ServiceSettings]:
    with patched_environ(env):
        return {name: SERVICES[name].settings_class()() for name in SERVICE_NAMES}


async def put_objects(nats_url: str, bucket: str) -> None:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream(timeout=10)
        store = await js.create_object_store(bucket)
        for name, data in OBJECTS.items():
            meta = ObjectMeta(name=name, description=f"{name}.pdf", headers={"Sv-Case-Id": ["case-1"]})
            await store.put(name, data, meta=meta)
    finally:
        await client.close()


async def drop_bucket(nats_url: str, bucket: str) -> None:
    client = await nats.connect(nats_url)
    try:
        with contextlib.suppress(BucketNotFoundError):
            await client.jetstream(timeout=10).delete_object_store(bucket)
    finally:
        await client.close()


async def read_objects(nats_url: str, bucket: str) -> dict[str, tuple[bytes, str | None]]:
    client = await nats.connect(nats_url)
    try:
        store = await client.jetstream(timeout=10).object_store(bucket)
        found = {}
        for info in await store.list(ignore_deletes=True):
            result = await asyncio.wait_for(store.get(info.name), 10)
            found[info.name] = (bytes(result.data or b""), info.description)
        return found
    finally:
        await client.close()


async def load(system: System, created: set[str], stop: asyncio.Event) -> None:
    """Light load: one complaint at a time, one every ~20 ms, until told to stop."""
    while not stop.is_set():
        created.add((await create_complaint(system))["id"])
        await asyncio.sleep(0.02)


async def wait_for_count(created: set[str], count: int) -> None:
    async def enough() -> bool:
        return len(created) >= count

    await eventually(enough, timeout=60, what=f"{count} complaints")


@contextlib.asynccontextmanager
async def live_system(
    *, backend: str, root: Path, nats_url: str, extra_env: dict[str, str]
) -> AsyncIterator[tuple[System, InProcessServices]]:
    """``running_system``, with its services at hand to stop one of them."""
    await reset_stream(nats_url, "SUPERVISION")
    databases = Databases(backend, root)
    ports, urls = allocate()
    db_urls = {name: await databases.url_for(name) for name in SERVICE_NAMES}
    env = base_environment(nats_url=nats_url, urls=urls, db_urls=db_urls, ports=ports) | extra_env
    services = InProcessServices()
    system = System(urls=urls, env=env, nats_url=nats_url)
    try:
        for name in SERVICE_NAMES:
            await services.start(name, env)
        yield system, services
    finally:
        await system.close()
        await services.stop_all()
        await databases.drop_all()


@pytest.fixture(scope="module")
async def backed_up(
    backend: str, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BackedUp]:
    """A backup taken under load, with routing stopped for a while before it.

    Routing's durable consumer then lags: intake's copy has complaints marked published that
    routing's copy has not applied. Only the restore's republishing brings them to routing.
    """
    root = tmp_path_factory.mktemp(f"backup-{backend}")
    legacy_dir = root / "legacy-evidence"
    legacy_dir.mkdir()
    (root / "live").mkdir()
    (legacy_dir / hashlib.sha256(LEGACY_CONTENT).hexdigest()).write_bytes(LEGACY_CONTENT)
    bucket = f"sv-backup-{uuid.uuid4().hex[:8]}"
    extra_env = {"EVIDENCE_BUCKET": bucket, "EVIDENCE_DIR": str(legacy_dir)}
    await put_objects(nats_server.url, bucket)
    created: set[str] = set()
    async with live_system(
        backend=backend, root=root / "live", nats_url=nats_server.url, extra_env=extra_env
    ) as (system, services):
        stop = asyncio.Event()
        loaders = [asyncio.create_task(load(system, created, stop)) for _ in range(2)]
        try:
            await wait_for_count(created, 15)
            await services.stop("routing")
            await wait_for_count(created, 40)
            before_backup = set(created)
            await backup(directory=root / "backup", settings=settings_for(system.env), bound=60, report=print)
            await services.start("routing", system.env)
            # Complaints after the backup: they must not come back, nor anything made of them.
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.gather(*loaders)
        env = dict(system.env)
    await drop_bucket(nats_server.url, bucket)  # the store is lost with the rest
    yield BackedUp(root / "backup", before_backup, created, env, bucket, root)


async def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return [tuple(row) for row in await connection.execute(text(query))]
    finally:
        await engine.dispose()


async def consistency(db: dict[str, str]) -> dict[str, Any]:
    complaints = {row[0] for row in await rows(db["intake"], "SELECT id FROM intake_complaint")}
    return {
        "complaints": complaints,
        "routing": [r[0] for r in await rows(db["routing"], "SELECT case_id FROM routing_case")],
        "assignments": [
            r[0] for r in await rows(db["routing"], 'SELECT case_id FROM routing_assignment WHERE "current"')
        ],
        "matters": [r[0] for r in await rows(db["verification"], "SELECT case_id FROM verification_matter")],
        "tasks": [r[0] for r in await rows(db["verification"], "SELECT case_id FROM verification_task")],
        "feedback": [r[0] for r in await rows(db["feedback"], "SELECT case_id FROM feedback_case")],
        "unpublished": {
            name: (await rows(url, "SELECT count(*) FROM outbox WHERE published_at IS NULL"))[0][0]
            for name, url in db.items()
        },
    }


def consistent(state: dict[str, Any]) -> bool:
    complaints = state["complaints"]
    return all(
        sorted(state[key]) == sorted(complaints)
        for key in ("routing", "assignments", "matters", "tasks", "feedback")
    ) and not any(state["unpublished"].values())


async def test_manifest_lists_every_file_with_its_hash_and_revisions(backed_up: BackedUp) -> None:
    manifest = json.loads((backed_up.directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert set(manifest["services"]) == set(SERVICE_NAMES)
    for name, service in manifest["services"].items():
        assert service["file"] in manifest["files"], name
        assert len(service["alembic_revisions"]) == 2, service  # the service's head and the platform's
    for name, described in manifest["files"].items():
        path = backed_up.directory / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == described["sha256"]
        assert path.stat().st_size == described["size"]
        assert path.stat().st_mode & 0o777 == 0o600, name
    folders = [p for p in backed_up.directory.rglob("*") if p.is_dir()] + [backed_up.directory]
    assert all(p.stat().st_mode & 0o777 == 0o700 for p in folders)
    assert manifest["evidence"]["objects"] == len(OBJECTS)
    assert manifest["evidence"]["legacy_files"] == 1
    assert manifest["bus"]["replay_from"] <= manifest["started_at"]


async def test_tampered_backup_is_refused(backed_up: BackedUp, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(backed_up.directory, copy)
    database = next(copy.glob("routing.*"))
    data = bytearray(database.read_bytes())
    data[len(data) // 2] ^= 0xFF
    database.write_bytes(bytes(data))
    fresh = root_settings(backed_up, tmp_path)
    with pytest.raises(CommandError, match=rf"(?s)damaged.*{database.name}: content differs"):
        await restore(directory=copy, settings=fresh, bound=30, report=print)
    # Nothing was written: the intake database named by the settings does not exist.
    assert not (tmp_path / "restored" / "intake.db").exists()

    database.unlink()
    with pytest.raises(CommandError, match=rf"{database.name}: missing"):
        await restore(directory=copy, settings=fresh, bound=30, report=print)


def root_settings(backed_up: BackedUp, tmp_path: Path) -> dict[str, ServiceSettings]:
    env = dict(backed_up.env)
    for name in SERVICE_NAMES:
        env[SERVICES[name].database_env] = f"sqlite:///{tmp_path / 'restored' / f'{name}.db'}"
    return settings_for(env)


async def test_restore_into_fresh_databases_ends_consistent(backed_up: BackedUp, backend: str) -> None:
    databases = Databases(backend, backed_up.root / f"restored-{uuid.uuid4().hex[:6]}")
    databases.root.mkdir()
    db = {name: await databases.url_for(name) for name in SERVICE_NAMES}
    legacy_dir = databases.root / "legacy-evidence"
    env = backed_up.env | {SERVICES[name].database_env: url for name, url in db.items()}
    env["EVIDENCE_DIR"] = str(legacy_dir)
    services = InProcessServices()
    try:
        await restore(directory=backed_up.directory, settings=settings_for(env), bound=60, report=print)
        restored = (await consistency(db))["complaints"]
        assert backed_up.before_backup <= restored
        assert restored <= backed_up.created
        assert restored != backed_up.created, "the complaints made after the backup must not come back"
        with pytest.raises(CommandError, match="already holds data"):
            await restore(directory=backed_up.directory, settings=settings_for(env), bound=60, report=print)

        for name in SERVICE_NAMES:
            await services.start(name, env)
        state = await wait_consistent(db)
        assert state["complaints"] == restored
        assert len(state["tasks"]) == len(set(state["tasks"])) == len(restored)

        found = await read_objects(backed_up.env["NATS_URL"], backed_up.bucket)
        assert {name: data for name, (data, _) in found.items()} == OBJECTS
        assert found["evidence-a"][1] == "evidence-a.pdf"
        assert (legacy_dir / hashlib.sha256(LEGACY_CONTENT).hexdigest()).read_bytes() == LEGACY_CONTENT

        # The restored system takes new work: the stream the restore deleted was created again.
        system = System(
            urls={n: f"http://127.0.0.1:{env[SERVICES[n].port_env]}" for n in SERVICE_NAMES},
            env=env,
            nats_url=env["NATS_URL"],
        )
        try:
            new = await create_complaint(system)
        finally:
            await system.close()
        state = await wait_consistent(db, must_have=new["id"])
        assert state["complaints"] == restored | {new["id"]}
    finally:
        await services.stop_all()
        await databases.drop_all()


async def _state_if_consistent(db: dict[str, str], must_have: str | None = None) -> dict[str, Any] | None:
    state = await consistency(db)
    if must_have is not None and must_have not in state["complaints"]:
        return None
    return state if consistent(state) else None


async def wait_consistent(db: dict[str, str], *, must_have: str | None = None) -> dict[str, Any]:
    """The databases once consistent; else a failure that says what is off."""
    try:
        state: dict[str, Any] = await eventually(
            lambda: _state_if_consistent(db, must_have), timeout=90, interval=0.5, what="consistent databases"
        )
    except AssertionError:
        state = await consistency(db)
        complaints = state["complaints"]
        off = {
            key: {
                "missing": len(complaints - set(state[key])),
                "extra or repeated": len(state[key]) - len(complaints & set(state[key])),
            }
            for key in ("routing", "assignments", "matters", "tasks", "feedback")
        }
        raise AssertionError(
            f"not consistent after 90 s: {len(complaints)} complaints; {off}; unpublished {state['unpublished']}"
        ) from None
    return state


def test_postgres_password_goes_in_the_environment_not_the_command_line() -> None:
    conninfo, env = libpq_target("postgresql+asyncpg://sv:s3cret@db.example:5433/intake?ssl=require")
    assert conninfo == "postgresql://sv@db.example:5433/intake?sslmode=require"
    assert env["PGPASSWORD"] == "s3cret"
