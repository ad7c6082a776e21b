"""The four services as four real processes (``python -m services serve``), as a bureau runs them.

These tests prove what in-process tests cannot: a service killed in the middle
of a batch loses nothing and duplicates nothing once it is back, and no
complainant's name or phone number reaches any process's log.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import fixtures
from tests.conftest import BACKENDS
from tests.databases import Databases
from tests.support import (
    SERVICE_NAMES,
    NatsServer,
    System,
    allocate,
    base_environment,
    eventually,
    reset_stream,
)

pytestmark = pytest.mark.e2e


class ProcessSystem(System):
    def __init__(self, *, urls: dict[str, str], env: dict[str, str], nats_url: str, log_dir: Path) -> None:
        super().__init__(urls=urls, env=env, nats_url=nats_url)
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    async def start(self, name: str) -> None:
        log = self.log_path(name).open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "services", "serve", name],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        async def healthy() -> bool:
            if self.processes[name].poll() is not None:
                raise AssertionError(
                    f"{name} exited: {self.log_path(name).read_text(errors='replace')[-3000:]}"
                )
            try:
                response = await self.client(name).get("/readyz")
            except httpx.TransportError:
                return False
            return response.status_code == 200

        await eventually(healthy, timeout=60, interval=0.1, what=f"{name} ready")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        process = self.processes.pop(name)
        process.send_signal(sig)
        try:
            return process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def logs(self) -> str:
        return "\n".join(
            self.log_path(n).read_text(encoding="utf-8", errors="replace")
            for n in SERVICE_NAMES
            if self.log_path(n).exists()
        )


@pytest.fixture(scope="module", params=BACKENDS)
async def processes(
    request: pytest.FixtureRequest, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ProcessSystem]:
    backend = str(request.param)
    root = tmp_path_factory.mktemp(f"e2e-{backend}")
    await reset_stream(nats_server.url, "SUPERVISION")
    databases = Databases(backend, root)
    ports, urls = allocate()
    db_urls = {name: await databases.url_for(name) for name in SERVICE_NAMES}
    env = base_environment(nats_url=nats_server.url, urls=urls, db_urls=db_urls, ports=ports)
    # A killed consumer's unacknowledged messages come back after ack_wait; keep the test short.
    env["CONSUMER_ACK_WAIT_SECONDS"] = "4"
    migrate = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        "migrate",
        "all",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await migrate.communicate()
    assert migrate.returncode == 0, output.decode(errors="replace")
    system = ProcessSystem(urls=urls, env=env, nats_url=nats_server.url, log_dir=root)
    try:
        await asyncio.gather(*(system.start(name) for name in SERVICE_NAMES))
        yield system
    finally:
        await system.close()
        system.stop_all()
        await databases.drop_all()


async def _post_complaint(system: System, body: dict[str, Any]) -> dict[str, Any]:
    response = await system.call("intake", "POST", "/api/v1/complaints", as_user="operator1", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_complaint_flows_through_four_processes(processes: ProcessSystem) -> None:
    system = processes
    body = fixtures.complaint(
        complainant={"name": "赵卫东", "phone": "13912345678", "id_number": "411623196503140024"}
    )
    created = await _post_complaint(system, body)

    async def assignment() -> dict[str, Any] | None:
        response = await system.call(
            "routing", "GET", "/api/v1/assignments", as_user="supervisor1", params={"case_id": created["id"]}
        )
        return response.json() if response.status_code == 200 else None

    assigned = await eventually(assignment, what="assignment")
    inspector = f"inspector-{assigned['team_code']}"

    async def task() -> dict[str, Any] | None:
        response = await system.call(
            "verification", "GET", "/api/v1/tasks", as_user=inspector, params={"case_id": created["id"]}
        )
        return response.json()[0] if response.status_code == 200 and response.json() else None

    found = await eventually(task, what="task")
    assert (
        await system.call("verification", "POST", f"/api/v1/tasks/{found['id']}/claim", as_user=inspector)
    ).status_code == 200
    finding = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{found['id']}/finding",
        as_user=inspector,
        json={"outcome": "unsubstantiated", "summary": "经调取执法记录仪，未发现民警有辱骂推搡行为。"},
    )
    assert finding.status_code == 200, finding.text

    async def draft() -> list[dict[str, Any]] | None:
        response = await system.call(
            "feedback", "GET", "/api/v1/answers", as_user="supervisor1", params={"case_id": created["id"]}
        )
        return response.json() or None

    answers = await eventually(draft, what="answer draft")
    approved = await system.call(
        "feedback", "POST", f"/api/v1/answers/{answers[0]['id']}/approve", as_user="supervisor1"
    )
    assert approved.status_code == 200, approved.text

    async def answered() -> dict[str, Any] | None:
        response = await system.call(
            "feedback",
            "POST",
            "/api/v1/public/lookup",
            json={"tracking_code": created["tracking_code"], "query_secret": created["query_secret"]},
        )
        return response.json() if response.json().get("status") == "answered" else None

    result = await eventually(answered, what="answered")
    assert "不属实" in result["answer"]

    # Give the last log lines a moment to be written, then read every process's log.
    await asyncio.sleep(0.5)
    logs = system.logs()
    for secret in ("赵卫东", "13912345678", "411623196503140024", created["query_secret"]):
        assert secret not in logs, f"{secret!r} leaked into a log line"
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert lines, "services log JSON when not on a terminal"
    assert all({"case_id", "event_id", "correlation_id"} <= set(line) for line in lines)
    handled = [
        line for line in lines if line.get("msg") == "event handled" and line.get("case_id") == created["id"]
    ]
    assert handled and all(line["event_id"] for line in handled)
    # The correlation id of the operator's request follows the matter across every service.
    request_ids = {line["correlation_id"] for line in handled}
    assert len(request_ids) >= 1 and None not in request_ids


async def test_killed_consumers_lose_nothing_and_duplicate_nothing(processes: ProcessSystem) -> None:
    system = processes
    total = 60
    created: list[dict[str, Any]] = []
    gate = asyncio.Semaphore(8)

    async def post_one(body: dict[str, Any]) -> None:
        async with gate:
            created.append(await _post_complaint(system, body))

    async def tasks_now() -> list[dict[str, Any]]:
        response = await system.call(
            "verification", "GET", "/api/v1/tasks", as_user="supervisor1", params={"limit": 500}
        )
        ids = {c["id"] for c in created}
        return [t for t in response.json() if t["case_id"] in ids]

    posting = asyncio.gather(*(post_one(fixtures.complaint()) for _ in range(total)))
    # Routing dies without warning while the batch is flowing through it (no chance to ack
    # what it fetched or to mark its outbox); verification is stopped politely a little later.
    await eventually(lambda: _at_least(tasks_now, 10), interval=0.02, what="the batch to be under way")
    system.stop("routing", signal.SIGKILL)
    await eventually(
        lambda: _true(len(created) >= 40), interval=0.02, what="more complaints while routing is down"
    )
    system.stop("verification", signal.SIGTERM)
    await posting
    await asyncio.gather(system.start("routing"), system.start("verification"))

    case_ids = {c["id"] for c in created}
    assert len(case_ids) == total

    async def every_case_has_a_task() -> list[dict[str, Any]] | None:
        found = await tasks_now()
        return found if {t["case_id"] for t in found} == case_ids else None

    await eventually(every_case_has_a_task, timeout=60, interval=0.25, what="a task for every complaint")
    # Let any redelivery still in flight land before counting duplicates.
    await asyncio.sleep(2.0)
    per_case: dict[str, int] = {}
    for task in await tasks_now():
        per_case[task["case_id"]] = per_case.get(task["case_id"], 0) + 1
    assert len(per_case) == total
    assert set(per_case.values()) == {1}, {k: v for k, v in per_case.items() if v != 1}


async def _at_least(probe: Any, count: int) -> bool:
    return len(await probe()) >= count


async def _true(value: bool) -> bool:
    return value
