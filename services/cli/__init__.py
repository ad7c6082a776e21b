"""Command line: ``python -m services <command>``.

``migrate`` and ``serve`` are what the production containers run; ``dev`` is
what ``make run`` runs: one terminal, an embedded NATS server, all four
services, and everything they keep under ``var/`` so that a second run finds
the data of the first.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from services.cli.audit import add_commands as add_audit_commands
from services.cli.backup import add_commands as add_backup_commands
from services.cli.commands import cmd_create_user, cmd_dev, cmd_migrate, cmd_serve
from services.cli.common import CommandError
from services.registry import SERVICES

ROLES = ("operator", "inspector", "supervisor", "deputy", "leader")
DEFAULT_STARTUP_TIMEOUT_SECONDS = 120.0


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
    create_user.add_argument(
        "--county", help="a leader's county (or city) bureau: its area code in the units data, e.g. 411624"
    )
    create_user.set_defaults(handler=cmd_create_user)

    dev = commands.add_parser("dev", help="run everything locally in one terminal (make run)")
    dev.add_argument(
        "--startup-timeout",
        type=float,
        default=DEFAULT_STARTUP_TIMEOUT_SECONDS,
        help="seconds to wait for every /healthz (default: %(default)s)",
    )
    dev.set_defaults(handler=cmd_dev)

    add_backup_commands(commands)
    add_audit_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
