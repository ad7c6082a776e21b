from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import TOKEN_KEYS_ENVIRONMENT, NatsServer, System, running_system, start_nats

BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get("TEST_POSTGRES_URL") else [])
# The in-process consumers and group commits check the batching rules too (shared/batchguard.py).
os.environ.setdefault("BATCHING_GUARD", "1")
# Settings built directly in tests (FeedbackSettings(secret_key=...)) need the token keys too.
for _name, _value in TOKEN_KEYS_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("nats"))
    yield server
    server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
async def system(
    backend: str, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    root: Path = tmp_path_factory.mktemp(f"system-{backend}")
    async with running_system(backend=backend, root=root, nats_url=nats_server.url) as running:
        yield running
