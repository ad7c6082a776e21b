"""Child processes of a dev run and their output: each line whole, labelled, on our one stdout."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.registry import SERVICES

STOP_TIMEOUT_SECONDS = 10.0
# A JSON log line with a long traceback easily passes asyncio's 64 KiB default.
PIPE_LINE_LIMIT = 4 * 1024 * 1024

COLOURS = {"intake": "36", "routing": "35", "verification": "33", "feedback": "32", "nats": "34", "dev": "1"}
LABEL_WIDTH = max(len(name) for name in [*SERVICES, "nats", "dev"])


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
