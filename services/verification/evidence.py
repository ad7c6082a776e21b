"""Evidence: registering it on a task, keeping uploaded files in the evidence store, handing them out.

The files live in the NATS JetStream object store (``evidence_store.py``, which also reads files an
older installation kept on disk).  An upload goes to the store before the database transaction that
records it, so the task's row is not locked while the file travels; ``discard_upload`` removes it
again when that transaction does not commit.  A process that dies between the two leaves an object
no row names: it takes space and is never served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO
from uuid import uuid4

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.context import VerificationContext
from services.verification.evidence_store import Upload
from services.verification.models import ACTIVE_TASK_STATUSES, Evidence, Task
from services.verification.tasks import add_history, is_team_member, visible_task
from shared.audit import audit
from shared.auth import Principal
from shared.errors import FieldProblems, Forbidden, NotFound, conflict


@dataclass(frozen=True)
class StoredUpload:
    """A file the evidence store holds whole, waiting for its evidence row."""

    evidence_id: str
    filename: str
    content_type: str
    sha256: str
    size_bytes: int


def check_may_add(*, task: Task, principal: Principal) -> None:
    if not is_team_member(principal, task) and principal.team_code not in task.participants:
        raise Forbidden("只有承办队或参与核查的队可以登记证据")
    if task.status not in ACTIVE_TASK_STATUSES:
        raise conflict("status", "已办结的任务不能再登记证据", "the task is no longer open")


async def store_upload(*, ctx: VerificationContext, task: Task, upload: Upload) -> StoredUpload:
    """Put the file in the evidence store under a new evidence id (503 when the store is unreachable)."""
    evidence_id = str(uuid4())
    filename = (upload.filename or "upload")[:255]
    content_type = (upload.content_type or "application/octet-stream")[:100]
    stored = await ctx.evidence_store.put(
        name=evidence_id,
        upload=upload,
        headers={"Case-Id": task.case_id, "Task-Id": task.id, "Content-Type": content_type},
        description=filename,
    )
    return StoredUpload(
        evidence_id=evidence_id,
        filename=filename,
        content_type=content_type,
        sha256=stored.sha256,
        size_bytes=stored.size_bytes,
    )


async def discard_upload(*, ctx: VerificationContext, stored: StoredUpload) -> None:
    await ctx.evidence_store.discard(name=stored.evidence_id)


async def add_evidence(
    *,
    session: AsyncSession,
    task: Task,
    principal: Principal,
    kind: str,
    description: str,
    reference: str | None,
    stored: StoredUpload | None,
) -> Evidence:
    if stored is None and not (reference or "").strip():
        raise FieldProblems(
            [("reference", "请上传文件或填写证据存放位置", "a file or a reference is required")]
        )
    check_may_add(task=task, principal=principal)
    evidence = Evidence(
        task_id=task.id,
        kind=kind,
        description=description.strip(),
        reference=(reference or "").strip() or None,
        added_by=principal.username,
    )
    if stored is not None:
        evidence.id = stored.evidence_id
        evidence.sha256, evidence.size_bytes = stored.sha256, stored.size_bytes
        evidence.filename, evidence.content_type = stored.filename, stored.content_type
    session.add(evidence)
    add_history(session, task, "evidence_added", principal.username, f"{kind}：{evidence.description[:50]}")
    await audit(
        session,
        case_id=task.case_id,
        action="evidence_added",
        actor=principal.username,
        detail={"evidence_id": evidence.id, "sha256": evidence.sha256, "kind": kind},
    )
    return evidence


async def list_evidence(*, session: AsyncSession, task_id: str) -> list[Evidence]:
    return list(
        await session.exec(
            select(Evidence).where(Evidence.task_id == task_id).order_by(col(Evidence.added_at))
        )
    )


async def evidence_to_download(*, session: AsyncSession, evidence_id: str, principal: Principal) -> Evidence:
    """The evidence row of an uploaded file, if the caller sees the task it belongs to."""
    evidence = await session.get(Evidence, evidence_id)
    if evidence is None or evidence.sha256 is None:
        raise NotFound("证据文件不存在")
    await visible_task(session=session, task_id=evidence.task_id, principal=principal)
    return evidence


async def open_evidence_file(*, ctx: VerificationContext, evidence: Evidence) -> IO[bytes]:
    """The file's bytes, checked against the SHA-256 and size recorded at upload; the caller closes it."""
    if evidence.sha256 is None:
        raise NotFound("证据文件不存在")
    return await ctx.evidence_store.open_verified(
        name=evidence.id, sha256=evidence.sha256, size_bytes=evidence.size_bytes
    )
