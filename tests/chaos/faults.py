"""The faults, and the schedule that spreads them over the load.

Faults run one after another, each bounded in time; a fault that could not be carried out
(a server that would not come back) is recorded as failed, and the run goes on.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx

from shared.events import TaskClaimed
from shared.outbox import HEADER_CASE_ID, HEADER_EVENT_TYPE, HEADER_EVENT_VERSION, HEADER_MSG_ID
from tests.chaos.checks import POISON_HEADER
from tests.chaos.processes import Nats, PrivatePostgres, Services

FAULT_TIMEOUT = 150.0


@dataclass
class FaultRecord:
    name: str
    at: float  # seconds after the load started
    seconds: float = 0.0
    ok: bool = True
    detail: str = ""
    window: tuple[float, float] | None = None  # monotonic times of an outage, for the load figures

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "at_s": round(self.at, 1),
            "seconds": round(self.seconds, 1),
            "ok": self.ok,
            "detail": self.detail,
        }


@dataclass
class Injector:
    nats: Nats
    services: Services
    postgres: PrivatePostgres | None
    service_down_seconds: float = 2.0
    nats_down_seconds: float = 1.0
    restart_ready_timeout: float = 60.0
    poison: dict[str, str] = field(default_factory=dict)  # poison id -> subject
    client: httpx.AsyncClient = field(default_factory=httpx.AsyncClient)

    async def kill_service(self, name: str) -> str:
        self.services.kill(name)
        await asyncio.sleep(self.service_down_seconds)
        self.services.restart(name)
        started = time.monotonic()
        if not await self.services.answers(
            name, "/healthz", timeout=self.restart_ready_timeout, client=self.client
        ):
            raise FaultFailed(
                f"{name} did not answer /healthz within {self.restart_ready_timeout:g} s of its restart "
                f"({self.services.down_reason(name)})"
            )
        return f"SIGKILL, restarted after {self.service_down_seconds:g} s, /healthz after {time.monotonic() - started:.1f} s"

    async def restart_nats(self) -> str:
        self.nats.kill()
        await asyncio.sleep(self.nats_down_seconds)
        await self.nats.start()
        return f"SIGKILL, restarted on its store after {self.nats_down_seconds:g} s"

    async def pause_service(self, name: str, seconds: float) -> str:
        self.services.pause(name)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.services.resume(name)
        return f"SIGSTOP for {seconds:g} s, then SIGCONT"

    async def nats_outage(self, seconds: float, victim: str, record: FaultRecord) -> str:
        """NATS down for ``seconds`` (longer if the restarted ``victim`` needs it to be judged)."""
        self.nats.kill()
        down_at = time.monotonic()
        try:
            await asyncio.sleep(min(2.0, seconds / 4))
            self.services.restart(victim)
            restarted = time.monotonic()
            # Judge /healthz while NATS is still down: up to the outage's end, at least 20 s.
            budget = max(seconds - (restarted - down_at), 20.0)
            healthy = await self.services.answers(victim, "/healthz", timeout=budget, client=self.client)
            answered_after = time.monotonic() - restarted
            await asyncio.sleep(max(seconds - (time.monotonic() - down_at), 0))
        finally:
            record.window = (down_at, time.monotonic())
            await self.nats.start()
        if not healthy:
            raise FaultFailed(
                f"{victim}, restarted while NATS was down, did not answer /healthz within {answered_after:.0f} s "
                f"({self.services.down_reason(victim)})"
            )
        return (
            f"NATS down {record.window[1] - down_at:.1f} s; {victim} restarted during it "
            f"answered /healthz after {answered_after:.1f} s"
        )

    async def restart_postgres(self) -> str:
        if self.postgres is None:
            return "skipped: no private PostgreSQL server (PostgreSQL binaries not found)"
        self.postgres.crash()
        await asyncio.sleep(self.service_down_seconds)
        started = time.monotonic()
        await self.postgres.start()
        return f"immediate shutdown, restarted after {self.service_down_seconds:g} s, answering after {time.monotonic() - started:.1f} s"

    async def publish_poison(self, kinds: tuple[str, ...]) -> str:
        """``malformed``: a ComplaintReceived that is not JSON, parked at once by each consumer of
        it; ``hopeless``: a TaskClaimed for a matter that will never exist, retried by its
        consumer until ``max_deliver`` and then parked."""
        import nats

        malformed_id, ghost_id = f"chaos-malformed-{uuid.uuid4()}", f"chaos-ghost-{uuid.uuid4()}"
        ghost = TaskClaimed(case_id=ghost_id, task_id=str(uuid.uuid4()), team_code="411681", actor="chaos")
        messages = {
            "malformed": (
                malformed_id,
                "sv.ComplaintReceived.v1",
                b'{"case_id": "chaos", "trac',
                "ComplaintReceived",
            ),
            "hopeless": (ghost_id, ghost.subject(), ghost.model_dump_json().encode(), ghost.event_type),
        }
        nc = await nats.connect(self.nats.url, connect_timeout=3, max_reconnect_attempts=5)
        try:
            js = nc.jetstream(timeout=5)
            for poison_id, subject, data, event_type in (messages[kind] for kind in kinds):
                headers = {
                    HEADER_MSG_ID: poison_id,
                    HEADER_EVENT_TYPE: event_type,
                    HEADER_EVENT_VERSION: "1",
                    HEADER_CASE_ID: poison_id,
                    POISON_HEADER: poison_id,
                }
                await js.publish(subject, data, headers=headers)
                self.poison[poison_id] = subject
        finally:
            await asyncio.wait_for(nc.close(), timeout=5)
        return json.dumps({pid: subject for pid, subject in self.poison.items()})


class FaultFailed(RuntimeError):
    """A fault whose aftermath was wrong (a service that did not come back): the run fails."""


Fault = tuple[str, Callable[[FaultRecord], Awaitable[str]]]


def _ignoring_record(action: Callable[[], Awaitable[str]]) -> Callable[[FaultRecord], Awaitable[str]]:
    async def fault(_record: FaultRecord) -> str:
        return await action()

    return fault


def plan(
    injector: Injector,
    *,
    nats_restarts: int,
    kill_each_service: bool,
    pause: tuple[str, float] | None,
    outage: tuple[float, str] | None,
    postgres_restart: bool,
    poison: tuple[str, ...],
) -> list[Fault]:
    """The faults in order: poison first, then the others alternating with the NATS restarts."""
    others: list[Fault] = []
    if kill_each_service:
        for name in ("routing", "verification", "intake", "feedback"):
            others.append((f"kill {name}", _ignoring_record(partial(injector.kill_service, name))))
    if pause:
        others.append((f"pause {pause[0]}", _ignoring_record(partial(injector.pause_service, *pause))))
    if outage:
        others.append((f"NATS outage, {outage[1]} restarted", partial(injector.nats_outage, *outage)))
    if postgres_restart:
        others.append(("restart PostgreSQL", _ignoring_record(injector.restart_postgres)))
    restarts: list[Fault] = [
        (f"restart NATS #{i + 1}", _ignoring_record(injector.restart_nats)) for i in range(nats_restarts)
    ]
    ordered: list[Fault] = []
    if poison:
        ordered.append(
            (f"poison ({', '.join(poison)})", _ignoring_record(partial(injector.publish_poison, poison)))
        )
    while others or restarts:
        if others:
            ordered.append(others.pop(0))
        if restarts:
            ordered.append(restarts.pop(0))
    return ordered


async def run_schedule(faults: list[Fault], *, window: float, started: float) -> list[FaultRecord]:
    """Fault i starts (i + 0.5) * window / len(faults) after ``started``, or when the one before ends."""
    records: list[FaultRecord] = []
    slot = window / max(len(faults), 1)
    for index, (name, action) in enumerate(faults):
        delay = started + (index + 0.5) * slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        record = FaultRecord(name=name, at=time.monotonic() - started)
        begun = time.monotonic()
        try:
            async with asyncio.timeout(FAULT_TIMEOUT):
                record.detail = await action(record)
        except Exception as exc:  # a fault that went wrong is a finding, not the end of the run
            record.ok, record.detail = False, f"{type(exc).__name__}: {exc}"
        record.seconds = time.monotonic() - begun
        print(
            f"  [{record.at:6.1f} s] {name}: {'ok' if record.ok else 'FAILED'} - {record.detail}", flush=True
        )
        records.append(record)
    return records
