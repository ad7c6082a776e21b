"""Two instances of each service as ``python -m services serve <name>``, behind one balancer each,
on PostgreSQL databases made for this run (``cluster_<pid>_<service>``) and dropped at its end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.registry import SERVICES
from tests.chaos.processes import kill_now, signal_group, spawn
from tests.cluster.balancer import Balancer
from tests.support import SERVICE_NAMES, base_environment, free_port

INSTANCES = ("a", "b")


def admin_url(base: str) -> str:
    return base.replace("postgresql+asyncpg://", "postgresql://")


class ClusterDatabases:
    """One PostgreSQL database per service, shared by both of its instances."""

    def __init__(self, base_url: str) -> None:
        self.base_url = admin_url(base_url)
        self.names = {name: f"cluster_{os.getpid()}_{name}" for name in SERVICE_NAMES}
        self.created: list[str] = []

    def url(self, service: str) -> str:
        return self.base_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + (
            f"/{self.names[service]}"
        )

    @property
    def urls(self) -> dict[str, str]:
        return {name: self.url(name) for name in SERVICE_NAMES}

    async def create(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.base_url, timeout=10)
        try:
            for name in self.names.values():
                # A run killed outright leaves its databases behind; the pid makes a clash unlikely.
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=30)
                await conn.execute(f'CREATE DATABASE "{name}"', timeout=30)
                self.created.append(name)
        finally:
            await conn.close(timeout=5)

    async def drop(self) -> None:
        if not self.created:
            return
        import asyncpg

        conn = await asyncpg.connect(self.base_url, timeout=10)
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=30)
        finally:
            await conn.close(timeout=5)
        self.created.clear()


def last_error(log_path: Path) -> str:
    """The last error-level line of a service's JSON log, shortened to its message and exception."""
    found = "no error line in the log"
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            text = str(entry.get("exception") or entry.get("event") or entry.get("msg") or "")
            if entry.get("level") == "error" and "Error" in text:
                # The exception's own lines, without the traceback's frames.
                lines = [part for part in text.splitlines() if "Error" in part and not part.startswith(" ")]
                found = " | ".join(lines[-3:])
    return found[-1500:]


@dataclass
class Instance:
    service: str
    label: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"{self.service}-{self.label}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ServiceFleet:
    """Every instance of every service, and the balancers the services and clients go through."""

    def __init__(
        self, *, root: Path, nats_url: str, db_urls: dict[str, str], extra_env: dict[str, str]
    ) -> None:
        self.root = root
        self.instances = {
            (service, label): Instance(service=service, label=label, port=free_port())
            for service in SERVICE_NAMES
            for label in INSTANCES
        }
        self.balancers = {
            service: Balancer(
                port=free_port(), backends=[self.instances[(service, label)].port for label in INSTANCES]
            )
            for service in SERVICE_NAMES
        }
        self.urls = {service: balancer.url for service, balancer in self.balancers.items()}
        ports = {service: balancer.port for service, balancer in self.balancers.items()}
        env = base_environment(nats_url=nats_url, urls=self.urls, db_urls=db_urls, ports=ports)
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1", **extra_env}
        self.start_failures: dict[str, str] = {}

    def log_path(self, instance: Instance) -> Path:
        return self.root / f"{instance.name}.log"

    async def migrate(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services", "migrate", "all",
            env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout=180)
        except TimeoutError:
            process.kill()
            raise RuntimeError("migrations took longer than 180 s") from None
        if process.returncode != 0:
            raise RuntimeError(f"migrations failed: {output.decode(errors='replace')[-3000:]}")

    async def start_balancers(self) -> None:
        for balancer in self.balancers.values():
            await balancer.start()

    def start(self, instance: Instance) -> None:
        env = {**self.env, SERVICES[instance.service].port_env: str(instance.port)}
        instance.process = spawn(
            [sys.executable, "-m", "services", "serve", instance.service],
            env=env,
            log_path=self.log_path(instance),
        )

    async def wait_ready(self, instances: list[Instance], *, timeout: float) -> None:
        """Until every one answers /readyz 200 (its NATS consumers and relay are up).

        An instance that exits on its way up is started once more and its last error is kept in
        ``start_failures``: a failed first start is a finding of the run, not the end of it.
        """
        deadline = time.monotonic() + timeout
        waiting = list(instances)
        async with httpx.AsyncClient(timeout=3.0) as client:
            while waiting:
                for instance in list(waiting):
                    assert instance.process is not None
                    if instance.process.poll() is not None:
                        if instance.name in self.start_failures:
                            tail = self.log_path(instance).read_text(errors="replace")[-3000:]
                            raise RuntimeError(f"{instance.name} exited twice: {tail}")
                        self.start_failures[instance.name] = last_error(self.log_path(instance))
                        self.start(instance)
                        continue
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{instance.url}/readyz")).status_code == 200:
                            waiting.remove(instance)
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    names = ", ".join(i.name for i in waiting)
                    raise RuntimeError(f"not ready within {timeout} s: {names}")
                await asyncio.sleep(0.25)

    def kill(self, instance: Instance) -> None:
        if instance.process is not None:
            kill_now(instance.process)
            instance.process = None

    def exited(self) -> dict[str, int]:
        """Instances that ended by themselves (not killed by the test), with their exit code."""
        return {
            instance.name: code
            for instance in self.instances.values()
            if instance.process is not None and (code := instance.process.poll()) is not None
        }

    async def stop_all(self) -> None:
        """SIGTERM every live instance, SIGKILL what is left after 15 s; then the balancers."""
        live = [i for i in self.instances.values() if i.process is not None]
        for instance in live:
            assert instance.process is not None
            signal_group(instance.process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for instance in live:
            assert instance.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                instance.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            self.kill(instance)
        for balancer in self.balancers.values():
            await balancer.stop()
