"""``backup DIR`` and ``restore DIR``: the four databases, the evidence, and a manifest of hashes.

A backup is taken while the services run. The databases are copied consumers first
(feedback, verification, routing, then intake; matters flow the other way), each as of one
read transaction, opened one right after the other: whatever a consumer's copy has applied
of a matter, the copy of the service it came from has too. What a consumer's copy is missing
(an event published but not yet applied when it was copied) the restore makes good: it marks
the outbox rows published since the backup's replay horizon as unpublished and deletes the
event stream (the services create it again), and the relays publish those rows once more;
the consumers' inbox drops the ones they had applied. A restore is done with the services
stopped.

``DIR/manifest.json`` lists every file with its size and SHA-256, each database's alembic
revisions, the evidence and the horizon; ``restore`` refuses a backup whose files differ.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from services.cli import backup_bus as bus
from services.cli.backup_databases import (
    Database,
    alembic_revisions,
    dump_postgres,
    has_data,
    private_dir,
    private_file,
    republish_since,
    restore_postgres,
    restore_sqlite,
    snapshot_sqlite,
)
from services.cli.common import CommandError, display_url, load_service_settings
from services.registry import SERVICES
from shared.db import utcnow

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.js import JetStreamContext

    from shared.settings import ServiceSettings

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
DEFAULT_TIMEOUT_SECONDS = 300.0
# Consumers before producers: see the module docstring.
BACKUP_ORDER = ("feedback", "verification", "routing", "intake")

Report = Callable[[str], None]


def _databases(settings: Mapping[str, ServiceSettings]) -> list[Database]:
    missing = [name for name in BACKUP_ORDER if name not in settings or not settings[name].database_url]
    if missing:
        raise CommandError(f"no database URL for {', '.join(missing)}")
    return [Database(service=name, url=settings[name].database_url) for name in BACKUP_ORDER]


def _evidence_settings(settings: Mapping[str, ServiceSettings]) -> tuple[str | None, Path]:
    verification = settings["verification"]
    bucket = getattr(verification, "evidence_bucket", None)
    return (str(bucket) if bucket else None), Path(getattr(verification, "evidence_dir", "var/evidence"))


def _new_folder(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        raise CommandError(f"{directory} is not empty; back up into a new folder")
    private_dir(directory)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _describe_files(directory: Path) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            files[path.relative_to(directory).as_posix()] = {
                "size": path.stat().st_size,
                "sha256": sha256_of(path),
            }
    return files


async def _connect(
    url: str, *, bound: float, report: Report
) -> tuple[NatsClient | None, JetStreamContext | None]:
    try:
        client, js = await bus.connect_bus(url, bound=bound)
    except bus.BusUnavailable as exc:
        report(f"warning: {exc}")
        return None, None
    return client, js


async def backup(
    *, directory: Path, settings: Mapping[str, ServiceSettings], bound: float, report: Report
) -> dict[str, Any]:
    """Back the system up into ``directory`` (new or empty) while it runs; returns the manifest."""
    await asyncio.to_thread(_new_folder, directory)
    databases = _databases(settings)
    common = settings["intake"]
    started = utcnow()
    client, js = await _connect(common.nats_url, bound=bound, report=report)
    try:
        # Read before the copies: an event acknowledged by then is in its consumer's copy.
        replay_from, how = await bus.replay_horizon(js, common.nats_stream, started=started, bound=bound)
        services = await _backup_databases(databases, directory, bound=bound, report=report)
        bucket, legacy_dir = _evidence_settings(settings)
        evidence = await bus.backup_evidence(
            js, bucket=bucket, legacy_dir=legacy_dir, directory=directory, bound=bound
        )
        report(
            f"evidence: {evidence['objects']} objects, {evidence['legacy_files']} files ({evidence['note']})"
        )
    finally:
        if client is not None:
            await bus.close_bus(client)
    manifest = {
        "format": MANIFEST_FORMAT,
        "started_at": started.isoformat(),
        "finished_at": utcnow().isoformat(),
        "services": services,
        "evidence": evidence,
        "bus": {"stream": common.nats_stream, "replay_from": replay_from.isoformat(), "horizon": how},
        "files": await asyncio.to_thread(_describe_files, directory),
    }
    with private_file(directory / MANIFEST_NAME) as out:
        out.write(json.dumps(manifest, ensure_ascii=False, indent=2).encode())
    report(f"backup complete: {directory / MANIFEST_NAME}")
    return manifest


async def _backup_databases(
    databases: list[Database], directory: Path, *, bound: float, report: Report
) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = {}
    for database in databases:
        services[database.service] = {
            "backend": database.backend,
            "file": database.file_name,
            "database": display_url(database.url),
        }
    sqlite = [database for database in databases if database.backend == "sqlite"]
    if sqlite:
        await asyncio.to_thread(snapshot_sqlite, sqlite, directory)
    for database in databases:
        if database.backend == "sqlite":
            revisions = await alembic_revisions(database, bound=bound, path=directory / database.file_name)
        else:
            # Read before the dump: migrations do not run during a backup, so they are the dump's.
            revisions = await alembic_revisions(database, bound=bound)
            await asyncio.to_thread(dump_postgres, database, directory, bound=bound)
        services[database.service]["alembic_revisions"] = revisions
        report(f"{database.service}: {database.file_name} ({', '.join(revisions) or 'no alembic revision'})")
    return services


def verify_backup(directory: Path) -> dict[str, Any]:
    """The manifest, once every file it lists has its size and SHA-256; else CommandError."""
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommandError(f"{directory / MANIFEST_NAME} not found: not a backup") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f"{directory / MANIFEST_NAME} is damaged: {exc}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise CommandError(f"backup format {manifest.get('format')!r}; this version reads {MANIFEST_FORMAT}")
    problems = []
    for name, expected in manifest["files"].items():
        path = _inside(directory, name)
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != expected["size"] or sha256_of(path) != expected["sha256"]:
            problems.append(f"{name}: content differs from the manifest")
    needed = [entry["file"] for entry in manifest["services"].values()] + [bus.EVIDENCE_INDEX]
    problems += [f"{name}: not in the manifest" for name in needed if name not in manifest["files"]]
    if problems:
        raise CommandError("the backup is damaged, nothing was restored:\n  " + "\n  ".join(problems))
    return manifest


def _inside(directory: Path, relative: str) -> Path:
    """``directory/relative``, refusing a name that would lead out of the backup."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise CommandError(f"the backup names a file outside itself: {relative!r}")
    return directory.joinpath(*pure.parts)


async def restore(
    *,
    directory: Path,
    settings: Mapping[str, ServiceSettings],
    bound: float,
    report: Report,
    force: bool = False,
    keep_stream: bool = False,
) -> None:
    """Restore a backup into the databases and the bus the settings name; services stopped."""
    manifest = await asyncio.to_thread(verify_backup, directory)
    report(f"backup of {manifest['started_at']}: {len(manifest['files'])} files, hashes match")
    databases = _databases(settings)
    for database in databases:
        if manifest["services"][database.service]["backend"] != database.backend:
            raise CommandError(
                f"{database.service}: the backup is of a {manifest['services'][database.service]['backend']} "
                f"database, the settings name a {database.backend} one"
            )
        if not force and await has_data(database, bound=bound):
            raise CommandError(
                f"{database.service}: {display_url(database.url)} already holds data; "
                "restore into a fresh database or pass --force to replace it"
            )
    index = bus.read_evidence_index(directory)
    common = settings["intake"]
    client, js = await _connect(common.nats_url, bound=bound, report=report)
    try:
        if js is None and (index["objects"] or not keep_stream):
            raise CommandError(
                "NATS is needed to reset the event stream and put the evidence back; start it, "
                "or pass --keep-stream if the stream is new (only when the backup has no evidence objects)"
            )
        await _restore_databases(databases, manifest, directory, bound=bound, report=report)
        if js is not None and not keep_stream:
            deleted = await bus.delete_stream(js, manifest["bus"]["stream"], bound=bound)
            report(f"event stream {manifest['bus']['stream']} {'deleted' if deleted else 'was absent'}")
        await _restore_evidence(js, index, directory, settings, bound=bound, report=report)
    finally:
        if client is not None:
            await bus.close_bus(client)
    report("restore complete; start the services: the relays publish the marked outbox rows again")


async def _restore_databases(
    databases: list[Database], manifest: dict[str, Any], directory: Path, *, bound: float, report: Report
) -> None:
    replay_from = datetime.fromisoformat(manifest["bus"]["replay_from"])
    for database in databases:
        source = _inside(directory, manifest["services"][database.service]["file"])
        if database.backend == "sqlite":
            await asyncio.to_thread(restore_sqlite, database, source)
        else:
            await asyncio.to_thread(restore_postgres, database, source, bound=bound)
        marked = await republish_since(database, replay_from, bound=bound)
        report(
            f"{database.service}: restored into {display_url(database.url)}; "
            f"{marked} outbox rows since {replay_from.isoformat()} to publish again"
        )


async def _restore_evidence(
    js: JetStreamContext | None,
    index: dict[str, Any],
    directory: Path,
    settings: Mapping[str, ServiceSettings],
    *,
    bound: float,
    report: Report,
) -> None:
    bucket, legacy_dir = _evidence_settings(settings)
    for entry in [*index["objects"], *index["files"]]:
        _inside(directory, entry["file"])
    for entry in index["files"]:
        _inside(legacy_dir, entry["path"])
    if index["objects"]:
        target = bucket or index["bucket"]
        assert js is not None  # restore() refuses to start without NATS when there are objects
        written = await bus.upload_objects(
            js,
            target,
            index["objects"],
            directory,
            replicas=settings["verification"].nats_replicas,
            bound=bound,
        )
        report(f"evidence: {written} of {len(index['objects'])} objects put into bucket {target}")
    if index["files"]:
        copied = await asyncio.to_thread(bus.restore_legacy_files, index["files"], directory, legacy_dir)
        report(f"evidence: {copied} of {len(index['files'])} files copied into {legacy_dir}")


def _load_all() -> dict[str, ServiceSettings]:
    return {name: load_service_settings(spec) for name, spec in SERVICES.items()}


def _say(line: str) -> None:
    print(line, flush=True)


def cmd_backup(args: argparse.Namespace) -> int:
    os.umask(0o077)
    asyncio.run(backup(directory=Path(args.directory), settings=_load_all(), bound=args.timeout, report=_say))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    os.umask(0o077)
    asyncio.run(
        restore(
            directory=Path(args.directory),
            settings=_load_all(),
            bound=args.timeout,
            report=_say,
            force=args.force,
            keep_stream=args.keep_stream,
        )
    )
    return 0


def add_commands(commands: Any) -> None:
    """Register ``backup`` and ``restore`` on the command line's subparsers."""
    backup_parser = commands.add_parser("backup", help="back up the databases and the evidence into DIR")
    backup_parser.add_argument("directory", metavar="DIR", help="a new or empty folder")
    restore_parser = commands.add_parser("restore", help="restore a backup from DIR (services stopped)")
    restore_parser.add_argument("directory", metavar="DIR")
    restore_parser.add_argument("--force", action="store_true", help="replace databases that hold data")
    restore_parser.add_argument(
        "--keep-stream", action="store_true", help="do not delete the event stream (it is new and empty)"
    )
    for parser in (backup_parser, restore_parser):
        parser.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT_SECONDS,
            help="bound on each database tool, NATS request and transfer, in seconds (default: %(default)s)",
        )
    backup_parser.set_defaults(handler=cmd_backup)
    restore_parser.set_defaults(handler=cmd_restore)
