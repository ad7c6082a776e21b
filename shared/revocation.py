"""Revoked tokens, known to every service: a NATS KV bucket intake writes and every service watches.

Keys: ``t.<jti>`` for one token (sign-out; the value is the token's expiry) and ``u.<hex of the
username>`` for every token of a person issued up to a moment (deactivation; the value is that
moment).  Entries live as long as the longest access token (the bucket's TTL), so the list stays
bounded in time; each service keeps it in memory, pruned as entries expire.  While NATS is away
a service keeps its last known list, says so in the log, and catches up from the bucket when it
is back; intake keeps the revocations it could not write and writes them then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from shared.logging import get_logger
from shared.worker import BackgroundWorker

log = get_logger(__name__)

BUCKET = "revoked-tokens"
# Clocks of the services differ a little: a revocation outlives the token it names by this much.
LEEWAY_SECONDS = 120


def token_key(token_id: str) -> str:
    return f"t.{token_id}"


def user_key(username: str) -> str:
    return f"u.{username.encode().hex()}"


class RevocationList:
    """The revocations a service knows, in memory; ``is_revoked`` is a dictionary look-up."""

    def __init__(self, *, ttl_seconds: float) -> None:
        self.ttl_seconds = ttl_seconds
        self._tokens: dict[str, float] = {}  # jti -> when the entry may be forgotten
        self._users: dict[str, tuple[int, float]] = {}  # username -> (revoked up to, forget at)
        self._pending: dict[str, str] = {}  # written here, not yet in the bucket
        self.synced = False  # the bucket's entries were read at least once

    def is_revoked(self, *, token_id: str, username: str, issued_at: int) -> bool:
        if token_id in self._tokens:
            return True
        user = self._users.get(username)
        return user is not None and issued_at <= user[0]

    def apply(self, key: str, value: bytes | None) -> None:
        """One entry of the bucket (a put; a deleted or purged entry is ``value`` None)."""
        kind, _, name = key.partition(".")
        now = time.time()
        try:
            number = int(float(value.decode())) if value else None
        except ValueError:
            log.warning("malformed revocation entry ignored", key=key)
            return
        if kind == "t":
            if number is None:
                self._tokens.pop(name, None)
            else:
                self._tokens[name] = max(number + LEEWAY_SECONDS, now + 1)
        elif kind == "u":
            username = bytes.fromhex(name).decode()
            if number is None:
                self._users.pop(username, None)
            else:
                self._users[username] = (number, number + self.ttl_seconds)
        self._prune(now)

    def revoke_token(self, *, token_id: str, expires_at: int) -> str:
        key, value = token_key(token_id), str(expires_at)
        self.apply(key, value.encode())
        self._pending[key] = value
        return key

    def revoke_user(self, *, username: str, up_to: int | None = None) -> str:
        key, value = user_key(username), str(int(up_to if up_to is not None else time.time()))
        self.apply(key, value.encode())
        self._pending[key] = value
        return key

    def pending(self) -> dict[str, str]:
        return dict(self._pending)

    def written(self, key: str) -> None:
        self._pending.pop(key, None)

    def _prune(self, now: float) -> None:
        for jti in [jti for jti, until in self._tokens.items() if until < now]:
            del self._tokens[jti]
        for name in [name for name, (_, until) in self._users.items() if until < now]:
            del self._users[name]


async def bucket(js: JetStreamContext, *, ttl_seconds: float, replicas: int = 1) -> KeyValue:
    """The bucket, made by whichever service comes first (the same configuration from each)."""
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(bucket=BUCKET, history=1, ttl=ttl_seconds, replicas=replicas)
        )


async def publish(revocations: RevocationList, js: JetStreamContext | None, *, replicas: int = 1) -> None:
    """Write what this service revoked into the bucket; what fails stays pending for the watcher."""
    pending = revocations.pending()
    if not pending:
        return
    if js is None:
        log.error("revocations not yet shared: NATS is not connected; will retry", keys=len(pending))
        return
    try:
        kv = await bucket(js, ttl_seconds=revocations.ttl_seconds, replicas=replicas)
        for key, value in pending.items():
            await kv.put(key, value.encode())
            revocations.written(key)
    except Exception as exc:
        log.error("revocations not yet shared; will retry", keys=len(pending), error=repr(exc))


class RevocationWatch:
    """Keeps ``revocations`` in step with the bucket; a background worker of every service."""

    UPDATE_WAIT_SECONDS = 2.0

    def __init__(
        self,
        *,
        revocations: RevocationList,
        jetstream: Callable[[], JetStreamContext | None],
        replicas: int = 1,
    ) -> None:
        self.revocations = revocations
        self.jetstream = jetstream
        self.replicas = replicas
        self.kv: KeyValue | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._said_offline = False
        self.worker = BackgroundWorker(
            name="revocation-watch",
            step=self.step,
            idle_seconds=0.5,
            step_timeout=15.0,
            backoff_max=5.0,
            # Its step waits for the bucket's next update: nothing to finish, so a stop is immediate.
            finish_on_stop=False,
        )

    async def step(self) -> bool:
        js = self.jetstream()
        if js is None:
            # A new watcher once NATS is back reads the whole bucket again: nothing is missed.
            self._forget_watcher()
            if not self._said_offline:
                log.warning("revocation list: NATS not connected; using the last known list")
                self._said_offline = True
            return False
        try:
            if self._watcher is None:
                self.kv = await bucket(js, ttl_seconds=self.revocations.ttl_seconds, replicas=self.replicas)
                self._watcher = await self.kv.watchall()
                if self._said_offline:
                    log.info("revocation list: watching the bucket again")
                self._said_offline = False
            await publish(self.revocations, js, replicas=self.replicas)
            return await self._next_update(self._watcher)
        except Exception:
            self._forget_watcher()
            if not self._said_offline:
                log.warning("revocation list: bucket unreachable; using the last known list", exc_info=True)
                self._said_offline = True
            raise

    async def _next_update(self, watcher: KeyValue.KeyWatcher) -> bool:
        try:
            entry = await watcher.updates(timeout=self.UPDATE_WAIT_SECONDS)  # type: ignore[no-untyped-call]
        except (TimeoutError, NatsTimeoutError):
            return True  # nothing new: wait again at once (the wait itself is the idle time)
        if entry is None:
            self.revocations.synced = True  # the initial values are all read
            return True
        deleted = entry.operation in ("DEL", "PURGE")
        self.revocations.apply(entry.key, None if deleted else entry.value)
        return True

    def _forget_watcher(self) -> None:
        watcher, self._watcher, self.kv = self._watcher, None, None
        if watcher is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().create_task(watcher.stop())  # type: ignore[no-untyped-call]
