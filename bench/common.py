"""What the benchmarks share: their own nats-server, the four services as processes, keys, figures.

``bench/pipeline.py`` (the event pipeline) and ``bench/scale.py`` (the pages and APIs on a large
data set) start the system the same way: a nats-server with JetStream on a free port, then each
service as its own process (``python -m services serve NAME``) on a free port, with keys made
for the run and the databases in a scratch folder, on PostgreSQL, or given by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.registry import SERVICES  # noqa: E402 - after the sys.path line above
from shared.keys import new_key_pair  # noqa: E402 - after the sys.path line above

SECRET_KEY = "bench-signing-key-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
IDENTITY_KEY = "q2e6GJ1r0yq3dU7m4bQn8wXkZs9tVf5hLc2pAe1oRiM="
RESULTS = ROOT / "bench" / "results"


def bench_token_keys() -> dict[str, str]:
    """Intake's token key pair and feedback's own key pair, made for this run."""
    token, caller = new_key_pair("bench-1"), new_key_pair("feedback-bench-1")
    return {
        "TOKEN_PRIVATE_KEY": token["private"],
        "TOKEN_KEY_ID": "bench-1",
        "TOKEN_PUBLIC_KEYS": token["public_entry"],
        "CALLER_PRIVATE_KEY": caller["private"],
        "CALLER_KEY_ID": "feedback-bench-1",
        "FEEDBACK_CALLER_PUBLIC_KEYS": caller["public_entry"],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_nats(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = workdir / "nats.conf"
    config.write_text(
        f'listen: "127.0.0.1:{port}"\njetstream {{\n  store_dir: "{workdir / "js"}"\n  sync_interval: always\n}}\n',
        encoding="utf-8",
    )
    binary = Path(sys.executable).parent / "nats-server"
    process = subprocess.Popen(
        [str(binary), "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(200):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.1):
            return process, f"nats://127.0.0.1:{port}"
        time.sleep(0.05)
    raise RuntimeError("nats-server did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (VmRSS in Linux /proc; 0 elsewhere or once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Services:
    """The four services as processes on free ports.

    Without ``db_urls`` each gets a fresh database (SQLite in ``workdir``, or a new PostgreSQL
    database on ``postgres_url``, dropped at ``stop``); with them, the given databases are used
    and left as they are.  ``serve_command`` replaces ``python -m services serve`` (the name is
    appended), ``extra_env`` is laid over the environment the services get.
    """

    def __init__(
        self,
        workdir: Path,
        nats_url: str,
        postgres_url: str | None,
        *,
        db_urls: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
        serve_command: Sequence[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.nats_url = nats_url
        self.postgres_url = postgres_url
        self.processes: list[subprocess.Popen[bytes]] = []
        self.urls: dict[str, str] = {}
        self.db_urls: dict[str, str] = dict(db_urls or {})
        self.given_databases = bool(db_urls)
        self.extra_env = dict(extra_env or {})
        self.serve_command = list(serve_command or [sys.executable, "-m", "services", "serve"])
        self.pg_databases: list[str] = []
        self.pids: dict[str, int] = {}

    async def create_databases(self) -> None:
        for name in SERVICES:
            if self.postgres_url:
                import asyncpg

                db = f"bench_{uuid.uuid4().hex[:8]}_{name}"
                conn = await asyncpg.connect(self.postgres_url)
                await conn.execute(f'CREATE DATABASE "{db}"')
                await conn.close()
                self.pg_databases.append(db)
                self.db_urls[name] = (
                    self.postgres_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
                    + "/"
                    + db
                )
            else:
                self.db_urls[name] = f"sqlite:///{self.workdir / f'{name}.db'}"

    async def postgres_deadlocks(self) -> int | None:
        """Deadlocks PostgreSQL detected in the services' databases so far (None on SQLite): each
        one rolled a transaction back after the server's deadlock timeout, a second of the tail."""
        if not (self.postgres_url and self.pg_databases):
            return None
        import asyncpg

        conn = await asyncpg.connect(self.postgres_url)
        try:
            found = await conn.fetchval(
                "SELECT coalesce(sum(deadlocks), 0) FROM pg_stat_database WHERE datname = any($1::text[])",
                self.pg_databases,
            )
        finally:
            await conn.close()
        return int(found)

    async def row_writes(self) -> dict[str, int] | None:
        """Rows inserted, updated and deleted so far in each table of the services' databases
        (``service.table``), from PostgreSQL's statistics; None on SQLite."""
        if not (self.postgres_url and self.pg_databases):
            return None
        import asyncpg

        writes: dict[str, int] = {}
        for service, url in self.db_urls.items():
            conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
            try:
                for row in await conn.fetch(
                    "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del AS written FROM pg_stat_user_tables"
                ):
                    writes[f"{service}.{row['relname']}"] = int(row["written"])
            finally:
                await conn.close()
        return writes

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "SECRET_KEY": SECRET_KEY,
                "IDENTITY_KEY": IDENTITY_KEY,
                **bench_token_keys(),
                "NATS_URL": self.nats_url,
                "DEMO_MODE": "true",
                "LOG_JSON": "true",
                "LOG_LEVEL": "WARNING",
                # Last month's reports would be drawn at start, in the middle of the measured run.
                "REPORTS_SCHEDULE_ENABLED": "false",
                # The clients sign in once; a run at --count 100000 on a loaded machine outlived
                # the default 15 minutes and ended in 401s.
                "ACCESS_TOKEN_TTL_MINUTES": str(24 * 60),
            }
        )
        env.update(self.extra_env)
        for name, spec in SERVICES.items():
            port = free_port()
            self.urls[name] = f"http://127.0.0.1:{port}"
            env[spec.port_env] = str(port)
            env[spec.database_env] = self.db_urls[name]
            env[f"{name.upper()}_URL"] = self.urls[name]
        return env

    def migrate(self, env: dict[str, str] | None = None) -> None:
        """Each service's alembic upgrade on its database (a no-op where it is current).

        ``env`` is the environment the services start with: ``env()`` picks new free ports each
        time, and the ports the services are asked for must be the ones they were started on.
        """
        done = subprocess.run(
            [sys.executable, "-m", "services", "migrate", "all"],
            env=self.env() if env is None else env,
            check=False,
            capture_output=True,
        )
        if done.returncode:
            raise RuntimeError(f"migrate failed: {done.stderr.decode(errors='replace')[-2000:]}")

    async def start(self, *, migrate: bool = True, ready_timeout: float = 60.0) -> None:
        if not self.given_databases:
            await self.create_databases()
        env = self.env()
        if migrate:
            self.migrate(env)
        log = (self.workdir / "services.log").open("ab")
        for name in SERVICES:
            process = subprocess.Popen([*self.serve_command, name], env=env, stdout=log, stderr=log)
            self.processes.append(process)
            self.pids[name] = process.pid
        async with httpx.AsyncClient() as client:
            for name, url in self.urls.items():
                for _ in range(int(ready_timeout * 10)):
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get(f"{url}/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError(f"{name} did not become ready; see {self.workdir / 'services.log'}")

    async def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.postgres_url and self.pg_databases:
            import asyncpg

            conn = await asyncpg.connect(self.postgres_url)
            for db in self.pg_databases:
                await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            await conn.close()


async def wait_until_drained(nats_url: str, *, timeout: float) -> bool:
    """Until every durable consumer of the event stream has nothing pending or unacknowledged."""
    import nats

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            consumers = await js.consumers_info("SUPERVISION")
            if all(c.num_pending == 0 and c.num_ack_pending == 0 for c in consumers):
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await nc.drain()


async def wait_for_audit_checkpoints(nats_url: str, db_urls: dict[str, str], *, timeout: float) -> bool:
    """Until every service has checkpointed its whole audit chain (``shared.audit_anchor``).

    A service checks its chain before it checkpoints it.  On a data set written directly (no
    checkpoints yet) that is hundreds of thousands of entries per service, a minute or more of
    CPU that the measured requests would otherwise share; a bureau's services do it once.
    """
    import nats
    import sqlalchemy as sa

    from shared.audit import AuditEntry
    from shared.audit_anchor import last_checkpoint
    from shared.db import create_engine, table_of

    heads: dict[str, int] = {}
    for service, url in db_urls.items():
        engine = create_engine(url)
        # A SQLite connection here begins IMMEDIATE: a service busy writing at its start (its
        # statistics, its chain check at a million complaints) can hold the lock past the timeout.
        for attempt in range(30):
            try:
                async with engine.connect() as connection:
                    seq = table_of(AuditEntry).c.seq
                    heads[service] = int(
                        (await connection.execute(sa.select(sa.func.max(seq)))).scalar() or 0
                    )
                break
            except sa.exc.OperationalError:
                if attempt == 29:
                    raise
                await asyncio.sleep(1.0)
        await engine.dispose()
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            behind = []
            for service, head in heads.items():
                with contextlib.suppress(Exception):  # the stream not made yet: behind
                    checkpoint = await last_checkpoint(js, service)
                    if checkpoint is not None and checkpoint.seq >= head:
                        continue
                behind.append(service)
            if not behind:
                return True
            await asyncio.sleep(1.0)
        return False
    finally:
        await nc.drain()


async def counter_pairs(
    urls: dict[str, str], first: str, second: str, *, by: str | None = None
) -> dict[str, tuple[float, float]]:
    """Two counters read from each service's ``/metrics``, paired by the value of the label
    ``by`` (a consumer), or by service when ``by`` is None."""
    pairs: dict[str, list[float]] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for service, url in urls.items():
            for line in (await client.get(f"{url}/metrics")).text.splitlines():
                metric, brace, rest = line.partition("{")
                if not brace or metric not in (first, second):
                    continue
                key = service if by is None else rest.split(f'{by}="', 1)[1].split('"', 1)[0]
                pairs.setdefault(key, [0.0, 0.0])[metric == second] = float(rest.rsplit(" ", 1)[1])
    return {key: (a, b) for key, (a, b) in pairs.items()}


async def slice_counts(urls: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Each consumer's slices applied and events in them so far."""
    return await counter_pairs(
        urls, "sv_consumer_slices_applied_total", "sv_consumer_slice_events_total", by="consumer"
    )


async def database_work(urls: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Each service's statements and commits on its database so far."""
    return await counter_pairs(urls, "sv_db_statements_total", "sv_db_commits_total")


def work_per_complaint(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], count: int
) -> dict[str, dict[str, float]]:
    """Statements and commits each service made per complaint between two readings."""
    return {
        service: {
            "statements": round((statements - before.get(service, (0.0, 0.0))[0]) / count, 1),
            "commits": round((commits - before.get(service, (0.0, 0.0))[1]) / count, 2),
        }
        for service, (statements, commits) in after.items()
    }


def events_per_slice(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Per consumer, the events a slice held on average between two readings (the batching)."""
    sizes = {}
    for consumer, (slices, events) in sorted(after.items()):
        old_slices, old_events = before.get(consumer, (0.0, 0.0))
        if slices > old_slices:
            sizes[consumer] = round((events - old_events) / (slices - old_slices), 1)
    return sizes


def postgres_cpu_seconds() -> float:
    """CPU of every process named postgres: the server's share of the work, when it runs here."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                total += cpu_seconds(int(comm.parent.name))
        except OSError:
            continue
    return total


def cpu_snapshot(pids: dict[str, int], *, postgres: bool) -> dict[str, float]:
    snapshot = {name: cpu_seconds(pid) for name, pid in pids.items()}
    if postgres:
        snapshot["postgres"] = postgres_cpu_seconds()
    snapshot["benchmark client"] = sum(os.times()[:2])
    return snapshot


def cpu_per_complaint(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """Milliseconds of CPU each process spent per complaint over the throughput phase."""
    return {name: round((after[name] - before[name]) * 1000 / count, 2) for name in before}
