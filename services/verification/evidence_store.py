"""Evidence files in the NATS JetStream object store, checked against their SHA-256 on every read.

Several verification instances on several machines must see the same files, and the JetStream
cluster already replicates what it keeps; so an uploaded file is one object in the bucket
``EVIDENCE_BUCKET`` (created on first use, ``NATS_REPLICAS`` replicas), named by its evidence id,
its headers naming the case, the task and the content type, its description the file name.

- Upload: the file is hashed and counted while its chunks go to the store, and the object's
  metadata is written last, so an object is visible only when whole.  A failure, a timeout or a
  cancelled request removes what was sent, and the caller writes the database row (with the
  SHA-256, as before) only once the store has confirmed the object.  With NATS unreachable an
  upload is refused with 503 and leaves nothing behind.
- Read: the object is copied into an anonymous temporary file while hashed, and handed out only
  when its digest and size match the database row.  A mismatch is logged at error level and
  refused with 502 ("证据文件校验失败"): a corrupted file is never served.
- Bounds: each request to the store waits at most ``EVIDENCE_STORE_TIMEOUT_SECONDS``; a whole
  transfer at most that plus its size at ``EVIDENCE_STORE_MIN_BYTES_PER_SECOND``.  Past a bound the
  answer is 503, try again.
- Files stored on disk before this (``EVIDENCE_DIR``, each named by its SHA-256) are still read,
  and checked the same way, when the store has no object for the evidence or cannot be reached: an
  existing installation keeps its files without a migration.  Nothing is written there any more.

The objects are written and read chunk by chunk here rather than with nats-py's
``ObjectStore.put``/``get``: its ``get`` waits on each chunk without a bound and leaves its
subscription behind when cancelled, and a cancelled ``put`` leaves its chunks behind.  The layout is
JetStream's own (chunks on ``$O.<bucket>.C.<nuid>``, the metadata last on ``$O.<bucket>.M.<name>``,
built with nats-py's types), so ``nats object get`` and nats-py's ``get`` read these objects too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, NoReturn, Protocol, TypeVar

import nats.errors
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import MSG_ROLLUP_SUBJECT
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_DEFAULT_CHUNK_SIZE,
    OBJ_DIGEST_TYPE,
    OBJ_META_PRE_TEMPLATE,
    OBJ_STREAM_TEMPLATE,
    ObjectStore,
)
from nats.nuid import NUID

from shared.errors import DomainError, FieldProblems, NotFound
from shared.logging import get_logger

log = get_logger(__name__)

_T = TypeVar("_T")
CHUNK_BYTES = OBJ_DEFAULT_CHUNK_SIZE
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# What an unreachable, paused or refusing NATS raises; anything else is a bug and stays a 500.
_STORE_ERRORS = (nats.errors.Error, TimeoutError, ConnectionError)


class Upload(Protocol):
    """An uploaded file as the web layer hands it over (Starlette's ``UploadFile`` is one)."""

    @property
    def filename(self) -> str | None: ...

    @property
    def content_type(self) -> str | None: ...

    async def read(self, size: int = -1) -> bytes: ...


class EvidenceStoreUnavailable(DomainError):
    """NATS is unreachable or did not answer in time; the person may try again shortly."""

    status_code = 503

    def __init__(self) -> None:
        super().__init__("证据存储暂不可用，请稍后重试", headers={"Retry-After": "5"})


class EvidenceCorrupted(DomainError):
    """The stored bytes are not the ones the database row names; they are not handed out."""

    status_code = 502

    def __init__(self) -> None:
        super().__init__("证据文件校验失败：存储的文件与登记时的 SHA-256 不符，已拒绝提供，请联系系统管理员")


class _Damaged(Exception):
    """An object whose chunks are missing or whose metadata does not describe them."""


@dataclass(frozen=True)
class StoredObject:
    name: str
    sha256: str
    size_bytes: int


class EvidenceStore:
    """One bucket of the object store, with the old evidence folder as a read-only fallback."""

    def __init__(
        self,
        *,
        bucket: str,
        replicas: int,
        timeout_seconds: float,
        min_bytes_per_second: float,
        max_bytes: int,
        legacy_dir: Path,
    ) -> None:
        self.bucket = bucket
        self.replicas = replicas
        self.timeout_seconds = timeout_seconds
        self.min_bytes_per_second = min_bytes_per_second
        self.max_bytes = max_bytes
        self.legacy_dir = legacy_dir
        self._stream = OBJ_STREAM_TEMPLATE.format(bucket=bucket)
        self._bus: Callable[[], JetStreamContext | None] = lambda: None
        self._opened: tuple[JetStreamContext, ObjectStore] | None = None
        self._opening = asyncio.Lock()

    def connect(self, bus: Callable[[], JetStreamContext | None]) -> None:
        """Where to find JetStream: ``bus()`` is None while NATS is not connected."""
        self._bus = bus

    async def put(
        self, *, name: str, upload: Upload, headers: dict[str, str], description: str | None
    ) -> StoredObject:
        """Store ``upload`` whole as object ``name``, or nothing: 503 when the store cannot take it."""
        js = self._connected()
        try:
            await self._bucket(js, create=True)
        except _STORE_ERRORS as exc:
            raise self._unavailable("bucket set-up", name, exc) from exc
        # A fresh subject for the chunks, so a failed attempt's leftovers are never read as ours.
        nuid = NUID().next().decode()
        chunk_subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=nuid)
        try:
            digest, size, chunks = await self._send_chunks(js, chunk_subject, upload)
            info = api.ObjectInfo(
                name=name,
                bucket=self.bucket,
                nuid=nuid,
                size=size,
                chunks=chunks,
                digest=OBJ_DIGEST_TYPE + base64.urlsafe_b64encode(digest.digest()).decode(),
                mtime=datetime.now(UTC).isoformat(),
                description=description,
                headers={key: [value] for key, value in headers.items()},
                options=api.ObjectMetaOptions(max_chunk_size=CHUNK_BYTES),
            )
            await js.publish(
                self._meta_subject(name),
                json.dumps(info.as_dict()).encode(),
                timeout=self.timeout_seconds,
                headers={api.Header.ROLLUP: MSG_ROLLUP_SUBJECT},
            )
        except BaseException as exc:
            # The metadata too: its publish may have reached the server though its ack did not.
            await self._purge(js, chunk_subject, self._meta_subject(name))
            if isinstance(exc, _STORE_ERRORS):
                raise self._unavailable("upload; nothing kept", name, exc) from exc
            raise
        log.info("evidence stored", bucket=self.bucket, object=name, size=size)
        return StoredObject(name=name, sha256=digest.hexdigest(), size_bytes=size)

    async def _send_chunks(
        self, js: JetStreamContext, subject: str, upload: Upload
    ) -> tuple[hashlib._Hash, int, int]:
        digest, size, chunks = hashlib.sha256(), 0, 0
        started = asyncio.get_running_loop().time()
        while chunk := await upload.read(CHUNK_BYTES):
            size += len(chunk)
            if size > self.max_bytes:
                limit = f"文件过大：最大{self.max_bytes // (1024 * 1024)}MB"
                raise FieldProblems([("file", limit, "file too large")], status_code=413)
            if asyncio.get_running_loop().time() - started > self._transfer_bound(size):
                raise TimeoutError(f"evidence upload slower than {self.min_bytes_per_second} bytes/s")
            digest.update(chunk)
            await js.publish(subject, chunk, timeout=self.timeout_seconds)
            chunks += 1
        return digest, size, chunks

    async def discard(self, *, name: str) -> None:
        """Remove object ``name`` (its database row was not written); a failure only leaves it unused."""
        js = self._bus()
        if js is None:
            log.warning("evidence object left unreferenced: NATS is not connected", object=name)
            return
        try:
            store = await self._bucket(js, create=False)
            info = await self._bounded(store.get_info(name)) if store is not None else None
        except (NotFoundError, *_STORE_ERRORS) as exc:
            log.warning("evidence object left unreferenced", object=name, error=repr(exc))
            return
        if info is not None:
            chunks = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=info.nuid)
            await self._purge(js, chunks, self._meta_subject(name))

    async def open_verified(self, *, name: str, sha256: str, size_bytes: int | None) -> IO[bytes]:
        """The file's bytes as an open file at its start, checked against ``sha256`` and ``size_bytes``.

        NotFound when neither the store nor the old folder has it; EvidenceStoreUnavailable when
        the store cannot be asked and the old folder has no copy; EvidenceCorrupted on a mismatch.
        """
        try:
            content = await self._read_object(name=name, sha256=sha256, size_bytes=size_bytes)
        except EvidenceStoreUnavailable:
            content = await self._read_legacy(sha256=sha256, size_bytes=size_bytes)
            if content is None:
                raise
            return content
        if content is None:
            content = await self._read_legacy(sha256=sha256, size_bytes=size_bytes)
        if content is None:
            raise NotFound("证据文件不存在")
        return content

    async def _read_object(self, *, name: str, sha256: str, size_bytes: int | None) -> IO[bytes] | None:
        js = self._connected()
        try:
            store = await self._bucket(js, create=False)
            if store is None:
                return None
            info = await self._bounded(store.get_info(name))
        except NotFoundError:
            return None
        except _STORE_ERRORS as exc:
            raise self._unavailable("object lookup", name, exc) from exc
        if _digest_hex(info.digest) != sha256 or (size_bytes is not None and info.size != size_bytes):
            self._refuse(name=name, expected=sha256, found=_digest_hex(info.digest), where="object metadata")
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who closes it
        try:
            async with asyncio.timeout(self._transfer_bound(info.size or 0)):
                found = await self._receive_chunks(js, info, spool)
        except _Damaged as exc:
            spool.close()
            self._refuse(name=name, expected=sha256, found=str(exc), where="object chunks")
        except BaseException as exc:
            spool.close()
            if isinstance(exc, _STORE_ERRORS):
                raise self._unavailable("download", name, exc) from exc
            raise
        if found != sha256:
            spool.close()
            self._refuse(name=name, expected=sha256, found=found, where="object chunks")
        spool.seek(0)
        return spool

    async def _receive_chunks(self, js: JetStreamContext, info: api.ObjectInfo, out: IO[bytes]) -> str:
        """Copy the object's chunks into ``out``, one bounded request each; returns their SHA-256."""
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=info.nuid)
        digest, size, seq = hashlib.sha256(), 0, 1
        for index in range(info.chunks or 0):
            try:
                msg = await self._bounded(js.get_msg(self._stream, seq=seq, subject=subject, next=True))
            except NotFoundError:
                raise _Damaged(f"chunk {index + 1} of {info.chunks} missing") from None
            data = msg.data or b""
            digest.update(data)
            out.write(data)
            size += len(data)
            seq = (msg.seq or seq) + 1
        if size != (info.size or 0):
            raise _Damaged(f"{size} bytes in chunks, {info.size} in metadata")
        return digest.hexdigest()

    async def _read_legacy(self, *, sha256: str, size_bytes: int | None) -> IO[bytes] | None:
        """The file kept on disk before the object store, checked like an object; None if absent."""
        if not _SHA256_HEX.match(sha256):
            return None
        path = self.legacy_dir / sha256
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return None
        found, size = await asyncio.to_thread(_sha256_of, handle)
        if found != sha256 or (size_bytes is not None and size != size_bytes):
            handle.close()
            self._refuse(name=str(path), expected=sha256, found=found, where="file on disk")
        handle.seek(0)
        return handle

    def _refuse(self, *, name: str, expected: str, found: str, where: str) -> NoReturn:
        log.error(
            "evidence file failed its SHA-256 check; refused",
            evidence=name,
            expected_sha256=expected,
            found=found,
            where=where,
        )
        raise EvidenceCorrupted()

    def _unavailable(self, step: str, name: str, exc: BaseException) -> EvidenceStoreUnavailable:
        log.warning("evidence store unreachable", step=step, object=name, error=repr(exc))
        # Looked up again next time: the bucket may have been deleted or the cluster rebuilt.
        self._opened = None
        return EvidenceStoreUnavailable()

    def _connected(self) -> JetStreamContext:
        js = self._bus()
        if js is None:
            log.warning("evidence store unreachable: NATS is not connected")
            raise EvidenceStoreUnavailable()
        return js

    async def _bucket(self, js: JetStreamContext, *, create: bool) -> ObjectStore | None:
        """The bucket, looked up once per JetStream context; created on the first upload if missing."""
        if self._opened is not None and self._opened[0] is js:
            return self._opened[1]
        async with self._opening:
            if self._opened is not None and self._opened[0] is js:
                return self._opened[1]
            try:
                store = await self._bounded(js.object_store(self.bucket))
                await self._check_replicas(store)
            except BucketNotFoundError:
                if not create:
                    return None
                config = api.ObjectStoreConfig(
                    description="督察核查证据文件 (verification evidence)",
                    storage=api.StorageType.FILE,
                    replicas=self.replicas,
                )
                # Creating a bucket that another instance created meanwhile, alike, is a no-op.
                store = await self._bounded(js.create_object_store(self.bucket, config=config))
                log.info("evidence bucket created", bucket=self.bucket, replicas=self.replicas)
            self._opened = (js, store)
            return store

    async def _check_replicas(self, store: ObjectStore) -> None:
        replicas = (await self._bounded(store.status())).replicas
        if replicas != self.replicas:
            # Not changed here: moving a bucket's data between nodes is the operator's decision.
            log.warning(
                "evidence bucket has another replica count than NATS_REPLICAS",
                bucket=self.bucket,
                replicas=replicas,
                nats_replicas=self.replicas,
                fix=f"nats stream edit OBJ_{self.bucket} --replicas {self.replicas}",
            )

    async def _purge(self, js: JetStreamContext, *subjects: str) -> None:
        for subject in subjects:
            try:
                await self._bounded(js.purge_stream(self._stream, subject=subject))
            except Exception as exc:
                # Chunks without metadata are never served; they only take space until purged.
                log.warning(
                    "evidence store: could not remove a partial object", subject=subject, error=repr(exc)
                )

    async def _bounded(self, operation: Awaitable[_T]) -> _T:
        return await asyncio.wait_for(operation, timeout=self.timeout_seconds)

    def _transfer_bound(self, size: int) -> float:
        return self.timeout_seconds + size / self.min_bytes_per_second

    def _meta_subject(self, name: str) -> str:
        return OBJ_META_PRE_TEMPLATE.format(
            bucket=self.bucket, obj=base64.urlsafe_b64encode(name.encode()).decode()
        )


def _digest_hex(digest: str | None) -> str:
    """The hex SHA-256 of an object's ``SHA-256=<base64url>`` digest; "" when it is not one."""
    if not digest or not digest.upper().startswith(OBJ_DIGEST_TYPE):
        return ""
    encoded = digest[len(OBJ_DIGEST_TYPE) :]
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
    except (binascii.Error, ValueError):
        return ""


def _sha256_of(handle: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := handle.read(1024 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size
