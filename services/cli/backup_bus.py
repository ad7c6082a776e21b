"""The bus's side of ``backup`` and ``restore``: the replay horizon, the event stream, the evidence.

- The replay horizon: the time of the oldest event some durable consumer had not yet
  acknowledged when the backup began. Outbox rows published since then may be missing from
  their consumers' copies, so a restore publishes them again (the inbox drops repeats).
- The event stream is deleted by a restore: what it holds after the backup describes changes
  the restored databases no longer have, and its duplicate window would drop the republished
  rows. The services create it again when they start.
- Evidence: every object of the bucket (data and metadata), and the files of the old evidence
  folder, which the service still reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.object_store import ObjectStore

from services.cli.backup_databases import private_dir, private_file
from services.cli.common import CommandError

# Stream timestamps come from the NATS server's clock, published_at from the services' clocks.
CLOCK_MARGIN = timedelta(minutes=5)
# When the consumers' positions cannot be read, republish this far back (the inbox makes it safe).
UNMEASURED_LOOKBACK = timedelta(hours=24)
# A transfer may take its size at this rate on top of the per-request bound.
MIN_BYTES_PER_SECOND = 1024 * 1024
EVIDENCE_INDEX = "evidence/index.json"
OBJECTS_DIR = "evidence/objects"
FILES_DIR = "evidence/files"
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")


class BusUnavailable(RuntimeError):
    """NATS did not answer."""


async def connect_bus(url: str, *, bound: float) -> tuple[NatsClient, JetStreamContext]:
    client = NatsClient()
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        # Kept for the message below; nats-py would print each one with its traceback.
        errors.append(exc)

    try:
        await asyncio.wait_for(
            client.connect(
                servers=url.split(","),
                name="backup",
                allow_reconnect=False,
                # One more try per server, then NoServersError (0 would mean "for ever").
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,  # type: ignore[arg-type]  # seconds for asyncio.sleep, typed int
                connect_timeout=max(1, int(bound)),
                error_cb=on_error,
            ),
            bound,
        )
    except Exception as exc:
        await close_bus(client)
        cause = errors[-1] if errors else exc
        raise BusUnavailable(f"NATS at {url} unreachable: {cause!r}") from None
    return client, client.jetstream(timeout=bound)


async def close_bus(client: NatsClient) -> None:
    if client.is_connected:
        # The command's outcome is already decided; a slow close only must not hang it.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)


async def oldest_unacknowledged(js: JetStreamContext, stream: str, *, bound: float) -> datetime | None:
    """When the oldest event not acknowledged by every durable consumer was stored; None if none."""
    try:
        consumers = await asyncio.wait_for(js.consumers_info(stream), bound)
    except NotFoundError:
        return None
    oldest: datetime | None = None
    for consumer in consumers:
        floor = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
        try:
            # The first message after the floor on any subject: at or before this consumer's first
            # unacknowledged one, so the horizon errs on the early, safe side.
            message = await asyncio.wait_for(js.get_msg(stream, seq=floor + 1, subject=">", next=True), bound)
        except NotFoundError:
            continue
        if message.time is not None and (oldest is None or message.time < oldest):
            oldest = message.time
    return oldest


async def replay_horizon(
    js: JetStreamContext | None, stream: str, *, started: datetime, bound: float
) -> tuple[datetime, str]:
    """From when a restore must publish outbox rows again, and how that was decided."""
    if js is None:
        return started - UNMEASURED_LOOKBACK, "NATS unreachable: consumers' positions unknown"
    try:
        oldest = await oldest_unacknowledged(js, stream, bound=bound)
    except Exception as exc:
        return started - UNMEASURED_LOOKBACK, f"consumers' positions unreadable: {exc!r}"
    if oldest is None:
        return started - CLOCK_MARGIN, "every consumer had acknowledged everything"
    return min(oldest, started) - CLOCK_MARGIN, "oldest unacknowledged event"


async def delete_stream(js: JetStreamContext, stream: str, *, bound: float) -> bool:
    try:
        return bool(await asyncio.wait_for(js.delete_stream(stream), bound))
    except NotFoundError:
        return False


# Evidence -----------------------------------------------------------------------------------


def _file_name(name: str, taken: set[str]) -> str:
    candidate = name if _PLAIN_NAME.match(name) else "object-" + hashlib.sha256(name.encode()).hexdigest()
    while candidate in taken:
        candidate += "_"
    taken.add(candidate)
    return candidate


def _transfer_bound(bound: float, size: int | None) -> float:
    return bound + (size or 0) / MIN_BYTES_PER_SECOND


async def _open_bucket(js: JetStreamContext, bucket: str, *, bound: float) -> ObjectStore | None:
    try:
        return await asyncio.wait_for(js.object_store(bucket), bound)
    except BucketNotFoundError:
        return None


async def download_objects(store: ObjectStore, directory: Path, *, bound: float) -> list[dict[str, Any]]:
    """Every live object of the bucket into ``evidence/objects``; returns their metadata."""
    try:
        infos = await asyncio.wait_for(store.list(ignore_deletes=True), bound)
    except NotFoundError:
        return []
    target = private_dir(directory / OBJECTS_DIR)
    entries: list[dict[str, Any]] = []
    taken: set[str] = set()
    for info in infos:
        if info.deleted or info.is_link():
            continue
        file_name = _file_name(info.name, taken)
        with private_file(target / file_name) as out:
            # nats-py checks the object's SHA-256 digest as it reads (DigestMismatchError).
            await asyncio.wait_for(store.get(info.name, writeinto=out), _transfer_bound(bound, info.size))
        entries.append(
            {
                "file": f"{OBJECTS_DIR}/{file_name}",
                "name": info.name,
                "description": info.description,
                "headers": info.headers,
                "size": info.size or 0,
                "digest": info.digest,
                "mtime": info.mtime,
            }
        )
    return entries


def copy_legacy_files(source: Path, directory: Path) -> list[dict[str, Any]]:
    """The old evidence folder's files (each named by its SHA-256) into ``evidence/files``."""
    if not source.is_dir():
        return []
    entries: list[dict[str, Any]] = []
    for path in sorted(source.rglob("*")):
        # ``.part``: an upload that was still being written.
        if not path.is_file() or path.suffix == ".part":
            continue
        relative = path.relative_to(source)
        target = directory / FILES_DIR / relative
        private_dir(target.parent)
        with path.open("rb") as original, private_file(target) as copy:
            shutil.copyfileobj(original, copy)
        entries.append({"file": f"{FILES_DIR}/{relative.as_posix()}", "path": relative.as_posix()})
    return entries


async def backup_evidence(
    js: JetStreamContext | None, *, bucket: str | None, legacy_dir: Path, directory: Path, bound: float
) -> dict[str, Any]:
    """The bucket's objects and the old folder's files; the manifest's ``evidence`` section."""
    store = await _open_bucket(js, bucket, bound=bound) if js is not None and bucket else None
    if store is not None:
        objects, note = await download_objects(store, directory, bound=bound), f"bucket {bucket}"
    else:
        objects = []
        why = "no bucket configured" if not bucket else "NATS unreachable" if js is None else "bucket missing"
        note = f"{why}: only the evidence folder {legacy_dir} was backed up"
    files = await asyncio.to_thread(copy_legacy_files, legacy_dir, directory)
    index = {"bucket": bucket if store is not None else None, "objects": objects, "files": files}
    private_dir(directory / "evidence")
    with private_file(directory / EVIDENCE_INDEX) as out:
        out.write(json.dumps(index, ensure_ascii=False, indent=2).encode())
    return {
        "bucket": index["bucket"],
        "objects": len(objects),
        "legacy_dir": str(legacy_dir),
        "legacy_files": len(files),
        "note": note,
    }


async def upload_objects(
    js: JetStreamContext,
    bucket: str,
    objects: list[dict[str, Any]],
    directory: Path,
    *,
    replicas: int,
    bound: float,
) -> int:
    """Put the backed-up objects back; an object already there with the same digest is kept."""
    store = await _open_bucket(js, bucket, bound=bound)
    if store is None:
        config = api.ObjectStoreConfig(storage=api.StorageType.FILE, replicas=replicas)
        store = await asyncio.wait_for(js.create_object_store(bucket, config=config), bound)
    try:
        present = {
            info.name: info.digest for info in await asyncio.wait_for(store.list(ignore_deletes=True), bound)
        }
    except NotFoundError:
        present = {}
    written = 0
    for entry in objects:
        if present.get(entry["name"]) == entry["digest"]:
            continue
        meta = api.ObjectMeta(
            name=entry["name"], description=entry.get("description"), headers=entry.get("headers")
        )
        with (directory / entry["file"]).open("rb") as data:
            info = await asyncio.wait_for(
                store.put(entry["name"], data, meta=meta), _transfer_bound(bound, entry["size"])
            )
        if info.digest != entry["digest"]:
            raise CommandError(
                f"evidence object {entry['name']}: stored digest {info.digest}, expected {entry['digest']}"
            )
        written += 1
    return written


def restore_legacy_files(files: list[dict[str, Any]], directory: Path, legacy_dir: Path) -> int:
    copied = 0
    for entry in files:
        target = legacy_dir / entry["path"]
        if target.exists():
            continue
        private_dir(target.parent)
        with (directory / entry["file"]).open("rb") as original, private_file(target) as copy:
            shutil.copyfileobj(original, copy)
        copied += 1
    return copied


def read_evidence_index(directory: Path) -> dict[str, Any]:
    index: dict[str, Any] = json.loads((directory / EVIDENCE_INDEX).read_text(encoding="utf-8"))
    return index
