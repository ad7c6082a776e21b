"""Recording complaints and finding them again.

Every function takes keyword-only, typed arguments and does its work inside the caller's
transaction; the caller commits, so the record and its outgoing event land together.

``create_complaint`` is the throughput hot path: it runs inside a group commit (autoflush
off, several requests in one transaction), builds rows with ``new_row`` and looks at pending
rows as well as the database when it looks for earlier complaints (``earlier.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.context import IntakeContext
from services.intake.earlier import (
    PriorComplaint,
    as_earlier,
    find_earlier,
    is_open,
    one_complainant_at_a_time,
    repeat_of,
    root_of,
)
from services.intake.identity import Identity, IdentityVault
from services.intake.models import ComplainantKey, Complaint
from services.intake.receipt import CLOCK_SKEW, Receipt, issue_receipt, too_old
from services.intake.schemas import ComplainantIn, ComplaintCreate, EarlierMatter, RepeatCheckIn
from shared.audit import record_audited
from shared.auth import Principal, Role
from shared.db import new_row, utcnow
from shared.errors import FieldProblems, NotFound
from shared.events import AllegationRef, ComplaintReceived, OfficerRef
from shared.masking import mask_name, mask_phone
from shared.pagination import Key, Page
from shared.states import Rating

COMPLAINT_NOT_FOUND = "投诉不存在"
# What a complaint records of the operator's entry as it was given.
RECORDED_AS_GIVEN = {
    "channel",
    "platform_ticket_no",
    "attachments",
    "incident_at",
    "place",
    "account",
    "new_matter_reason",
}
# What ComplaintReceived carries of the complaint as recorded (never the complainant's identity).
RECEIVED_FIELDS = {
    "tracking_code",
    "query_secret_hash",
    "channel",
    "received_at",
    "anonymous",
    "accused_unit",
    "accused_unit_code",
    "county_code",
    "incident_at",
    "place",
    "repeat_of",
    "linked_repeat",
    "repeat_after_rejection",
    "supervisor_flag",
}


@dataclass(frozen=True)
class RepeatLink:
    """How a new complaint relates to the caller's earlier one about the same unit."""

    earlier: PriorComplaint | None
    # A repeat of a complaint still being worked on (重复件): linked to it, not worked twice.
    linked: bool

    @property
    def repeat_of(self) -> str | None:
        return self.earlier.id if self.earlier else None


@dataclass(frozen=True)
class NewComplaint:
    complaint: Complaint
    query_secret: str
    earlier: list[EarlierMatter]
    key_clue_hints: list[str]


@dataclass(slots=True)
class _Accusation:
    """What the complaint says, resolved against the reference data."""

    allegations: list[dict[str, Any]]
    any_serious: bool
    officers: list[dict[str, Any]]
    accused_unit_code: str | None
    accused_is_team: bool
    injury_or_death: bool


async def create_complaint(
    *,
    session: AsyncSession,
    ctx: IntakeContext,
    complaint_in: ComplaintCreate,
    actor: Principal,
    correlation_id: str | None,
) -> NewComplaint:
    now = utcnow()
    check_reference_data(ctx=ctx, complaint_in=complaint_in, now=now)
    accusation = _resolve_accusation(ctx=ctx, complaint_in=complaint_in)
    sealed, match_keys = _seal_identity(ctx=ctx, complainant=complaint_in.complainant)

    received_at = complaint_in.received_at or now
    await one_complainant_at_a_time(session=session, match_keys=match_keys)
    earlier = await find_earlier(session=session, match_keys=match_keys)
    repeated = await _repeat_link(
        session=session,
        ctx=ctx,
        earlier=earlier,
        accused_unit=complaint_in.accused.unit,
        county_code=complaint_in.accused.county_code,
        received_at=received_at,
        new_matter=complaint_in.new_matter,
    )

    receipt = issue_receipt(prefix="C", received_at=received_at, signing_key=ctx.signing_key)
    complaint = _add_complaint(
        session=session,
        complaint_in=complaint_in,
        accusation=accusation,
        receipt=receipt,
        received_at=received_at,
        sealed_identity=sealed,
        match_keys=match_keys,
        repeated=repeated,
        actor=actor,
    )
    hints = _key_clue_hints(accusation=accusation, complaint=complaint, repeated=repeated)
    await _record_received(
        session=session,
        complaint=complaint,
        accusation=accusation,
        actor=actor,
        correlation_id=correlation_id,
    )
    return NewComplaint(
        complaint=complaint,
        query_secret=receipt.query_secret,
        earlier=[as_earlier(e) for e in earlier],
        key_clue_hints=hints,
    )


async def _repeat_link(
    *,
    session: AsyncSession,
    ctx: IntakeContext,
    earlier: list[PriorComplaint],
    accused_unit: str,
    county_code: str,
    received_at: datetime,
    new_matter: bool,
) -> RepeatLink:
    """The earlier complaint this one repeats, and whether it is linked to it (重复件).

    A repeat of an open complaint is linked unless the operator recorded it as a new matter (then
    it is no repeat at all); a repeat of an answered one stays a repeat, a key clue after 不满意.
    """
    prior = await root_of(
        session=session,
        prior=repeat_of(
            earlier=earlier,
            accused_unit=accused_unit,
            county_code=county_code,
            window_start=received_at - ctx.repeat_window,
        ),
    )
    if prior is not None and is_open(prior):
        return (
            RepeatLink(earlier=None, linked=False) if new_matter else RepeatLink(earlier=prior, linked=True)
        )
    return RepeatLink(earlier=prior, linked=False)


async def check_repeat(*, session: AsyncSession, ctx: IntakeContext, check_in: RepeatCheckIn) -> RepeatLink:
    """What ``create_complaint`` would find for this caller and unit now: shown before submitting."""
    match_keys = ctx.vault.match_keys(phone=check_in.phone, id_number=check_in.id_number)
    earlier = await find_earlier(session=session, match_keys=match_keys)
    return await _repeat_link(
        session=session,
        ctx=ctx,
        earlier=earlier,
        accused_unit=check_in.unit,
        county_code=check_in.county_code,
        received_at=utcnow(),
        new_matter=False,
    )


def check_reference_data(*, ctx: IntakeContext, complaint_in: ComplaintCreate, now: datetime) -> None:
    """Refuse what the request's shape allows but the reference data or the clock does not."""
    problems: list[tuple[str, str, str]] = []
    accused = complaint_in.accused
    if not ctx.organisation.is_known_area(accused.county_code):
        problems.append(
            (
                "accused.county_code",
                f"不存在的县（市、区）代码：{accused.county_code}",
                f"unknown county code {accused.county_code}",
            )
        )
    names = [complaint_in.category] if complaint_in.category else []
    names += [a.category for a in complaint_in.allegations]
    for index, name in enumerate(names):
        if name and ctx.categories.find(name) is None:
            field = (
                "category"
                if complaint_in.category and index == 0
                else f"allegations.{index - (1 if complaint_in.category else 0)}.category"
            )
            problems.append(
                (
                    field,
                    f"未知的投诉类别“{name}”，可选：{'、'.join(ctx.categories.names())}",
                    f"unknown category {name!r}",
                )
            )
    if len(complaint_in.account) > ctx.account_max_chars:
        problems.append(
            (
                "account",
                f"陈述过长：最多 {ctx.account_max_chars} 字，当前 {len(complaint_in.account)} 字；更长的材料请作为附件登记",
                f"account too long: at most {ctx.account_max_chars} characters",
            )
        )
    problems += _time_problems(complaint_in=complaint_in, now=now, max_age=ctx.received_at_max_age)
    if problems:
        raise FieldProblems(problems)


def _time_problems(
    *, complaint_in: ComplaintCreate, now: datetime, max_age: timedelta
) -> list[tuple[str, str, str]]:
    problems: list[tuple[str, str, str]] = []
    received = complaint_in.received_at or now
    if received > now + CLOCK_SKEW:
        problems.append(("received_at", "受理时间不能晚于当前时间", "received_at is in the future"))
    elif (old := too_old(received_at=received, now=now, max_age=max_age, label="受理时间")) is not None:
        problems.append(old)
    if complaint_in.incident_at is not None:
        if complaint_in.incident_at > now + CLOCK_SKEW:
            problems.append(("incident_at", "事发时间不能晚于当前时间", "incident_at is in the future"))
        elif complaint_in.incident_at > received + CLOCK_SKEW:
            problems.append(("incident_at", "事发时间不能晚于受理时间", "incident_at is after received_at"))
    return problems


def _resolve_accusation(*, ctx: IntakeContext, complaint_in: ComplaintCreate) -> _Accusation:
    """The allegations with their categories' names and weight, the officers, the unit."""
    categories = ctx.categories
    accused = complaint_in.accused
    allegation_names = [complaint_in.category] if complaint_in.category else []
    allegation_rows: list[dict[str, Any]] = (
        [{"category": complaint_in.category, "description": None}] if complaint_in.category else []
    )
    for allegation in complaint_in.allegations:
        allegation_names.append(allegation.category)
        allegation_rows.append(allegation.model_dump())
    resolved = [categories.find(name) for name in allegation_names]
    for row, category in zip(allegation_rows, resolved, strict=True):
        assert category is not None  # check_reference_data refused unknown categories
        row["category"] = category.name
        row["serious"] = category.serious
    unit_county = ctx.organisation.county_of_unit(accused.unit)
    return _Accusation(
        allegations=allegation_rows,
        any_serious=any(c and c.serious for c in resolved),
        officers=_officers(complaint_in, ctx),
        accused_unit_code=unit_county.code if unit_county else None,
        accused_is_team="督察" in accused.unit,
        injury_or_death=categories.mentions_injury_or_death(complaint_in.account),
    )


def _officers(complaint_in: ComplaintCreate, ctx: IntakeContext) -> list[dict[str, Any]]:
    accused = complaint_in.accused
    officers = [o.model_dump() for o in accused.officers]
    if accused.officer_name or accused.badge_no:
        officers.insert(
            0,
            {
                "name": accused.officer_name,
                "badge_no": accused.badge_no,
                "leadership": bool(accused.leadership)
                or ctx.categories.is_leadership_title(accused.officer_name),
            },
        )
    elif accused.leadership:
        officers.insert(0, {"name": None, "badge_no": None, "leadership": True})
    for officer in officers:
        officer["leadership"] = bool(officer.get("leadership")) or ctx.categories.is_leadership_title(
            officer.get("name")
        )
    return officers


def _seal_identity(*, ctx: IntakeContext, complainant: ComplainantIn) -> tuple[str | None, list[str]]:
    """The complainant's identity sealed with the identity key, and the keys to match them by."""
    if complainant.anonymous:
        return None, []
    sealed = ctx.vault.seal(
        Identity(
            name=complainant.name,
            phone=complainant.phone,
            id_number=complainant.id_number,
            email=str(complainant.email) if complainant.email else None,
            address=complainant.address,
        )
    )
    return sealed, ctx.vault.match_keys(phone=complainant.phone, id_number=complainant.id_number)


def _add_complaint(
    *,
    session: AsyncSession,
    complaint_in: ComplaintCreate,
    accusation: _Accusation,
    receipt: Receipt,
    received_at: datetime,
    sealed_identity: str | None,
    match_keys: list[str],
    repeated: RepeatLink,
    actor: Principal,
) -> Complaint:
    complainant, accused = complaint_in.complainant, complaint_in.accused
    complaint = new_row(
        Complaint,
        tracking_code=receipt.tracking_code,
        query_secret_hash=receipt.query_secret_hash,
        **complaint_in.model_dump(include=RECORDED_AS_GIVEN),
        received_at=received_at,
        anonymous=complainant.anonymous,
        identity_sealed=sealed_identity,
        name_masked=None if complainant.anonymous else mask_name(complainant.name),
        phone_masked=None if complainant.anonymous else mask_phone(complainant.phone),
        accused_unit=accused.unit,
        accused_unit_code=accusation.accused_unit_code,
        county_code=accused.county_code,
        accused_is_inspection_team=accusation.accused_is_team,
        officers=accusation.officers,
        allegations=accusation.allegations,
        injury_or_death=accusation.injury_or_death,
        repeat_of=repeated.repeat_of,
        repeat_after_rejection=bool(repeated.earlier and repeated.earlier.last_rating == Rating.UNSATISFIED),
        linked_repeat=repeated.linked,
        created_by=actor.username,
    )
    session.add(complaint)
    for key in match_keys:
        session.add(new_row(ComplainantKey, complaint_id=complaint.id, match_key=key))
    return complaint


def _key_clue_hints(*, accusation: _Accusation, complaint: Complaint, repeated: RepeatLink) -> list[str]:
    """Why the operator should treat this complaint as a key clue, if they should."""
    hints = []
    if accusation.any_serious:
        hints.append("涉及严重类别（重点线索）")
    if accusation.injury_or_death:
        hints.append("陈述中提及受伤或死亡（重点线索）")
    if any(o.get("leadership") for o in accusation.officers):
        hints.append("被投诉人为单位领导（重点线索）")
    if accusation.accused_is_team:
        hints.append("被投诉单位为督察部门（重点线索）")
    if complaint.repeat_after_rejection:
        hints.append("不满意答复后的重复投诉（重点线索）")
    elif repeated.earlier and repeated.linked:
        hints.append(
            f"重复件：{repeated.earlier.tracking_code} 正在办理，本次来电已关联该件，不另行分派，答复时一并告知"
        )
    elif repeated.earlier:
        hints.append(f"重复件：与 {repeated.earlier.tracking_code} 为同一投诉人、同一被投诉单位")
    return hints


async def _record_received(
    *,
    session: AsyncSession,
    complaint: Complaint,
    accusation: _Accusation,
    actor: Principal,
    correlation_id: str | None,
) -> None:
    await record_audited(
        session,
        ComplaintReceived(
            case_id=complaint.id,
            correlation_id=correlation_id,
            actor=actor.username,
            **complaint.model_dump(include=RECEIVED_FIELDS),
            accused_is_inspection_team=accusation.accused_is_team,
            officers=[OfficerRef(**o) for o in accusation.officers],
            allegations=[
                AllegationRef(category=r["category"], serious=r["serious"]) for r in accusation.allegations
            ],
            summary=complaint.account,
            injury_or_death=accusation.injury_or_death,
        ),
        action="complaint_received",
        # The operator's reason for recording a repeat of an open complaint as a new matter.
        reason=complaint.new_matter_reason,
        detail={
            "tracking_code": complaint.tracking_code,
            "channel": complaint.channel,
            "repeat_of": complaint.repeat_of,
            "linked_repeat": complaint.linked_repeat,
            "new_matter": complaint.new_matter_reason is not None,
        },
    )


async def list_complaints(
    *,
    session: AsyncSession,
    vault: IdentityVault,
    phone: str | None = None,
    tracking_code: str | None = None,
    page: Page,
) -> list[Complaint]:
    """The complaints found, newest first, a page by keyset (received_at, id), with the total."""
    query = select(Complaint)
    if tracking_code:
        query = query.where(col(Complaint.tracking_code) == tracking_code.strip().upper())
    if phone:
        key = vault.phone_key(phone)
        query = query.where(
            col(Complaint.id).in_(select(ComplainantKey.complaint_id).where(ComplainantKey.match_key == key))
        )
    keys = (Key(col(Complaint.received_at), descending=True), Key(col(Complaint.id), descending=True))
    return await page.rows(session, query, keys)


async def get_complaint(*, session: AsyncSession, complaint_id: str) -> Complaint:
    complaint = await session.get(Complaint, complaint_id)
    if complaint is None:
        raise NotFound(COMPLAINT_NOT_FOUND)
    return complaint


async def visible_complaint(*, session: AsyncSession, complaint_id: str, principal: Principal) -> Complaint:
    """The complaint, if ``principal`` may see it: an inspector sees only their team's."""
    complaint = await get_complaint(session=session, complaint_id=complaint_id)
    if principal.role == Role.INSPECTOR and complaint.assigned_team_code != principal.team_code:
        # Another team's matter does not exist as far as this inspector can tell.
        raise NotFound(COMPLAINT_NOT_FOUND)
    return complaint
