"""``python -m services dev``'s run: the four services and NATS as children, watched until one stops."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.cli.common import CommandError, local_host
from services.cli.natsserver import await_embedded_nats, start_embedded_nats
from services.cli.supervisor import LABEL_WIDTH, Child, Output, start_child, stop_children
from services.registry import ServiceSpec

if TYPE_CHECKING:
    from shared.settings import ServiceSettings

SERVICE_TITLES = {"intake": "受理", "routing": "分办", "verification": "核查", "feedback": "反馈"}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

OnReady = Callable[[], Coroutine[Any, Any, None]]
DEMO_SEED_STATE = "demo-seed.json"


@dataclass
class Planned:
    spec: ServiceSpec
    settings: ServiceSettings
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{local_host(self.settings.http_host)}:{self.port}"


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
    shown = [name for name in names if not name.startswith(("inspector-", "leader-"))]
    for prefix in ("inspector-", "leader-"):
        group = [name for name in names if name.startswith(prefix)]
        if len(group) > 2:
            shown.append(f"{group[0]} … {group[-1]} ({len(group)})")
        else:
            shown += group
    return f"演示账号 / demo accounts: {', '.join(shown)}; 密码 / password: {DEMO_PASSWORD}"


def banner(planned: Sequence[Planned], demo: bool, extra: Sequence[str] = ()) -> str:
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
        lines += extra
    else:
        lines.append("  DEMO_MODE=false: 用 / create accounts with `python -m services create-user ...`")
    lines += ["  按 Ctrl-C 停止 / press Ctrl-C to stop", "=" * 64, ""]
    return "\n".join(lines)


async def seed_demo(planned: Sequence[Planned], out: Output) -> None:
    """The demo matters, made through the services' APIs once they answer; never stops the run."""
    import httpx

    from services.cli.common import VAR_DIR
    from services.demo_seed import SeedError, seed

    urls = {item.spec.name: item.base_url for item in planned}
    try:
        # The steps done are kept beside the data: a seeding cut short by Ctrl-C goes on next time.
        await seed(urls, out.say, state_file=VAR_DIR / DEMO_SEED_STATE)
    except (SeedError, httpx.HTTPError) as exc:
        out.say(f"demo data not seeded: {exc}")


def _on_stop_signals(stop: asyncio.Event, force: asyncio.Event, out: Output) -> None:
    """The first signal stops everything in order; a second one kills instead of waiting."""

    def on_signal(signum: int) -> None:
        if stop.is_set():
            out.say("asked again: killing instead of waiting")
            force.set()
        else:
            out.say(f"{signal.Signals(signum).name}: stopping (again to kill)")
            stop.set()

    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)


async def _watch(
    planned: Sequence[Planned],
    children: Sequence[Child],
    stop: asyncio.Event,
    out: Output,
    startup_timeout: float,
    on_ready: OnReady | None,
    banner_lines: Sequence[str] = (),
) -> str | None:
    """Until asked to stop or a child exits: the failure, if any. Shows the banner once all answer."""
    watched = {asyncio.create_task(child.process.wait()): child for child in children}
    ready: asyncio.Task[None] = asyncio.create_task(wait_healthy(planned, startup_timeout))
    ready_task: asyncio.Task[None] | None = ready
    after_ready: asyncio.Task[None] | None = None
    pending: set[asyncio.Task[Any]] = {asyncio.create_task(stop.wait()), ready, *watched}
    failure: str | None = None
    try:
        while failure is None and not stop.is_set():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if ready_task is not None and ready_task in done:
                error = ready_task.exception()
                if error is not None:
                    return str(error)
                ready_task = None
                demo = any(item.settings.demo_mode for item in planned)
                out.write(banner(planned, demo, banner_lines).encode() + b"\n")
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
    return failure


def child_environment(env: dict[str, str], service: str) -> dict[str, str]:
    """``env`` for one service: its own NATS user and password, and no other's."""
    from services.cli.devsecrets import NATS_DEV_PASSWORD, NATS_SERVICES, nats_password_variable

    child = dict(env)
    own_user = child.pop(f"{service.upper()}_NATS_USER", None)
    own_password = child.pop(nats_password_variable(service), None)
    for name in NATS_SERVICES:
        child.pop(f"{name.upper()}_NATS_USER", None)
        child.pop(nats_password_variable(name), None)
    child.pop(NATS_DEV_PASSWORD, None)
    if own_user and own_password:
        child["NATS_USER"], child["NATS_PASSWORD"] = own_user, own_password
    return child


async def supervise(
    planned: Sequence[Planned],
    env: dict[str, str],
    out: Output,
    startup_timeout: float,
    on_ready: OnReady | None = None,
    banner_lines: Sequence[str] = (),
) -> int:
    stop = asyncio.Event()
    force = asyncio.Event()
    _on_stop_signals(stop, force, out)
    nats: Child | None = None
    children: list[Child] = []
    failure: str | None = None
    try:
        if not env.get("NATS_URL"):
            nats, port = await start_embedded_nats(env, out)
            await await_embedded_nats(nats, port, env, out)
        else:
            out.say(f"using NATS at {env['NATS_URL']}")
        for item in planned:
            argv = [sys.executable, "-m", "services", "serve", item.spec.name]
            children.append(
                await start_child(item.spec.name, argv, child_environment(env, item.spec.name), out)
            )
        failure = await _watch(
            planned,
            [*children, *([nats] if nats else [])],
            stop,
            out,
            startup_timeout,
            on_ready,
            banner_lines,
        )
    except CommandError as exc:
        failure = str(exc)
    finally:
        if failure:
            out.say(f"{failure}; stopping everything")
        if children:
            await stop_children(children, out, force)
        if nats is not None:
            await stop_children([nats], out, force)
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    if failure:
        out.say("stopped after a failure")
        return 1
    out.say("stopped")
    return 0


async def supervise_demo(
    planned: Sequence[Planned],
    env: dict[str, str],
    out: Output,
    startup_timeout: float,
    on_ready: OnReady | None = None,
) -> int:
    """``supervise`` with the demo's SMS gateway and SMTP sink running beside it, feedback pointed at them."""
    from services.cli.demosinks import point_feedback_at, running_sinks

    def say(text: str, name: str) -> None:
        out.say(text, name)

    async with running_sinks(say) as sinks:
        lines = sinks.banner_lines() if point_feedback_at(sinks, env, say) else []
        return await supervise(planned, env, out, startup_timeout, on_ready, banner_lines=lines)
