"""Three nats-server processes from ``deploy/nats-cluster/node-{1,2,3}.conf``, on one machine.

The configuration files are the ones docs/operations.md shows.  Only what must differ on one
machine is changed: the addresses (command-line flags, which take precedence over the file)
and the JetStream store directory (the file's ``store_dir`` line: nats-server refuses ``-sd``
next to a ``store_dir`` in the file).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.chaos.processes import kill_now, port_open, spawn, wait_until
from tests.support import free_port, nats_server_binary

CONFIG_DIR = Path(__file__).resolve().parents[2] / "deploy" / "nats-cluster"
STORE_LINE = "store_dir: /data/jetstream"
NODES = 3


@dataclass
class Node:
    index: int
    port: int
    cluster_port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"supervision-nats-{self.index}"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / f"nats-{self.index}.log"

    def config(self) -> Path:
        """The deployed file with the store directory moved under this run's folder."""
        text = (CONFIG_DIR / f"node-{self.index}.conf").read_text(encoding="utf-8")
        if STORE_LINE not in text:
            raise RuntimeError(f"node-{self.index}.conf no longer has {STORE_LINE!r}; update tests/cluster")
        path = self.root / f"node-{self.index}.conf"
        store = self.root / f"store-{self.index}"
        path.write_text(text.replace(STORE_LINE, f'store_dir: "{store}"'), encoding="utf-8")
        return path


class NatsCluster:
    def __init__(self, root: Path) -> None:
        self.nodes = [
            Node(index=i, port=free_port(), cluster_port=free_port(), root=root) for i in range(1, NODES + 1)
        ]

    @property
    def url(self) -> str:
        """What the services get as NATS_URL: every node, comma-separated."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    async def start(self) -> None:
        routes = ",".join(f"nats://127.0.0.1:{node.cluster_port}" for node in self.nodes)
        for node in self.nodes:
            argv = [nats_server_binary(), "-c", str(node.config()), "-a", "127.0.0.1", "-p", str(node.port)]
            argv += ["-m", "0", "--cluster", f"nats://127.0.0.1:{node.cluster_port}", "--routes", routes]
            node.process = spawn(argv, log_path=node.log_path)
        for node in self.nodes:
            if not await wait_until(functools.partial(port_open, node.port), timeout=20):
                raise RuntimeError(f"{node.name} did not listen; see {node.log_path}")
        await self.wait_for_jetstream(timeout=30)

    async def wait_for_jetstream(self, *, timeout: float) -> None:
        """Until the JetStream meta group has a leader (a stream can be created)."""
        import nats

        deadline = asyncio.get_running_loop().time() + timeout
        last: str = ""
        while asyncio.get_running_loop().time() < deadline:
            try:
                nc = await nats.connect(servers=[n.url for n in self.nodes], connect_timeout=2)
            except Exception as exc:
                last = repr(exc)
            else:
                try:
                    info = await nc.jetstream(timeout=3).account_info()
                    if info is not None:
                        return
                except Exception as exc:
                    last = repr(exc)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(nc.close(), timeout=3)
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the NATS cluster did not elect a JetStream leader: {last}")

    def kill(self, node: Node) -> None:
        if node.process is not None:
            kill_now(node.process)
            node.process = None

    def kill_all(self) -> None:
        for node in self.nodes:
            self.kill(node)
