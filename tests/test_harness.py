"""The test harness itself: a service that cannot start fails its own test, not every test after it.

uvicorn ends a start-up that failed (here: its port already taken) with ``sys.exit``; a SystemExit
raised in a task escapes the event loop, and once it broke the session's loop: one module's failed
start-up showed as 37 errors in the modules after it.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from tests.support import InProcessServices, allocate, base_environment


async def test_a_service_whose_port_is_taken_fails_its_start_with_an_error(tmp_path: Path) -> None:
    ports, urls = allocate()
    env = base_environment(
        nats_url="nats://127.0.0.1:1",
        urls=urls,
        db_urls={name: f"sqlite+aiosqlite:///{tmp_path / name}.db" for name in ports},
        ports=ports,
    )
    services = InProcessServices()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["intake"]))
        taken.listen()
        with pytest.raises(RuntimeError, match="intake ended during start-up"):
            await services.start("intake", env)
    assert services.servers == {}
    # The loop goes on: the next await is served as usual.
    assert await asyncio.sleep(0, result="still running") == "still running"
