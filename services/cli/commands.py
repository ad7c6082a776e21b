"""The commands: ``migrate`` and ``serve`` (what the production containers run), ``create-user``, ``dev``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from services.cli.common import CommandError, display_url, load_service_settings, service_port
from services.cli.devrun import Planned, seed_demo, supervise, supervise_demo
from services.cli.devsecrets import ensure_dev_secrets
from services.cli.supervisor import Output
from services.registry import SERVICES, ServiceSpec

if TYPE_CHECKING:
    from shared.settings import ServiceSettings


def migrate_one(spec: ServiceSpec, settings: ServiceSettings, report: Callable[[str], None]) -> None:
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
    report(f"{spec.name}: migrated to head ({display_url(url)})")


def cmd_migrate(args: argparse.Namespace) -> int:
    names = list(SERVICES) if args.service == "all" else [args.service]
    # Load every service's settings before touching any database, so a configuration mistake
    # in the last one does not leave the first ones migrated and the rest not.
    loaded = [(SERVICES[name], load_service_settings(SERVICES[name])) for name in names]
    for spec, settings in loaded:
        migrate_one(spec, settings, lambda line: print(line, flush=True))
    return 0


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
            county_code=args.county,
        )
    )
    print(f"user {args.username} ({args.role}) created", flush=True)
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
            migrate_one(item.spec, item.settings, out.say)
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

    if demo:
        return asyncio.run(supervise_demo(planned, env, out, args.startup_timeout, on_ready))
    return asyncio.run(supervise(planned, env, out, args.startup_timeout))
