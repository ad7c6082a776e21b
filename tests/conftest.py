from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import (
    SHARED_SYSTEMS,
    TOKEN_KEYS_ENVIRONMENT,
    NatsServer,
    SharedSystems,
    System,
    running_system,
    start_nats,
)

BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get("TEST_POSTGRES_URL") else [])
# The in-process consumers and group commits check the batching rules too (shared/batchguard.py).
os.environ.setdefault("BATCHING_GUARD", "1")
# Settings built directly in tests (FeedbackSettings(secret_key=...)) need the token keys too.
for _name, _value in TOKEN_KEYS_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "private_system: the module's `system` is its own, on empty databases (it sets a clock, "
        "ticks a scheduler over every row, counts all rows or writes settings), not the shared one",
    )


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("nats"))
    yield server
    server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
async def shared_systems() -> AsyncIterator[SharedSystems]:
    yield SHARED_SYSTEMS
    await SHARED_SYSTEMS.release()


@pytest.fixture(scope="module")
async def system(
    request: pytest.FixtureRequest,
    backend: str,
    nats_server: NatsServer,
    shared_systems: SharedSystems,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[System]:
    """The four services on ``backend``, shared with the other modules that use this fixture.

    A module signs in and creates its own data, and finds only its own by scoping to it (its
    ids, its unique numbers), never by counting all rows.  A module that sets a clock, ticks a
    scheduler, counts all rows or changes settings is marked
    ``pytestmark = pytest.mark.private_system`` and gets a system of its own; one that needs its
    own environment or restarts a service builds a ``system`` fixture on ``running_system``.
    """
    if request.node.get_closest_marker("private_system"):
        root: Path = tmp_path_factory.mktemp(f"system-{backend}")
        async with running_system(backend=backend, root=root, nats_url=nats_server.url) as running:
            yield running
        return
    view = await shared_systems.acquire(
        backend=backend, nats_url=nats_server.url, root=tmp_path_factory.mktemp(f"shared-{backend}")
    )
    try:
        yield view
    finally:
        await view.close()


@pytest.fixture(scope="module")
async def private_system(
    backend: str, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    """The four services on ``backend`` for this module alone, on empty databases."""
    root: Path = tmp_path_factory.mktemp(f"system-{backend}")
    async with running_system(backend=backend, root=root, nats_url=nats_server.url) as running:
        yield running


def _uses_shared_system(item: pytest.Item) -> bool:
    if item.get_closest_marker("private_system"):
        return False
    info = getattr(item, "_fixtureinfo", None)
    if info is None or not info.name2fixturedefs.get("system"):
        return False
    return bool(info.name2fixturedefs["system"][-1].func.__module__ == __name__)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the shared system last, grouped by backend: each backend's system starts once.

    Everything else (private systems, scratch streams, which stop the shared system) runs
    before, in its usual order.
    """

    def key(item: pytest.Item) -> tuple[int, int]:
        if not _uses_shared_system(item):
            return (0, 0)
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec is not None else None
        return (1, BACKENDS.index(backend) if backend in BACKENDS else len(BACKENDS))

    items.sort(key=key)
