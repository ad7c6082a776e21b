"""One chaos run: start everything, load it while breaking it, wait for it to settle, judge it.

The summary (printed, and returned as a dict) says what was sent and accepted, what was lost
or duplicated, which outbox rows were left unpublished, how long the system took to settle,
which faults were injected, and why the run failed, if it did.  Every child process is
stopped in a ``finally``, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.chaos.checks import DeadLetters, Verdict, judge, read_dead_letters, read_snapshot
from tests.chaos.faults import FaultRecord, Injector, plan, run_schedule
from tests.chaos.load import LoadReport, Operators
from tests.chaos.processes import SERVICE_NAMES, Nats, PrivatePostgres, Services, postgres_binaries


@dataclass
class ChaosConfig:
    backend: str = "sqlite"  # or "postgres"
    count: int = 3000
    clients: int = 16
    rate: float = 25.0  # complaints per second the clients aim at
    nats_restarts: int = 8
    kill_each_service: bool = True
    pause_service: str = "feedback"
    pause_seconds: float = 10.0  # 0: no pause
    outage_seconds: float = 10.0  # 0: no outage
    outage_victim: str = "intake"
    postgres_restart: bool = True  # only on PostgreSQL
    poison: tuple[str, ...] = ("malformed", "hopeless")
    settle_timeout: float = 180.0
    give_up_after: float = 120.0  # a client stops retrying a complaint after this
    ack_wait_seconds: float = 6.0
    log_level: str = "WARNING"
    postgres_url: str | None = None  # an existing server, used when no PostgreSQL binaries are found
    keep_workdir: bool = False
    total_timeout: float = 1800.0

    @classmethod
    def short(cls, backend: str, *, postgres_url: str | None = None) -> ChaosConfig:
        """The CI version: 300 complaints, 2 NATS restarts, one kill of each service, one poison event."""
        return cls(
            backend=backend,
            count=300,
            clients=8,
            rate=10.0,
            nats_restarts=2,
            pause_seconds=0,
            outage_seconds=0,
            postgres_restart=False,
            poison=("malformed",),
            settle_timeout=90.0,
            give_up_after=90.0,
            postgres_url=postgres_url,
            total_timeout=420.0,
        )


@dataclass
class Cluster:
    config: ChaosConfig
    root: Path
    nats: Nats = field(init=False)
    postgres: PrivatePostgres | None = None
    services: Services | None = None
    notes: list[str] = field(default_factory=list)
    _external_admin: str | None = None
    _external_databases: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.root / "nats").mkdir(parents=True, exist_ok=True)
        self.nats = Nats(self.root / "nats")

    async def start(self) -> None:
        await self.nats.start()
        extra = {
            "LOG_LEVEL": self.config.log_level,
            "CONSUMER_ACK_WAIT_SECONDS": str(self.config.ack_wait_seconds),
            "BATCHING_GUARD": "0",
        }
        self.services = Services(
            root=self.root, nats_url=self.nats.url, db_urls=await self._databases(), extra_env=extra
        )
        await asyncio.to_thread(self.services.migrate)
        for name in SERVICE_NAMES:
            self.services.start(name)
        async with httpx.AsyncClient() as client:
            for name in SERVICE_NAMES:
                if not await self.services.answers(name, "/readyz", timeout=120, client=client):
                    tail = self.services.log_path(name).read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} did not become ready at the start:\n{tail}")

    async def _databases(self) -> dict[str, str]:
        if self.config.backend == "sqlite":
            return {name: f"sqlite:///{self.root / f'{name}.db'}" for name in SERVICE_NAMES}
        import asyncpg

        binaries = postgres_binaries()
        if binaries is not None:
            self.postgres = PrivatePostgres(binaries, self.root)
            await asyncio.to_thread(self.postgres.init)
            await self.postgres.start()
            admin, prefix = self.postgres.admin_url, "chaos"
        elif self.config.postgres_url:
            admin, prefix = self.config.postgres_url, f"chaos_{uuid.uuid4().hex[:8]}"
            self._external_admin = admin.replace("postgresql+asyncpg://", "postgresql://")
            self.notes.append(
                "no PostgreSQL binaries: using the given server; the PostgreSQL restart is skipped"
            )
        else:
            raise RuntimeError(
                "PostgreSQL run impossible: no binaries under /usr/lib/postgresql/*/bin and no server URL "
                "(--postgres-url or TEST_POSTGRES_URL)"
            )
        conn = await asyncpg.connect(admin.replace("postgresql+asyncpg://", "postgresql://"), timeout=10)
        try:
            for name in SERVICE_NAMES:
                await conn.execute(f'CREATE DATABASE "{prefix}_{name}"')
                if self._external_admin:
                    self._external_databases.append(f"{prefix}_{name}")
        finally:
            await conn.close()
        base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        return {name: f"{base}/{prefix}_{name}" for name in SERVICE_NAMES}

    async def readiness(self, client: httpx.AsyncClient) -> dict[str, str]:
        """Each service's /readyz: "200", or the status and reasons, or why it did not answer."""
        assert self.services is not None
        states: dict[str, str] = {}
        exited = self.services.exited()
        for name in SERVICE_NAMES:
            if name in exited:
                states[name] = self.services.down_reason(name)
                continue
            try:
                response = await client.get(f"{self.services.urls[name]}/readyz", timeout=3.0)
            except httpx.HTTPError as exc:
                states[name] = f"no answer ({type(exc).__name__})"
                continue
            if response.status_code == 200:
                states[name] = "200"
            else:
                with contextlib.suppress(ValueError):
                    states[name] = f"{response.status_code} {response.json().get('reasons')}"
                states.setdefault(name, f"{response.status_code}")
        return states

    async def stop(self) -> dict[str, float | None]:
        """Stop everything; the seconds each service took to obey SIGTERM (None: needed SIGKILL)."""
        took: dict[str, float | None] = {}
        try:
            if self.services is not None:
                took = await asyncio.to_thread(self.services.stop_all)
        finally:
            self.nats.stop()
            if self.postgres is not None:
                self.postgres.stop()
                self.postgres.remove()
            if self._external_admin and self._external_databases:
                await self._drop_external()
        return took

    async def _drop_external(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._external_admin, timeout=10)
        try:
            for name in self._external_databases:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@dataclass
class Settled:
    settled: bool
    seconds: float
    verdict: Verdict | None
    letters: DeadLetters | None
    ready: dict[str, str]
    last_error: str | None


async def wait_to_settle(
    cluster: Cluster, accepted: dict[str, str], poison: dict[str, str], *, timeout: float
) -> Settled:
    """Poll until everything recorded has flowed, every outbox is empty, the poison is parked and
    every service is ready, or ``timeout`` passes, or a service process has ended."""
    assert cluster.services is not None
    started = time.monotonic()
    verdict: Verdict | None = None
    letters: DeadLetters | None = None
    ready: dict[str, str] = {}
    last_error: str | None = None
    async with httpx.AsyncClient() as client:
        while True:
            try:
                verdict = judge(await read_snapshot(cluster.services.db_urls), accepted)
                letters = await read_dead_letters(cluster.nats.url, poison) if poison else None
            except Exception as exc:  # a database or NATS still coming back: read again
                last_error = f"{type(exc).__name__}: {exc}"
            ready = await cluster.readiness(client)
            done = (
                verdict is not None
                and verdict.flowed
                and (letters is None or letters.all_parked)
                and all(state == "200" for state in ready.values())
            )
            # A service that ended by itself will not come back: nobody restarts it.
            gone = bool(cluster.services.exited())
            if done or gone or time.monotonic() - started > timeout:
                return Settled(bool(done), time.monotonic() - started, verdict, letters, ready, last_error)
            await asyncio.sleep(1.0)


def failures_of(
    load: LoadReport, records: list[FaultRecord], settled: Settled, final: Verdict | None
) -> list[str]:
    problems: list[str] = []
    if load.stalled:
        problems.append(
            f"intake accepted nothing for a while: load stopped, {load.count('not_sent')} not sent"
        )
    never = load.count("gave_up") + load.count("rejected")
    if never:
        problems.append(
            f"{never} complaints never accepted (gave up {load.count('gave_up')}, refused {load.count('rejected')})"
        )
    problems += [f"fault '{r.name}' went wrong: {r.detail}" for r in records if not r.ok]
    if final is None:
        problems.append(f"the databases could not be read: {settled.last_error}")
    else:
        if final.lost:
            problems.append(f"{final.lost} complaints lost (not through every service)")
        if final.duplicated:
            problems.append(f"{final.duplicated} duplicates")
        if final.mismatched_ids:
            problems.append(f"{final.mismatched_ids} clients were given an id that is not their complaint's")
        stuck = {name: n for name, n in final.unpublished.items() if n}
        if stuck:
            problems.append(f"outbox rows left unpublished: {stuck}")
    if settled.letters is not None:
        if not settled.letters.all_parked:
            problems.append("poison events not parked by every consumer that takes them")
        if settled.letters.others:
            problems.append(f"{len(settled.letters.others)} events that were not poison were parked")
    not_ready = {name: state for name, state in settled.ready.items() if state != "200"}
    if not_ready:
        problems.append(f"services not ready at the end: {not_ready}")
    if not settled.settled:
        problems.append(f"did not settle within {settled.seconds:.0f} s")
    return problems


async def exercise(config: ChaosConfig, cluster: Cluster) -> dict[str, Any]:
    assert cluster.services is not None
    async with httpx.AsyncClient() as client:
        injector = Injector(
            nats=cluster.nats, services=cluster.services, postgres=cluster.postgres, client=client
        )
        faults = plan(
            injector,
            nats_restarts=config.nats_restarts,
            kill_each_service=config.kill_each_service,
            pause=(config.pause_service, config.pause_seconds) if config.pause_seconds > 0 else None,
            outage=(config.outage_seconds, config.outage_victim) if config.outage_seconds > 0 else None,
            # Never the machine's own server: only the private one this run started.
            postgres_restart=config.postgres_restart and cluster.postgres is not None,
            poison=config.poison,
        )
        operators = Operators(
            intake_url=cluster.services.urls["intake"],
            count=config.count,
            clients=config.clients,
            rate=config.rate,
            give_up_after=config.give_up_after,
        )
        started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            loading = group.create_task(operators.run())
            breaking = group.create_task(
                run_schedule(faults, window=config.count / config.rate, started=started)
            )
        load, records = loading.result(), breaking.result()
    print(f"  load and faults done after {time.monotonic() - started:.0f} s; waiting to settle", flush=True)
    settled = await wait_to_settle(cluster, load.accepted, injector.poison, timeout=config.settle_timeout)
    final = settled.verdict
    if settled.settled and final is not None:
        # A redelivery still in flight could add a duplicate: look once more, a little later.  The
        # outbox figure stays the settled one: a row written since is new work, not a stuck row.
        await asyncio.sleep(3.0)
        with contextlib.suppress(Exception):
            again = judge(await read_snapshot(cluster.services.db_urls), load.accepted)
            final = replace(again, unpublished=final.unpublished)
    outage = next((r.window for r in records if r.window), None)
    return {
        "sent": operators.sent,
        "accepted": len(load.accepted),
        "gave_up": load.count("gave_up"),
        "refused": load.count("rejected"),
        **(final.as_dict() if final else {}),
        "settled": settled.settled,
        "time_to_settle_s": round(settled.seconds, 1),
        "readyz_at_end": settled.ready,
        "dead_letters": settled.letters.as_dict() if settled.letters else None,
        "faults_injected": [r.as_dict() for r in records],
        "accepted_during_nats_outage": load.accepted_between(*outage) if outage else None,
        "load": load.as_dict(),
        "service_restarts": dict(cluster.services.restarts),
        "failures": failures_of(load, records, settled, final),
    }


async def run_chaos(config: ChaosConfig) -> dict[str, Any]:
    """Run once; the summary's ``passed`` says whether nothing was lost, duplicated or stuck."""
    root = Path(tempfile.mkdtemp(prefix=f"sv-chaos-{config.backend}-"))
    summary: dict[str, Any] = {
        "backend": config.backend,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {k: v for k, v in asdict(config).items() if k != "postgres_url"},
        "workdir": str(root),
    }
    cluster = Cluster(config, root)
    began = time.monotonic()
    try:
        async with asyncio.timeout(config.total_timeout):
            await cluster.start()
            print(
                f"chaos ({config.backend}): started in {time.monotonic() - began:.0f} s; logs in {root}",
                flush=True,
            )
            summary.update(await exercise(config, cluster))
    except Exception as exc:
        summary.setdefault("failures", []).append(f"the run itself failed: {type(exc).__name__}: {exc}")
        summary["traceback"] = traceback.format_exc()[-4000:]
    finally:
        summary["sigterm_stop_seconds"] = await cluster.stop()
    summary["notes"] = cluster.notes
    summary["wall_seconds"] = round(time.monotonic() - began, 1)
    summary["passed"] = not summary.get("failures")
    if summary["passed"] and not config.keep_workdir:
        shutil.rmtree(root, ignore_errors=True)
        summary["workdir"] = None
    return summary


def describe(summary: dict[str, Any]) -> str:
    """The summary in a few lines for a person."""
    faults = summary.get("faults_injected", [])
    counts: dict[str, int] = {}
    for fault in faults:
        kind = fault["name"].split(" #")[0]
        counts[kind] = counts.get(kind, 0) + 1
    lines = [
        f"chaos {summary['backend']}: {'PASSED' if summary['passed'] else 'FAILED'} in {summary['wall_seconds']} s",
        f"  sent {summary.get('sent')}, accepted {summary.get('accepted')}, lost {summary.get('lost')}, "
        f"duplicated {summary.get('duplicated')}, stuck outbox rows {summary.get('stuck_outbox_rows')}",
        f"  settled: {summary.get('settled')} after {summary.get('time_to_settle_s')} s; readyz: {summary.get('readyz_at_end')}",
        f"  faults: {counts}",
        f"  SIGTERM stop seconds (None = needed SIGKILL): {summary.get('sigterm_stop_seconds')}",
    ]
    lines += [f"  note: {note}" for note in summary.get("notes", [])]
    lines += [f"  FAILURE: {problem}" for problem in summary.get("failures", [])]
    if summary.get("workdir"):
        lines.append(f"  logs kept in {summary['workdir']}")
    return "\n".join(lines)
