"""The background worker that records the rows of running imports, a chunk per step.

A step takes one running import whose lease is free, records its next ``CHUNK_ROWS`` rows
(``imports.record_row``, concurrently, so the group commit batches them), then saves the rows'
outcomes and the progress and frees the lease, all in one transaction.  Progress is in the
database: a restarted service goes on where the last saved chunk ended, and a row recorded in a
chunk whose progress was lost is recognised by its ticket number as this row's own.
"""

from __future__ import annotations

import asyncio
import json
from zoneinfo import ZoneInfo

from sqlmodel import col

from services.intake.context import IntakeContext
from services.intake.imports import (
    CHUNK_ROWS,
    IDLE_SECONDS,
    LEASE,
    STEP_TIMEOUT_SECONDS,
    RowOutcome,
    RowRefused,
    complaint_of_row,
    duplicate_of,
    import_actor,
    import_seal_context,
    known_tickets,
    record_row,
    refused_row,
)
from services.intake.imports_sheet import HEADERS, SheetRow
from services.intake.models import ImportJob, ImportRowResult, ImportStatus
from shared.app import Runtime
from shared.db import utcnow
from shared.groupcommit import WriteGroups
from shared.logging import get_logger
from shared.worker import BackgroundWorker, lease_rows

log = get_logger(__name__)


class ImportRunner:
    """The import worker of one service: built at start-up, woken when an upload is stored."""

    def __init__(self, *, ctx: IntakeContext, write_groups: WriteGroups, timezone: str) -> None:
        self._ctx = ctx
        self._write_groups = write_groups
        self._tz = ZoneInfo(timezone)
        self._worker: BackgroundWorker | None = None
        # The opened rows of the import under way (one at a time), so a step does not reopen them.
        self._rows: dict[str, list[SheetRow]] = {}

    async def open(self, runtime: Runtime) -> None:
        """Start-up hook: the worker, started and watched by the app."""
        self._worker = import_worker(runtime, self)
        runtime.add_worker(self._worker)

    def wake(self) -> None:
        if self._worker is not None:
            self._worker.wake()

    @property
    def ctx(self) -> IntakeContext:
        return self._ctx

    @property
    def tz(self) -> ZoneInfo:
        return self._tz

    @property
    def write_groups(self) -> WriteGroups:
        return self._write_groups

    def rows_of(self, job: ImportJob) -> list[SheetRow]:
        """The job's rows, opened once; raises ValueError when they cannot be opened."""
        rows = self._rows.get(job.id)
        if rows is None:
            if job.rows_sealed is None:
                raise ValueError("the rows are gone")
            opened = json.loads(
                self._ctx.vault.open_text(job.rows_sealed, context=import_seal_context(job.id))
            )
            rows = [SheetRow(row=int(number), cells=dict(cells)) for number, cells in opened]
            self._rows = {job.id: rows}
        return rows

    def forget(self, import_id: str) -> None:
        self._rows.pop(import_id, None)


def import_worker(runtime: Runtime, runner: ImportRunner) -> BackgroundWorker:
    async def step() -> bool:
        job = await _claim(runtime)
        if job is None:
            return False
        try:
            rows = runner.rows_of(job)
        except ValueError as exc:
            await _fail(runtime, job.id, "导入数据无法读取（密钥已更换？），请重新上传文件")
            runner.forget(job.id)
            log.warning("import rows cannot be opened", import_id=job.id, error=str(exc))
            return True
        chunk = rows[job.processed : job.processed + CHUNK_ROWS]
        outcomes = await _record_chunk(runtime, runner, job, chunk)
        done = await _save_progress(runtime, job.id, outcomes, processed=job.processed + len(chunk))
        if done:
            runner.forget(job.id)
            log.info("import finished", import_id=job.id, rows=job.rows)
        return True

    return BackgroundWorker(
        name="imports",
        step=step,
        idle_seconds=IDLE_SECONDS,
        step_timeout=STEP_TIMEOUT_SECONDS,
    )


async def _claim(runtime: Runtime) -> ImportJob | None:
    """The oldest running import no instance is working on, leased to this step."""
    jobs = await lease_rows(
        runtime.session_factory,
        ImportJob,
        ImportJob.status == ImportStatus.RUNNING,
        order_by=col(ImportJob.created_at),
        limit=1,
        lease=LEASE,
    )
    return jobs[0] if jobs else None


async def _record_chunk(
    runtime: Runtime, runner: ImportRunner, job: ImportJob, chunk: list[SheetRow]
) -> list[RowOutcome]:
    """Each row's outcome, in row order; the good rows recorded through the form's path."""
    tickets = [r.cells.get("platform_ticket_no", "").strip() for r in chunk]
    async with runtime.session_factory() as session:
        known = await known_tickets(session=session, tickets=[t for t in tickets if t])
    actor = import_actor(job)
    outcomes: dict[int, RowOutcome] = {}
    pending: dict[int, asyncio.Task[RowOutcome]] = {}
    claimed: set[str] = set()
    for row, ticket in zip(chunk, tickets, strict=True):
        if not ticket:
            message = "平台工单号不能为空：它是避免重复导入的依据"
            outcomes[row.row] = refused_row(row, HEADERS["platform_ticket_no"], message)
            continue
        if ticket in known:
            outcomes[row.row] = duplicate_of(row.row, ticket, known[ticket], import_id=job.id)
            continue
        if ticket in claimed:
            outcomes[row.row] = RowOutcome(
                row.row,
                ImportRowResult.DUPLICATE,
                ticket,
                field=HEADERS["platform_ticket_no"],
                message=f"平台工单号 {ticket} 在本文件中重复出现，只登记第一行",
            )
            continue
        try:
            complaint_in = complaint_of_row(ctx=runner.ctx, row=row, tz=runner.tz)
        except RowRefused as refused:
            outcomes[row.row] = refused_row(row, refused.column, refused.message)
            continue
        claimed.add(ticket)
        pending[row.row] = asyncio.create_task(
            record_row(
                ctx=runner.ctx,
                writes=runner.write_groups.committer,
                job=job,
                row=row,
                complaint_in=complaint_in,
                actor=actor,
            )
        )
    if pending:
        await asyncio.gather(*pending.values())
    for number, task in pending.items():
        outcomes[number] = task.result()
    return [outcomes[r.row] for r in chunk]


async def _save_progress(
    runtime: Runtime, import_id: str, outcomes: list[RowOutcome], *, processed: int
) -> bool:
    """Save the chunk's outcomes and the counters, free the lease; True when the import is done."""
    async with runtime.session_factory() as session, session.begin():
        job = await session.get(ImportJob, import_id, with_for_update=True)
        assert job is not None
        for outcome in outcomes:
            if not outcome.stored:
                session.add(outcome.as_row(import_id))
        job.processed = processed
        job.accepted += sum(o.result == ImportRowResult.ACCEPTED for o in outcomes)
        job.refused += sum(o.result == ImportRowResult.REFUSED for o in outcomes)
        job.duplicates += sum(o.result == ImportRowResult.DUPLICATE for o in outcomes)
        job.lease_until = None
        done = processed >= job.rows
        if done:
            job.status = ImportStatus.DONE
            job.rows_sealed = None
            job.finished_at = utcnow()
        session.add(job)
    return done


async def _fail(runtime: Runtime, import_id: str, message: str) -> None:
    async with runtime.session_factory() as session, session.begin():
        job = await session.get(ImportJob, import_id)
        if job is not None:
            job.status = ImportStatus.FAILED
            job.failure = message
            job.rows_sealed = None
            job.lease_until = None
            job.finished_at = utcnow()
            session.add(job)
