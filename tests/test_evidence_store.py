"""Evidence files in the JetStream object store: kept whole, checked on every read, refused when NATS is not there.

The module runs its own nats-server, since it pauses and stops it.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE
from structlog.testing import capture_logs

from services.verification.models import Evidence
from tests.support import NatsServer, System, eventually, nats_server_binary, running_system, start_nats
from tests.test_pipeline import create_complaint, task_for
from tests.test_verification import claim

BUCKET = "supervision-evidence"
INSPECTOR = "inspector-411681"
MAX_BYTES = 600_000
STORE_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("evidence-nats"))
    yield server
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGCONT)
    server.stop()


@pytest.fixture(scope="module")
def legacy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("legacy-evidence")


@pytest.fixture(scope="module")
async def system(
    own_nats: NatsServer, legacy_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    extra_env = {
        "EVIDENCE_DIR": str(legacy_dir),
        "EVIDENCE_MAX_BYTES": str(MAX_BYTES),
        "EVIDENCE_STORE_TIMEOUT_SECONDS": str(STORE_TIMEOUT),
    }
    root = tmp_path_factory.mktemp("evidence-system")
    async with running_system(
        backend="sqlite", root=root, nats_url=own_nats.url, extra_env=extra_env
    ) as running:
        yield running


def restart(server: NatsServer) -> None:
    """The same server again: same port, same JetStream store."""
    server.process = subprocess.Popen(
        [nats_server_binary(), "-c", str(server.store_dir / "nats.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nats-server did not come back")


async def claimed_task(system: System) -> dict[str, Any]:
    created = await create_complaint(system)
    task = await task_for(system, created["id"], INSPECTOR)
    await claim(system, task["id"], INSPECTOR)
    return task


async def upload(system: System, task_id: str, content: bytes, name: str = "bodycam.mp4") -> Any:
    return await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task_id}/evidence",
        as_user=INSPECTOR,
        data={"kind": "recording", "description": "执法记录仪视频"},
        files={"file": (name, content, "video/mp4")},
    )


async def download(system: System, evidence_id: str) -> Any:
    return await system.call(
        "verification", "GET", f"/api/v1/evidence/{evidence_id}/file", as_user="supervisor1"
    )


async def evidence_ids(system: System, task_id: str) -> list[str]:
    response = await system.call(
        "verification", "GET", f"/api/v1/tasks/{task_id}/evidence", as_user=INSPECTOR
    )
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()]


class Store:
    """The bucket as another NATS client sees it."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> Any:
        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.drain()

    async def bucket(self) -> Any:
        return await self.js.object_store(BUCKET)

    async def stored_messages(self) -> int:
        info = await self.js.stream_info(OBJ_STREAM_TEMPLATE.format(bucket=BUCKET))
        return int(info.state.messages)


def content_of(size: int, seed: bytes) -> bytes:
    return (seed * (size // len(seed) + 1))[:size]


async def test_an_upload_is_kept_in_the_object_store_and_read_back_whole(system: System) -> None:
    task = await claimed_task(system)
    content = content_of(300_000, b"\x00\x01body-camera-export")  # three chunks
    response = await upload(system, task["id"], content, name="执法记录仪.mp4")
    assert response.status_code == 201, response.text
    evidence = response.json()
    assert evidence["sha256"] == hashlib.sha256(content).hexdigest()
    assert evidence["size_bytes"] == len(content)

    async with Store(system.nats_url) as store:
        bucket = await store.bucket()
        stored = await bucket.get(evidence["id"])  # nats-py's own reader, digest check included
        assert stored.data == content
        assert stored.info.size == len(content) and stored.info.description == "执法记录仪.mp4"
        assert stored.info.headers == {
            "Case-Id": [task["case_id"]],
            "Task-Id": [task["id"]],
            "Content-Type": ["video/mp4"],
        }
        assert (await bucket.status()).replicas == 1

    downloaded = await download(system, evidence["id"])
    assert downloaded.status_code == 200
    assert downloaded.content == content
    assert downloaded.headers["content-type"] == "application/octet-stream"
    assert downloaded.headers["x-content-type-options"] == "nosniff"
    assert downloaded.headers["content-security-policy"].startswith("sandbox")
    assert downloaded.headers["content-disposition"].startswith("attachment;")


async def test_a_tampered_object_is_refused_on_read(system: System) -> None:
    task = await claimed_task(system)
    content = content_of(200_000, b"scene-photo")
    first = (await upload(system, task["id"], content)).json()
    second = (await upload(system, task["id"], content)).json()

    async with Store(system.nats_url) as store:
        bucket = await store.bucket()
        # Replaced whole: new bytes under the same name, their own digest in the metadata.
        await bucket.put(first["id"], b"forged " * 1000)
        # Changed underneath: the metadata still names the original digest, a chunk does not match.
        info = await bucket.get_info(second["id"])
        chunks = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=BUCKET, obj=info.nuid)
        stream = OBJ_STREAM_TEMPLATE.format(bucket=BUCKET)
        await store.js.purge_stream(stream, subject=chunks)
        left = len(content)
        while left:  # the same sizes, other bytes
            piece = min(left, info.options.max_chunk_size)
            await store.js.publish(chunks, b"x" * piece)
            left -= piece

    for evidence, caught_in in ((first, "object metadata"), (second, "object chunks")):
        with capture_logs() as logs:
            refused = await download(system, evidence["id"])
        assert refused.status_code == 502
        assert "证据文件校验失败" in refused.json()["detail"]
        assert content not in refused.content
        assert any(
            entry["log_level"] == "error"
            and entry.get("expected_sha256") == evidence["sha256"]
            and entry.get("where") == caught_in
            for entry in logs
        ), logs


async def test_an_upload_over_the_limit_leaves_nothing_in_the_store(system: System) -> None:
    task = await claimed_task(system)
    async with Store(system.nats_url) as store:
        before = await store.stored_messages()
        response = await upload(system, task["id"], content_of(MAX_BYTES + 200_000, b"too-large"))
        assert response.status_code == 413, response.text
        assert await store.stored_messages() == before
    assert await evidence_ids(system, task["id"]) == []


async def add_legacy_row(system: System, *, task_id: str, content: bytes) -> str:
    """A row as an installation before the object store wrote it: its file on disk only."""
    runtime = system.apps["verification"].state.runtime
    row = Evidence(
        task_id=task_id,
        kind="document",
        description="旧版本保存在磁盘上的证据",
        filename="询问笔录.pdf",
        content_type="application/pdf",
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        added_by=INSPECTOR,
    )
    async with runtime.session_factory() as session, session.begin():
        session.add(row)
    return row.id


async def test_files_kept_on_disk_before_are_still_served_and_checked(
    system: System, legacy_dir: Path
) -> None:
    task = await claimed_task(system)
    content = b"%PDF-1.4 interview record" * 500
    (legacy_dir / hashlib.sha256(content).hexdigest()).write_bytes(content)
    evidence_id = await add_legacy_row(system, task_id=task["id"], content=content)
    served = await download(system, evidence_id)
    assert served.status_code == 200 and served.content == content

    altered = b"%PDF-1.4 another record!" * 500
    (legacy_dir / hashlib.sha256(altered).hexdigest()).write_bytes(b"%PDF-1.4 tampered record" * 500)
    tampered_id = await add_legacy_row(system, task_id=task["id"], content=altered)
    refused = await download(system, tampered_id)
    assert refused.status_code == 502 and "证据文件校验失败" in refused.json()["detail"]

    missing_id = await add_legacy_row(system, task_id=task["id"], content=b"never written anywhere")
    assert (await download(system, missing_id)).status_code == 404


async def test_an_upload_while_nats_is_paused_is_refused_within_its_bound(
    system: System, own_nats: NatsServer
) -> None:
    task = await claimed_task(system)
    own_nats.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = await upload(system, task["id"], content_of(50_000, b"paused"))
        elapsed = time.monotonic() - started
    finally:
        own_nats.process.send_signal(signal.SIGCONT)
    assert response.status_code == 503, response.text
    assert response.json()["detail"] == "证据存储暂不可用，请稍后重试"
    # One chunk's wait, then the two removals of what may have arrived, each bounded.
    assert STORE_TIMEOUT <= elapsed < 3 * STORE_TIMEOUT + 3, elapsed
    assert await evidence_ids(system, task["id"]) == []


async def test_an_upload_while_nats_is_down_is_refused_and_recorded_nowhere(
    system: System, own_nats: NatsServer, legacy_dir: Path
) -> None:
    task = await claimed_task(system)
    kept = (await upload(system, task["id"], b"uploaded before the outage")).json()
    on_disk = b"kept on disk by an older installation"
    (legacy_dir / hashlib.sha256(on_disk).hexdigest()).write_bytes(on_disk)
    legacy_id = await add_legacy_row(system, task_id=task["id"], content=on_disk)
    before = await evidence_ids(system, task["id"])

    own_nats.stop()
    try:
        response = await upload(system, task["id"], b"uploaded during the outage")
        assert response.status_code == 503, response.text
        assert response.json()["detail"] == "证据存储暂不可用，请稍后重试"
        assert response.headers["retry-after"]
        assert await evidence_ids(system, task["id"]) == before
        # Reading: what only the store holds waits for it; what the disk holds is still served.
        assert (await download(system, kept["id"])).status_code == 503
        assert (await download(system, legacy_id)).content == on_disk
    finally:
        restart(own_nats)

    async def accepted() -> Any:
        again = await upload(system, task["id"], b"uploaded after the outage")
        return again if again.status_code == 201 else None

    after = (await eventually(accepted, what="an upload once NATS is back")).json()
    assert (await download(system, after["id"])).content == b"uploaded after the outage"
    assert (await download(system, kept["id"])).content == b"uploaded before the outage"
    assert len(await evidence_ids(system, task["id"])) == len(before) + 1
