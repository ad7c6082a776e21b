"""Intake's business logic: recording complaints and suggestions, finding earlier matters.

Every function takes keyword-only, typed arguments and does its work inside the
caller's transaction; the caller commits, so the record and its outgoing event
land together.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.identity import (
    Identity,
    IdentityVault,
    mask_name,
    mask_phone,
    new_query_secret,
    random_code,
)
from services.intake.models import ComplainantKey, Complaint, IdentityAccess, Suggestion
from services.intake.schemas import (
    ComplaintCreate,
    EarlierMatter,
    ReclassifyIn,
    ReclassifyOut,
    SuggestionCreate,
)
from shared.audit import audit
from shared.auth import Principal, query_secret_hash
from shared.db import built_once, new_row, pending_rows, table_of, utcnow
from shared.errors import FieldProblems
from shared.events import AllegationRef, ComplaintReceived, MatterReclassified, OfficerRef, SuggestionReceived
from shared.outbox import record_event
from shared.reference import CategoryBook, Organisation
from shared.workcalendar import SHANGHAI

CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class IntakeContext:
    """What intake's logic needs besides the session: keys and reference data."""

    vault: IdentityVault
    signing_key: str
    organisation: Organisation
    categories: CategoryBook
    repeat_window: timedelta
    account_max_chars: int


@dataclass(frozen=True)
class NewComplaint:
    complaint: Complaint
    query_secret: str
    earlier: list[EarlierMatter]
    key_clue_hints: list[str]


def new_tracking_code(prefix: str, now: datetime) -> str:
    return f"{prefix}{now.astimezone(SHANGHAI):%y%m%d}{random_code(6)}"


def _check_reference_data(*, ctx: IntakeContext, complaint_in: ComplaintCreate, now: datetime) -> None:
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
    received = complaint_in.received_at or now
    if received > now + CLOCK_SKEW:
        problems.append(("received_at", "受理时间不能晚于当前时间", "received_at is in the future"))
    if complaint_in.incident_at is not None:
        if complaint_in.incident_at > now + CLOCK_SKEW:
            problems.append(("incident_at", "事发时间不能晚于当前时间", "incident_at is in the future"))
        elif complaint_in.incident_at > received + CLOCK_SKEW:
            problems.append(("incident_at", "事发时间不能晚于受理时间", "incident_at is after received_at"))
    if problems:
        raise FieldProblems(problems)


@dataclass(frozen=True)
class PriorComplaint:
    """What the repeat check and the operator's hint need of an earlier complaint."""

    id: str
    tracking_code: str
    received_at: datetime
    accused_unit: str
    county_code: str
    status: str
    last_rating: str | None


# Complaint's columns of the same names, in the same order.
_PRIOR_FIELDS = tuple(f.name for f in fields(PriorComplaint))


async def _one_complainant_at_a_time(*, session: AsyncSession, match_keys: list[str]) -> None:
    """On PostgreSQL, hold the person's keys until commit, so their concurrent complaints queue.

    Two operators recording the same person at the same moment would otherwise each miss the
    other's uncommitted complaint, and neither would be marked a repeat.  SQLite has one
    writer at a time, and its group commit shows a request the earlier ones of its group.
    """
    if not match_keys or session.sync_session.get_bind().dialect.name != "postgresql":
        return
    connection = await session.connection()
    for key in sorted(match_keys):  # one order everywhere, so two requests cannot deadlock
        # The keys are hex HMACs: their first 60 bits are as good a lock id as any.
        await connection.execute(_advisory_lock(), {"lock_id": int(key[:15], 16)})


@built_once
def _advisory_lock() -> sa.Select[Any]:
    return sa.select(func.pg_advisory_xact_lock(sa.bindparam("lock_id", type_=sa.BigInteger)))


@built_once
def _earlier_query(limit: int) -> sa.Select[Any]:
    complaints, keys = table_of(Complaint), table_of(ComplainantKey)
    return (
        sa.select(*(complaints.c[name] for name in _PRIOR_FIELDS))
        .join(keys, keys.c.complaint_id == complaints.c.id)
        .where(keys.c.match_key.in_(sa.bindparam("match_keys", expanding=True)))
        .order_by(complaints.c.received_at.desc())
        .limit(limit)
    )


async def find_earlier(
    *, session: AsyncSession, match_keys: list[str], limit: int = 20
) -> list[PriorComplaint]:
    """The complaints filed by the same person (by keyed hash), newest first.

    Only the columns the repeat check and the operator's hint need: loading whole rows (the
    account, the officers) made this query cost a quarter more (measured with py-spy).
    """
    if not match_keys:
        return []
    # A Core query on the session's connection: the ORM's costs more for the same rows, and the
    # request has nothing pending yet that it would have to flush first.
    connection = await session.connection()
    found = [
        PriorComplaint(*row)
        for row in await connection.execute(_earlier_query(limit), {"match_keys": match_keys})
    ]
    # Complaints recorded earlier in the same group commit are not flushed yet.
    wanted = set(match_keys)
    pending_ids = {k.complaint_id for k in pending_rows(session, ComplainantKey) if k.match_key in wanted}
    if pending_ids:
        found += [
            PriorComplaint(*(getattr(c, name) for name in _PRIOR_FIELDS))
            for c in pending_rows(session, Complaint)
            if c.id in pending_ids
        ]
        found.sort(key=lambda prior: prior.received_at, reverse=True)
    seen: dict[str, PriorComplaint] = {}
    for prior in found[:limit]:
        seen.setdefault(prior.id, prior)
    return list(seen.values())


def as_earlier(complaint: PriorComplaint) -> EarlierMatter:
    return EarlierMatter(
        id=complaint.id,
        tracking_code=complaint.tracking_code,
        received_at=complaint.received_at,
        accused_unit=complaint.accused_unit,
        status=complaint.status,
        last_rating=complaint.last_rating,
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


async def create_complaint(
    *,
    session: AsyncSession,
    ctx: IntakeContext,
    complaint_in: ComplaintCreate,
    actor: Principal,
    correlation_id: str | None,
) -> NewComplaint:
    now = utcnow()
    _check_reference_data(ctx=ctx, complaint_in=complaint_in, now=now)
    organisation, categories = ctx.organisation, ctx.categories
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
        assert category is not None
        row["category"] = category.name
        row["serious"] = category.serious
    officers = _officers(complaint_in, ctx)
    unit_county = organisation.county_of_unit(accused.unit)
    accused_is_team = "督察" in accused.unit
    injury = categories.mentions_injury_or_death(complaint_in.account)

    complainant = complaint_in.complainant
    sealed = None
    match_keys: list[str] = []
    if not complainant.anonymous:
        sealed = ctx.vault.seal(
            Identity(
                name=complainant.name,
                phone=complainant.phone,
                id_number=complainant.id_number,
                email=str(complainant.email) if complainant.email else None,
                address=complainant.address,
            )
        )
        match_keys = ctx.vault.match_keys(phone=complainant.phone, id_number=complainant.id_number)

    received_at = complaint_in.received_at or now
    await _one_complainant_at_a_time(session=session, match_keys=match_keys)
    earlier = await find_earlier(session=session, match_keys=match_keys)
    repeat_of: PriorComplaint | None = None
    window_start = received_at - ctx.repeat_window
    for candidate in earlier:
        # The same unit by name: another station of the same county bureau is another matter.
        same_unit = candidate.accused_unit.strip() == accused.unit.strip()
        if (
            same_unit
            and candidate.county_code == accused.county_code
            and candidate.received_at >= window_start
        ):
            repeat_of = candidate
            break
    repeat_after_rejection = bool(repeat_of and repeat_of.last_rating == "unsatisfied")

    tracking_code = new_tracking_code("C", received_at)
    query_secret = new_query_secret()
    complaint = new_row(
        Complaint,
        tracking_code=tracking_code,
        query_secret_hash=query_secret_hash(
            signing_key=ctx.signing_key, tracking_code=tracking_code, query_secret=query_secret
        ),
        channel=complaint_in.channel,
        platform_ticket_no=complaint_in.platform_ticket_no,
        received_at=received_at,
        anonymous=complainant.anonymous,
        identity_sealed=sealed,
        name_masked=None if complainant.anonymous else mask_name(complainant.name),
        phone_masked=None if complainant.anonymous else mask_phone(complainant.phone),
        accused_unit=accused.unit,
        accused_unit_code=unit_county.code if unit_county else None,
        county_code=accused.county_code,
        accused_is_inspection_team=accused_is_team,
        officers=officers,
        allegations=allegation_rows,
        attachments=[a.model_dump() for a in complaint_in.attachments],
        incident_at=complaint_in.incident_at,
        place=complaint_in.place,
        account=complaint_in.account,
        injury_or_death=injury,
        repeat_of=repeat_of.id if repeat_of else None,
        repeat_after_rejection=repeat_after_rejection,
        created_by=actor.username,
    )
    session.add(complaint)
    for key in match_keys:
        session.add(new_row(ComplainantKey, complaint_id=complaint.id, match_key=key))

    hints = []
    if any(c and c.serious for c in resolved):
        hints.append("涉及严重类别（重点线索）")
    if injury:
        hints.append("陈述中提及受伤或死亡（重点线索）")
    if any(o.get("leadership") for o in officers):
        hints.append("被投诉人为单位领导（重点线索）")
    if accused_is_team:
        hints.append("被投诉单位为督察部门（重点线索）")
    if repeat_after_rejection:
        hints.append("不满意答复后的重复投诉（重点线索）")
    elif repeat_of:
        hints.append(f"重复件：与 {repeat_of.tracking_code} 为同一投诉人、同一被投诉单位")

    record_event(
        session,
        ComplaintReceived(
            case_id=complaint.id,
            correlation_id=correlation_id,
            actor=actor.username,
            tracking_code=tracking_code,
            query_secret_hash=complaint.query_secret_hash,
            channel=complaint.channel,
            received_at=received_at,
            anonymous=complaint.anonymous,
            accused_unit=complaint.accused_unit,
            accused_unit_code=complaint.accused_unit_code,
            county_code=complaint.county_code,
            accused_is_inspection_team=accused_is_team,
            officers=[OfficerRef(**o) for o in officers],
            allegations=[
                AllegationRef(category=r["category"], serious=r["serious"]) for r in allegation_rows
            ],
            incident_at=complaint.incident_at,
            place=complaint.place,
            summary=complaint.account,
            injury_or_death=injury,
            repeat_of=complaint.repeat_of,
            repeat_after_rejection=repeat_after_rejection,
            supervisor_flag=complaint.supervisor_flag,
        ),
    )
    await audit(
        session,
        new_case=True,
        case_id=complaint.id,
        action="complaint_received",
        actor=actor.username,
        detail={
            "tracking_code": tracking_code,
            "channel": complaint.channel,
            "repeat_of": complaint.repeat_of,
        },
    )
    return NewComplaint(
        complaint=complaint,
        query_secret=query_secret,
        earlier=[as_earlier(e) for e in earlier],
        key_clue_hints=hints,
    )


async def create_suggestion(
    *,
    session: AsyncSession,
    signing_key: str,
    suggestion_in: SuggestionCreate,
    actor: Principal,
    correlation_id: str | None,
) -> tuple[Suggestion, str]:
    now = utcnow()
    received_at = suggestion_in.received_at or now
    if received_at > now + CLOCK_SKEW:
        raise FieldProblems([("received_at", "收到时间不能晚于当前时间", "received_at is in the future")])
    duplicate = (
        await session.exec(
            select(Suggestion.id).where(
                Suggestion.session == suggestion_in.session, Suggestion.number == suggestion_in.number
            )
        )
    ).first()
    if duplicate:
        raise FieldProblems(
            [
                (
                    "number",
                    f"{suggestion_in.session}第{suggestion_in.number}号已登记，同一届次编号不能重复",
                    "this number is already registered in this session",
                )
            ],
            status_code=409,
        )
    tracking_code = new_tracking_code("S", received_at)
    query_secret = new_query_secret()
    suggestion = Suggestion(
        tracking_code=tracking_code,
        query_secret_hash=query_secret_hash(
            signing_key=signing_key, tracking_code=tracking_code, query_secret=query_secret
        ),
        kind=suggestion_in.kind,
        session=suggestion_in.session,
        number=suggestion_in.number,
        title=suggestion_in.title,
        text=suggestion_in.text,
        deputy_name=suggestion_in.deputy.name,
        deputy_delegation=suggestion_in.deputy.delegation,
        deputy_phone=suggestion_in.deputy.phone,
        co_signers=[s.strip() for s in suggestion_in.co_signers if s.strip()],
        lead_unit=suggestion_in.lead_unit,
        co_units=[u.strip() for u in suggestion_in.co_units if u.strip()],
        received_at=received_at,
        complex_matter=suggestion_in.complex_matter,
        created_by=actor.username,
    )
    session.add(suggestion)
    await session.flush()
    record_event(
        session,
        SuggestionReceived(
            case_id=suggestion.id,
            correlation_id=correlation_id,
            actor=actor.username,
            tracking_code=tracking_code,
            query_secret_hash=suggestion.query_secret_hash,
            kind=suggestion_in.kind,
            session=suggestion.session,
            number=suggestion.number,
            title=suggestion.title,
            text=suggestion.text,
            deputy_name=suggestion.deputy_name,
            deputy_delegation=suggestion.deputy_delegation,
            co_signers=suggestion.co_signers,
            lead_unit=suggestion.lead_unit,
            co_units=suggestion.co_units,
            received_at=received_at,
            complex_matter=suggestion.complex_matter,
        ),
    )
    await audit(session, case_id=suggestion.id, action="suggestion_received", actor=actor.username)
    return suggestion, query_secret


async def list_complaints(
    *,
    session: AsyncSession,
    vault: IdentityVault,
    phone: str | None = None,
    tracking_code: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Complaint]:
    query = select(Complaint).order_by(col(Complaint.received_at).desc()).limit(limit).offset(offset)
    if tracking_code:
        query = query.where(func.upper(Complaint.tracking_code) == tracking_code.strip().upper())
    if phone:
        key = vault.phone_key(phone)
        query = query.where(
            col(Complaint.id).in_(select(ComplainantKey.complaint_id).where(ComplainantKey.match_key == key))
        )
    return list(await session.exec(query))


async def record_identity_access(
    *, session: AsyncSession, complaint_id: str, principal: Principal, purpose: str
) -> None:
    session.add(
        IdentityAccess(
            complaint_id=complaint_id, accessor=principal.username, role=principal.role.value, purpose=purpose
        )
    )
    await audit(
        session, case_id=complaint_id, action="identity_read", actor=principal.username, reason=purpose
    )


async def identity_accesses(*, session: AsyncSession, complaint_id: str) -> list[IdentityAccess]:
    rows = await session.exec(
        select(IdentityAccess)
        .where(IdentityAccess.complaint_id == complaint_id)
        .order_by(col(IdentityAccess.id))
    )
    return list(rows)


async def find_suggestions(
    *, session: AsyncSession, tracking_code: str | None = None, limit: int = 50, offset: int = 0
) -> list[Suggestion]:
    query = select(Suggestion).order_by(col(Suggestion.received_at).desc()).limit(limit).offset(offset)
    if tracking_code:
        query = query.where(or_(func.upper(Suggestion.tracking_code) == tracking_code.strip().upper()))
    return list(await session.exec(query))


CLOSED_STATUSES = ("answered", "closed", "reclassified")


async def reclassify(
    *,
    session: AsyncSession,
    ctx: IntakeContext,
    matter: Complaint | Suggestion,
    reclassify_in: ReclassifyIn,
    actor: Principal,
    correlation_id: str | None,
) -> ReclassifyOut:
    from_kind = "complaint" if isinstance(matter, Complaint) else "suggestion"
    if matter.status in CLOSED_STATUSES:
        raise FieldProblems(
            [
                (
                    "status",
                    "已答复、已结案或已转类的事项不能再转类",
                    "this matter can no longer be reclassified",
                )
            ],
            status_code=409,
        )
    if reclassify_in.to_kind == from_kind:
        raise FieldProblems([("to_kind", "目标类别与原类别相同", "the matter already is of that kind")])
    if from_kind == "suggestion" and reclassify_in.to_kind == "citizen_suggestion":
        raise FieldProblems(
            [
                (
                    "to_kind",
                    "代表建议不能转为群众建议",
                    "a deputy suggestion cannot become a citizen suggestion",
                )
            ]
        )
    out = ReclassifyOut(id=matter.id, status="reclassified", to_kind=reclassify_in.to_kind)
    if reclassify_in.to_kind == "suggestion":
        assert reclassify_in.suggestion is not None
        suggestion, secret = await create_suggestion(
            session=session,
            signing_key=ctx.signing_key,
            suggestion_in=reclassify_in.suggestion,
            actor=actor,
            correlation_id=correlation_id,
        )
        suggestion.reclassified_from = matter.id
        out.new_case_id, out.tracking_code, out.query_secret = suggestion.id, suggestion.tracking_code, secret
    elif reclassify_in.to_kind == "complaint":
        assert reclassify_in.complaint is not None
        created = await create_complaint(
            session=session,
            ctx=ctx,
            complaint_in=reclassify_in.complaint,
            actor=actor,
            correlation_id=correlation_id,
        )
        out.new_case_id, out.tracking_code, out.query_secret = (
            created.complaint.id,
            created.complaint.tracking_code,
            created.query_secret,
        )
    matter.status = "reclassified"
    session.add(matter)
    record_event(
        session,
        MatterReclassified(
            case_id=matter.id,
            correlation_id=correlation_id,
            actor=actor.username,
            from_kind=from_kind,
            to_kind=reclassify_in.to_kind,
            new_case_id=out.new_case_id,
            forwarded_to=(reclassify_in.forwarded_to or "").strip() or None,
            reason=reclassify_in.reason.strip(),
        ),
    )
    await audit(
        session,
        case_id=matter.id,
        action="reclassified",
        actor=actor.username,
        reason=reclassify_in.reason,
        detail={
            "to_kind": reclassify_in.to_kind,
            "new_case_id": out.new_case_id,
            "forwarded_to": reclassify_in.forwarded_to,
        },
    )
    return out


async def repeat_statistics(*, session: AsyncSession, weeks: int) -> dict[str, object]:
    since = utcnow() - timedelta(weeks=weeks)
    rows = await session.exec(
        select(Complaint.county_code, Complaint.assigned_team_code, Complaint.repeat_of).where(
            Complaint.received_at >= since, Complaint.status != "reclassified"
        )
    )
    by_county: dict[str, dict[str, int]] = {}
    by_team: dict[str, dict[str, int]] = {}
    for county_code, team_code, repeat_of in rows:
        for table, key in ((by_county, county_code), (by_team, team_code or "unassigned")):
            counts = table.setdefault(key, {"received": 0, "repeats": 0})
            counts["received"] += 1
            counts["repeats"] += 1 if repeat_of else 0
    return {"since": since.isoformat(), "weeks": weeks, "by_county": by_county, "by_team": by_team}
