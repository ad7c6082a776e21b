"""The children of a chaos run: nats-server, a private PostgreSQL and the four services.

Every child runs in its own process group (so a signal reaches whatever it forked) and
carries a parent-death signal on Linux, so that a harness killed outright (pytest-timeout's
``os._exit``, a SIGKILL) does not leave servers behind on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import glob
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from services.registry import SERVICES
from tests.support import base_environment, free_port, nats_server_binary

SERVICE_NAMES = tuple(SERVICES)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the harness dies (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    argv: list[str], *, log_path: Path, env: dict[str, str] | None = None, user: str | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session with its output appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            user=user,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )


def signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def kill_now(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole group and reap it (bounded: a SIGKILLed process cannot refuse)."""
    signal_group(process, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def stop_politely(process: subprocess.Popen[bytes], *, sig: int, timeout: float) -> float | None:
    """Send ``sig`` (after a SIGCONT, in case it is paused); seconds it took to exit, or None
    when it had to be SIGKILLed after ``timeout``."""
    if process.poll() is not None:
        return 0.0
    signal_group(process, signal.SIGCONT)
    started = time.monotonic()
    signal_group(process, sig)
    try:
        process.wait(timeout=timeout)
        return round(time.monotonic() - started, 2)
    except subprocess.TimeoutExpired:
        kill_now(process)
        return None


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.3):
        return True
    return False


async def wait_until(probe: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        await asyncio.sleep(interval)
    return probe()


class Nats:
    """One nats-server on a fixed port and store, so that it can be killed and come back as itself."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.config = root / "nats.conf"
        self.config.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{\n  store_dir: "{root / "js"}"\n  sync_interval: always\n}}\n',
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.process = spawn([nats_server_binary(), "-c", str(self.config)], log_path=self.root / "nats.log")
        if not await wait_until(lambda: port_open(self.port), timeout=20):
            raise RuntimeError(f"nats-server did not listen on {self.port}; see {self.root / 'nats.log'}")

    def kill(self) -> None:
        if self.process is not None:
            kill_now(self.process)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_politely(self.process, sig=signal.SIGTERM, timeout=10)
            self.process = None


def postgres_binaries() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb and postgres."""
    found = [
        Path(path)
        for path in glob.glob("/usr/lib/postgresql/*/bin")
        if (Path(path) / "initdb").exists() and (Path(path) / "postgres").exists()
    ]

    def version(path: Path) -> float:
        try:
            return float(path.parent.name)
        except ValueError:
            return 0.0

    return max(found, key=version) if found else None


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port, trust auth, 127.0.0.1 only.

    PostgreSQL refuses to run as root, so under root it runs as the ``postgres`` user, in a
    folder that user owns.
    """

    def __init__(self, bin_dir: Path, log_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.log_path = log_dir / "postgres.log"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.data_root = Path(tempfile.mkdtemp(prefix="sv-chaos-pg-"))
        self.data_dir = self.data_root / "data"
        self.process: subprocess.Popen[bytes] | None = None
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        if self.user:
            import pwd

            entry = pwd.getpwnam(self.user)
            os.chown(self.data_root, entry.pw_uid, entry.pw_gid)
        initdb = [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-A", "trust", "-U", "postgres"]
        result = subprocess.run(
            [*initdb, "-E", "UTF8", "--locale=C", "--no-sync"],
            user=self.user,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed: {result.stdout.decode()[-2000:]} {result.stderr.decode()[-2000:]}"
            )

    async def start(self) -> None:
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        argv += [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=300",
        ]
        self.process = spawn(argv, log_path=self.log_path, user=self.user)
        if not await wait_until(lambda: port_open(self.port), timeout=60):
            raise RuntimeError(f"PostgreSQL did not listen on {self.port}; see {self.log_path}")
        # The port opens before the end of crash recovery: wait until it takes a query.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if await self.answers():
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"PostgreSQL did not answer; see {self.log_path}")

    async def answers(self) -> bool:
        import asyncpg

        try:
            conn = await asyncpg.connect(self.admin_url, timeout=3)
        except Exception:
            return False
        try:
            await conn.execute("SELECT 1", timeout=3)
            return True
        except Exception:
            return False
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def crash(self) -> None:
        """Immediate shutdown (SIGQUIT): no checkpoint, crash recovery at the next start."""
        if self.process is not None:
            if stop_politely(self.process, sig=signal.SIGQUIT, timeout=20) is None:
                raise RuntimeError("PostgreSQL ignored an immediate shutdown")
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_politely(self.process, sig=signal.SIGINT, timeout=15)
            self.process = None

    def remove(self) -> None:
        subprocess.run(["rm", "-rf", str(self.data_root)], check=False, timeout=60)


class Services:
    """The four services as ``python -m services serve <name>``, on fixed ports for the whole run."""

    def __init__(
        self, *, root: Path, nats_url: str, db_urls: dict[str, str], extra_env: dict[str, str]
    ) -> None:
        self.root = root
        self.ports = {name: free_port() for name in SERVICE_NAMES}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        self.db_urls = db_urls
        env = base_environment(nats_url=nats_url, urls=self.urls, db_urls=db_urls, ports=self.ports)
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1", **extra_env}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts = dict.fromkeys(SERVICE_NAMES, 0)

    def log_path(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def migrate(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "services", "migrate", "all"],
            env=self.env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"migrations failed: {(result.stdout + result.stderr).decode()[-3000:]}")

    def start(self, name: str) -> None:
        self.processes[name] = spawn(
            [sys.executable, "-m", "services", "serve", name], env=self.env, log_path=self.log_path(name)
        )

    def kill(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            kill_now(process)

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start(name)
        self.restarts[name] += 1

    def pause(self, name: str) -> None:
        signal_group(self.processes[name], signal.SIGSTOP)

    def resume(self, name: str) -> None:
        signal_group(self.processes[name], signal.SIGCONT)

    def exited(self) -> dict[str, int]:
        """Services whose process ended by itself, with its exit code."""
        return {
            name: code for name, process in self.processes.items() if (code := process.poll()) is not None
        }

    async def answers(self, name: str, path: str, *, timeout: float, client: httpx.AsyncClient) -> bool:
        """Whether ``path`` answers 200 before ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(f"{self.urls[name]}{path}", timeout=2.0)
                if response.status_code == 200:
                    return True
            process = self.processes.get(name)
            if process is not None and process.poll() is not None:
                return False
            await asyncio.sleep(0.2)
        return False

    def down_reason(self, name: str) -> str:
        """Why ``name`` does not answer: its exit code and last line of non-JSON output, if it exited."""
        process = self.processes.get(name)
        if process is None or process.poll() is None:
            return "no answer"
        lines = self.log_path(name).read_text(encoding="utf-8", errors="replace").splitlines()
        last = next((line for line in reversed(lines) if line.strip() and not line.startswith("{")), "")
        return f"exited with code {process.returncode}: {last[:300]}"

    def stop_all(self) -> dict[str, float | None]:
        """SIGTERM every service in parallel; seconds each took, None where SIGKILL was needed."""
        for process in self.processes.values():
            signal_group(process, signal.SIGCONT)
            signal_group(process, signal.SIGTERM)
        took: dict[str, float | None] = {}
        started = time.monotonic()
        for name, process in self.processes.items():
            remaining = max(15 - (time.monotonic() - started), 0.1)
            try:
                process.wait(timeout=remaining)
                took[name] = round(time.monotonic() - started, 2)
            except subprocess.TimeoutExpired:
                kill_now(process)
                took[name] = None
        self.processes.clear()
        return took

    def kill_all(self) -> None:
        for process in self.processes.values():
            kill_now(process)
        self.processes.clear()
