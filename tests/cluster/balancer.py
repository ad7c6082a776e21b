"""A TCP load balancer in front of a service's instances, as a bureau puts one in front of them.

Each new connection goes to the next instance in turn; an instance that refuses the connection
(killed) is skipped for that connection, so clients and the services' calls to each other keep
working while any one instance is alive.  A connection already open to an instance that dies is
cut, and the client's retry gets a live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

CONNECT_TIMEOUT_SECONDS = 2.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class Balancer:
    """Listens on 127.0.0.1:``port`` and forwards to ``backends`` (ports on 127.0.0.1)."""

    def __init__(self, *, port: int, backends: list[int]) -> None:
        self.port = port
        self.backends = backends
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.refused = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        first = next(self._turn)
        for offset in range(len(self.backends)):
            port = self.backends[(first + offset) % len(self.backends)]
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), timeout=CONNECT_TIMEOUT_SECONDS
                )
            except (OSError, TimeoutError):
                self.refused += 1
        return None

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            backend = await self._connect()
            if backend is None:
                client_writer.close()
                return
            backend_reader, backend_writer = backend
            await asyncio.gather(_pipe(client_reader, backend_writer), _pipe(backend_reader, client_writer))
        except asyncio.CancelledError:
            # stop() ends open connections; the server's own callback must not see the cancel.
            client_writer.close()
        finally:
            self._connections.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)
            self._server = None
