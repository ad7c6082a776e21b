"""Bulk import of transferred matters (12345 / 12389 transfer lists, .xlsx).

An upload is checked as a whole (``imports_sheet``), its rows stored sealed with the identity
key, and an import job answers at once.  A background worker then records the rows a chunk at
a time: each row becomes the same ``ComplaintCreate`` the form posts and goes through
``complaints.create_complaint`` inside the service's group commit (``shared.groupcommit``), so
a row is validated by the form's rules, recorded with its outbox event, and linked to an open
complaint it repeats, exactly as on the form.  The platform ticket number is the key: a number
already recorded (by an import, or on the form) makes the row a ``duplicate`` and records nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake import complaints
from services.intake.context import IntakeContext
from services.intake.imports_sheet import HEADERS, SheetRow, check_upload, read_rows
from services.intake.models import (
    Complaint,
    ImportedTicket,
    ImportJob,
    ImportRow,
    ImportRowResult,
)
from services.intake.schemas import CHANNEL_LABELS, ComplaintCreate
from shared.auth import Principal, Role
from shared.errors import FieldProblems, LocalisedError, NotFound, field_path, translate
from shared.groupcommit import GroupCommitter
from shared.logging import get_logger
from shared.pagination import Key, Page

log = get_logger(__name__)

IMPORT_NOT_FOUND = "导入记录不存在"
# Rows recorded per worker step: one progress update each, several write groups' worth.
CHUNK_ROWS = 256
STEP_TIMEOUT_SECONDS = 120.0
# An instance that took a chunk and died: another takes the job over after this.
LEASE = timedelta(seconds=2 * STEP_TIMEOUT_SECONDS)
IDLE_SECONDS = 5.0
MAX_MESSAGE = 500

# Where a complaint field's problem is shown: the column of the sheet it came from.
_COLUMN_OF_FIELD = {
    "platform_ticket_no": "platform_ticket_no",
    "channel": "channel",
    "received_at": "received_at",
    "complainant.name": "name",
    "complainant.phone": "phone",
    "complainant.id_number": "id_number",
    "complainant.anonymous": "anonymous",
    "complainant.email": "phone",
    "complainant.address": "phone",
    "complainant": "name",
    "accused.unit": "unit",
    "accused.county_code": "county",
    "accused.officer_name": "officer_name",
    "accused.badge_no": "badge_no",
    "accused": "unit",
    "category": "category",
    "allegations": "category",
    "incident_at": "incident_at",
    "place": "place",
    "account": "account",
}
_YES = {"是", "y", "yes", "true", "1", "匿名", "√"}
_TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%Y年%m月%d日 %H:%M:%S",
    "%Y年%m月%d日 %H:%M",
    "%Y年%m月%d日%H:%M",
    "%Y年%m月%d日",
)


@dataclass(frozen=True)
class RowOutcome:
    row: int
    result: ImportRowResult
    ticket: str | None
    tracking_code: str | None = None
    field: str | None = None
    message: str | None = None
    # Its ImportRow was written with the complaint, in the same transaction.
    stored: bool = False

    def as_row(self, import_id: str) -> ImportRow:
        """The row of the import's report."""
        return ImportRow(
            import_id=import_id,
            row=self.row,
            result=self.result,
            platform_ticket_no=(self.ticket or None) and (self.ticket or "")[:64],
            tracking_code=self.tracking_code,
            field=self.field,
            message=(self.message or None) and (self.message or "")[:MAX_MESSAGE],
        )


class RowRefused(Exception):
    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


# ---------------------------------------------------------------- starting an import


async def start_import(
    *,
    session: AsyncSession,
    ctx: IntakeContext,
    filename: str,
    data: bytes,
    max_bytes: int,
    max_rows: int,
    actor: Principal,
) -> ImportJob:
    """Check the file as a whole and store its rows as a running import; the caller commits.

    Refuses (``FieldProblems`` on ``file``, nothing stored) a file that is not an .xlsx by its
    content, is empty, too large, lacks a required column, or holds a formula in any cell.
    """
    check_upload(data, max_bytes=max_bytes)
    rows = await asyncio.to_thread(read_rows, data, max_rows=max_rows)
    job = ImportJob(filename=(filename or "import.xlsx")[:255], rows=len(rows), created_by=actor.username)
    payload = json.dumps([[r.row, r.cells] for r in rows], ensure_ascii=False)
    job.rows_sealed = ctx.vault.seal_text(payload, context=import_seal_context(job.id))
    session.add(job)
    return job


def import_seal_context(import_id: str) -> str:
    return f"import-rows:{import_id}"


async def get_import(*, session: AsyncSession, import_id: str) -> ImportJob:
    job = await session.get(ImportJob, import_id)
    if job is None:
        raise NotFound(IMPORT_NOT_FOUND)
    return job


async def import_items(*, session: AsyncSession, import_id: str) -> Sequence[ImportRow]:
    query = select(ImportRow).where(ImportRow.import_id == import_id).order_by(col(ImportRow.row))
    return (await session.exec(query)).all()


async def recent_imports(*, session: AsyncSession, page: Page) -> Sequence[ImportJob]:
    query = select(ImportJob)
    keys = (Key(col(ImportJob.created_at), descending=True), Key(col(ImportJob.id), descending=True))
    return await page.rows(session, query, keys)


# ---------------------------------------------------------------- a row as the form's complaint


def _column(key: str) -> str:
    return HEADERS[key]


def _parse_time(text: str, *, tz: ZoneInfo, key: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
        for pattern in _TIME_FORMATS:
            try:
                value = datetime.strptime(text, pattern)
                break
            except ValueError:
                continue
    if value is None:
        raise RowRefused(_column(key), f"时间格式不正确：“{text}”，应如 2026-11-02 09:14")
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def _channel(text: str) -> str:
    if not text:
        return "transfer_12345"
    wanted = text.strip()
    for channel, label in CHANNEL_LABELS.items():
        if wanted in (channel.value, label):
            return channel.value
    if "12345" in wanted:
        return "transfer_12345"
    if "信访" in wanted:
        return "transfer_xinfang"
    if "12389" in wanted:
        # The 12389 reporting line is a telephone line: its transfers are recorded as phone calls.
        return "phone"
    choices = "、".join(["12345", "12389", *CHANNEL_LABELS.values()])
    raise RowRefused(_column("channel"), f"未知的来源平台“{wanted}”，可选：{choices}")


def _county(ctx: IntakeContext, text: str, unit: str) -> str | None:
    organisation = ctx.organisation
    if not text:
        found = organisation.county_of_unit(unit) if unit else None
        return found.code if found else None
    wanted = text.strip()
    if organisation.is_known_area(wanted):
        return wanted
    if wanted in (organisation.city_name, organisation.city_bureau, "市局直属"):
        return organisation.city_code
    for county in organisation.counties.values():
        if wanted in (county.name, county.bureau, *county.aliases):
            return county.code
    names = "、".join(c.name for c in organisation.counties.values())
    raise RowRefused(_column("county"), f"未知的县（市、区）“{wanted}”，可选：{names}")


def complaint_of_row(*, ctx: IntakeContext, row: SheetRow, tz: ZoneInfo) -> ComplaintCreate:
    """The row as the body the complaint form posts, checked by the same schema.

    Raises ``RowRefused`` (column, message) for what the sheet says wrongly; a blank cell is left
    out of the body, so the form's own rule for a missing field answers it.
    """
    cells = row.cells

    def given(key: str) -> str:
        return cells.get(key, "").strip()

    complainant: dict[str, Any] = {"anonymous": given("anonymous").lower() in _YES}
    for key in ("name", "phone", "id_number"):
        if given(key):
            complainant[key] = given(key)
    accused: dict[str, Any] = {}
    for key, field in (("unit", "unit"), ("officer_name", "officer_name"), ("badge_no", "badge_no")):
        if given(key):
            accused[field] = given(key)
    county = _county(ctx, given("county"), given("unit"))
    if county:
        accused["county_code"] = county
    body: dict[str, Any] = {
        "channel": _channel(given("channel")),
        "complainant": complainant,
        "accused": accused,
        "received_at": _parse_time(given("received_at"), tz=tz, key="received_at"),
        "incident_at": _parse_time(given("incident_at"), tz=tz, key="incident_at"),
    }
    for key in ("platform_ticket_no", "category", "place", "account"):
        if given(key):
            body[key] = given(key)
    try:
        return ComplaintCreate.model_validate(body)
    except ValidationError as invalid:
        raise _refusal_of(invalid) from None


def _column_of_path(path: str) -> str:
    parts = path.split(".")
    while parts:
        key = _COLUMN_OF_FIELD.get(".".join(parts))
        if key is not None:
            return _column(key)
        parts.pop()
    return path or "—"


def _refusal_of(invalid: ValidationError) -> RowRefused:
    problems: list[tuple[str, str]] = []
    for error in invalid.errors():
        path = field_path(error.get("loc", ()))
        ctx = error.get("ctx")
        custom = ctx.get("error") if isinstance(ctx, dict) else None
        if isinstance(custom, LocalisedError) and custom.field:
            path = f"{path}.{custom.field}" if path else custom.field
        column = _column_of_path(path)
        problems.append((column, translate(dict(error), english=False, field=column)))
    return _problems(problems)


def _problems(problems: list[tuple[str, str]]) -> RowRefused:
    message = "；".join(f"{column}：{text}" for column, text in problems)
    return RowRefused(problems[0][0], message)


# ---------------------------------------------------------------- recording rows


async def known_tickets(*, session: AsyncSession, tickets: list[str]) -> dict[str, ImportedTicket]:
    """What already holds these ticket numbers: an import (with its row), or a complaint of the form."""
    if not tickets:
        return {}
    imported = await session.exec(
        select(ImportedTicket).where(col(ImportedTicket.platform_ticket_no).in_(tickets))
    )
    found = {t.platform_ticket_no: t for t in imported}
    recorded = await session.exec(
        select(Complaint.platform_ticket_no, Complaint.id, Complaint.tracking_code).where(
            col(Complaint.platform_ticket_no).in_([t for t in tickets if t not in found])
        )
    )
    for ticket, complaint_id, tracking_code in recorded:
        if ticket is not None:
            found.setdefault(
                ticket,
                ImportedTicket(
                    platform_ticket_no=ticket,
                    complaint_id=complaint_id,
                    tracking_code=tracking_code,
                    import_id="",
                    row=0,
                ),
            )
    return found


def duplicate_of(row: int, ticket: str, holder: ImportedTicket, *, import_id: str) -> RowOutcome:
    if holder.import_id == import_id and holder.row == row:
        # Recorded by this very row in a step whose progress was not saved: it was accepted.
        return RowOutcome(
            row, ImportRowResult.ACCEPTED, ticket, tracking_code=holder.tracking_code, stored=True
        )
    return RowOutcome(
        row,
        ImportRowResult.DUPLICATE,
        ticket,
        tracking_code=holder.tracking_code,
        field=_column("platform_ticket_no"),
        message=f"平台工单号 {ticket} 已登记（查询码 {holder.tracking_code}），本行未重复登记",
    )


async def record_row(
    *,
    ctx: IntakeContext,
    writes: GroupCommitter,
    job: ImportJob,
    row: SheetRow,
    complaint_in: ComplaintCreate,
    actor: Principal,
) -> RowOutcome:
    """Record one row through the form's path, in a write group; its outcome either way."""
    ticket = complaint_in.platform_ticket_no or ""

    async def unit(session: AsyncSession) -> str:
        created = await complaints.create_complaint(
            session=session, ctx=ctx, complaint_in=complaint_in, actor=actor, correlation_id=None
        )
        complaint = created.complaint
        session.add(
            ImportedTicket(
                platform_ticket_no=ticket,
                complaint_id=complaint.id,
                tracking_code=complaint.tracking_code,
                import_id=job.id,
                row=row.row,
            )
        )
        outcome = RowOutcome(row.row, ImportRowResult.ACCEPTED, ticket, tracking_code=complaint.tracking_code)
        session.add(outcome.as_row(job.id))
        return complaint.tracking_code

    try:
        tracking_code = await writes.run(unit)
    except FieldProblems as refused:
        problem = _problems([(_column_of_path(path), zh) for path, zh, _ in refused.problems])
        return RowOutcome(
            row.row, ImportRowResult.REFUSED, ticket, field=problem.column, message=problem.message
        )
    except IntegrityError:
        # Another import recorded this ticket number a moment earlier.
        return RowOutcome(
            row.row,
            ImportRowResult.DUPLICATE,
            ticket,
            field=_column("platform_ticket_no"),
            message=f"平台工单号 {ticket} 已登记，本行未重复登记",
        )
    return RowOutcome(row.row, ImportRowResult.ACCEPTED, ticket, tracking_code=tracking_code, stored=True)


def import_actor(job: ImportJob) -> Principal:
    return Principal(username=job.created_by, role=Role.OPERATOR)


def refused_row(row: SheetRow, column: str, message: str) -> RowOutcome:
    ticket = row.cells.get("platform_ticket_no", "").strip() or None
    return RowOutcome(row.row, ImportRowResult.REFUSED, ticket, field=column, message=message)
