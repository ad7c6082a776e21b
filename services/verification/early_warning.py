"""Early warning (预警): an officer (by badge number) or an accused unit with too many complaints,
or too many substantiated ones, within a window.

The thresholds are data: defaults in ``shared/data/early_warning.json``, changed by supervisors
(with a recorded reason) in a table.  Each matter counted against a subject is a ``WarningHit``
(unique per subject, measure and matter, so a redelivered event counts once); a warning is raised
when a matter takes the count from below the threshold to the threshold: once per crossing, the
crossing matter naming it, and ``EarlyWarningRaised`` recorded in the same transaction.
"""

from __future__ import annotations

import json
from calendar import monthrange
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Insert, bindparam, func, insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from services.verification.models import (
    EarlyWarning,
    Finding,
    MatterSnapshot,
    Task,
    WarningHit,
    WarningThreshold,
)
from services.verification.schemas import SUBSTANTIATED, ThresholdsIn
from shared.audit import audit, record_audited
from shared.auth import Principal
from shared.db import built_once, serialise_on, table_of
from shared.errors import FieldProblems
from shared.events import ComplaintReceived, EarlyWarningRaised
from shared.reference import DATA_DIR
from shared.states import CaseKind

DEFAULT_WARNINGS_FILE = DATA_DIR / "early_warning.json"
MEASURES = ("complaints", "substantiated")
SUBJECT_LABELS = {"officer": "民警", "unit": "单位"}
# The audit trail is per matter; a change of the thresholds is filed under this key.
THRESHOLDS_AUDIT_KEY = "early-warning-thresholds"
_THRESHOLDS_KEY = "early_warning_thresholds"


@dataclass(frozen=True)
class Threshold:
    measure: str
    label: str
    count: int
    window_months: int
    rule: str
    source: str
    reason: str | None = None
    updated_by: str | None = None
    updated_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "measure": self.measure,
            "label": self.label,
            "count": self.count,
            "window_months": self.window_months,
            "rule": self.rule,
            "source": self.source,
            "reason": self.reason,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "default": self.updated_by is None,
        }


@lru_cache(maxsize=4)
def default_thresholds(path: Path = DEFAULT_WARNINGS_FILE) -> dict[str, Threshold]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {
        t["measure"]: Threshold(
            measure=t["measure"],
            label=t["label"],
            count=int(t["count"]),
            window_months=int(t["window_months"]),
            rule=t["rule"],
            source=t["source"],
        )
        for t in data["thresholds"]
    }


async def thresholds(*, session: AsyncSession) -> dict[str, Threshold]:
    """The thresholds in force: a supervisor's change where there is one, else the default."""
    result = dict(default_thresholds())
    for row in await session.exec(select(WarningThreshold)):
        base = result.get(row.measure)
        if base is None:
            continue
        result[row.measure] = Threshold(
            measure=row.measure,
            label=base.label,
            count=row.count,
            window_months=row.window_months,
            rule=f"{base.label}：{row.window_months}个月内{row.count}次（督察支队调整）",
            source=base.source,
            reason=row.reason,
            updated_by=row.updated_by,
            updated_at=row.updated_at,
        )
    return result


async def _thresholds_of_transaction(session: AsyncSession) -> dict[str, Threshold]:
    """The thresholds, read once per session: a consumer's slice counts many complaints with them."""
    info = session.sync_session.info
    cached: dict[str, Threshold] | None = info.get(_THRESHOLDS_KEY)
    if cached is None:
        cached = info[_THRESHOLDS_KEY] = await thresholds(session=session)
    return cached


async def set_thresholds(
    *, session: AsyncSession, principal: Principal, thresholds_in: ThresholdsIn, now: datetime
) -> dict[str, Threshold]:
    unknown = [t.measure for t in thresholds_in.thresholds if t.measure not in MEASURES]
    if unknown:
        raise FieldProblems([("thresholds", f"未知的预警指标：{'、'.join(unknown)}", "unknown measure")])
    reason = thresholds_in.reason.strip()
    for change in thresholds_in.thresholds:
        row = await session.get(WarningThreshold, change.measure)
        before = (row.count, row.window_months) if row else None
        row = row or WarningThreshold(
            measure=change.measure,
            count=change.count,
            window_months=change.window_months,
            reason="",
            updated_by="",
        )
        row.count = change.count
        row.window_months = change.window_months
        row.reason = reason
        row.updated_by = principal.username
        row.updated_at = now
        session.add(row)
        await audit(
            session,
            case_id=THRESHOLDS_AUDIT_KEY,
            action="warning_threshold_changed",
            actor=principal.username,
            reason=reason,
            detail={
                "measure": change.measure,
                "before": list(before) if before else None,
                "count": change.count,
                "window_months": change.window_months,
            },
        )
    await session.flush()
    session.sync_session.info.pop(_THRESHOLDS_KEY, None)
    return await thresholds(session=session)


def _months_before(moment: datetime, months: int) -> datetime:
    month = moment.month - months
    year = moment.year + (month - 1) // 12
    month = (month - 1) % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, monthrange(year, month)[1]))


@dataclass(frozen=True)
class _Subject:
    kind: str
    key: str
    county: str | None

    def columns(self, measure: str) -> dict[str, Any]:
        """What a hit and a warning both say of whom they count and what: the counter's key."""
        return {
            "subject_kind": self.kind,
            "subject_key": self.key,
            "measure": measure,
            "county_code": self.county,
        }


def _same_subject() -> Any:
    return (
        (col(WarningHit.subject_kind) == bindparam("kind"))
        & (col(WarningHit.subject_key) == bindparam("key"))
        & (col(WarningHit.measure) == bindparam("measure"))
    )


def _in_window() -> Any:
    return (col(WarningHit.at) > bindparam("start")) & (col(WarningHit.at) <= bindparam("at"))


@built_once
def _standing_query(enough: int) -> Any:
    """Whether the matter counts against the subject already, and the earlier matters in the window.

    Counting stops at ``enough`` rows: only "one short of the threshold" matters, and a subject
    with many matters (a busy unit) must not cost a scan of all of them per complaint.
    """
    counted = (
        select(WarningHit.id)
        .where(_same_subject(), col(WarningHit.case_id) == bindparam("case_id"))
        .limit(1)
        .scalar_subquery()
    )
    capped = select(WarningHit.id).where(_same_subject(), _in_window()).limit(enough).subquery()
    return select(counted, select(func.count()).select_from(capped).scalar_subquery())


@built_once
def _window_cases_query() -> SelectOfScalar[str]:
    return (
        select(WarningHit.case_id)
        .where(_same_subject(), _in_window())
        .order_by(col(WarningHit.at), col(WarningHit.id))
    )


@built_once
def _hit_insert() -> Insert:
    # On the table: nothing reads the hit back as a row, and the ORM's flush of a row with a
    # generated id cost several times this statement (one per complaint, py-spy).
    return insert(table_of(WarningHit))


def _lock_name(subject: _Subject, measure: str) -> str:
    return f"early-warning:{subject.kind}:{measure}:{subject.key}"


async def _count(
    session: AsyncSession,
    subjects: list[_Subject],
    *,
    measure: str,
    case_id: str,
    at: datetime,
    threshold: Threshold,
) -> None:
    """Count ``case_id`` against each subject; raise the warning of each subject this matter
    brings to its threshold.

    Two matters about one subject counted at once (two instances) take turns, so the second sees
    the first and only one of them crosses the threshold (PostgreSQL; SQLite has one writer).  The
    subjects' locks are taken in one statement, and their hits inserted in one: each subject's
    count reads only its own hits, so the others' inserted later change nothing it reads.
    """
    if not subjects:
        return
    await serialise_on(session, *(_lock_name(subject, measure) for subject in subjects))
    start = _months_before(at, threshold.window_months)
    standing = _standing_query(max(threshold.count, 1))
    hits: list[dict[str, Any]] = []
    for subject in subjects:
        window: dict[str, Any] = {
            "kind": subject.kind,
            "key": subject.key,
            "measure": measure,
            "start": start,
            "at": at,
        }
        counted, before = (await session.exec(standing, params={**window, "case_id": case_id})).one()
        if counted is not None:
            continue
        hits.append({**subject.columns(measure), "case_id": case_id, "at": at})
        after = before + 1
        if before < threshold.count <= after:
            # Read before the hit is inserted, which would put it into the window.
            earlier = list(await session.exec(_window_cases_query(), params=window))
            await _raise(
                session,
                subject,
                measure=measure,
                case_ids=[*earlier, case_id],
                at=at,
                count=after,
                threshold=threshold,
            )
    if hits:
        await session.exec(_hit_insert(), params=hits)


async def _raise(
    session: AsyncSession,
    subject: _Subject,
    *,
    measure: str,
    case_ids: list[str],
    at: datetime,
    count: int,
    threshold: Threshold,
) -> None:
    """The warning of a subject whose count this matter (the last of ``case_ids``) brought to the
    threshold, and its event."""
    kind, key = subject.kind, subject.key
    warning = EarlyWarning(
        **subject.columns(measure),
        count=count,
        threshold=threshold.count,
        window_months=threshold.window_months,
        crossing_case_id=case_ids[-1],
        case_ids=case_ids,
        raised_at=at,
    )
    session.add(warning)
    await record_audited(
        session,
        EarlyWarningRaised(
            case_id=case_ids[-1],
            actor="verification",
            subject_kind="officer" if kind == "officer" else "unit",
            measure="complaints" if measure == "complaints" else "substantiated",
            **warning.model_dump(
                include={"subject_key", "county_code", "count", "threshold", "window_months", "case_ids"}
            ),
        ),
        action="early_warning_raised",
        reason=f"{SUBJECT_LABELS[kind]}{key}：{threshold.window_months}个月内{threshold.label}{count}次",
        detail={"subject_kind": kind, "measure": measure, "case_ids": case_ids},
    )


def _badges(officers: list[dict[str, Any]]) -> list[str]:
    return sorted(
        {str(o["badge_no"]).strip() for o in officers if o.get("badge_no") and str(o["badge_no"]).strip()}
    )


async def count_complaint(*, session: AsyncSession, event: ComplaintReceived) -> None:
    """A complaint counts against each accused officer with a badge number and against the unit.
    A linked repeat (重复件) of an open complaint is the same matter: it does not count again."""
    if event.linked_repeat:
        return
    threshold = (await _thresholds_of_transaction(session))["complaints"]
    county = event.county_code
    subjects = [_Subject("officer", b, county) for b in _badges([o.model_dump() for o in event.officers])]
    if event.accused_unit.strip():
        subjects.append(_Subject("unit", event.accused_unit.strip(), county))
    await _count(
        session,
        subjects,
        measure="complaints",
        case_id=event.case_id,
        at=event.received_at,
        threshold=threshold,
    )


async def count_substantiated(*, session: AsyncSession, task: Task, finding: Finding, at: datetime) -> None:
    """A substantiated complaint counts against the unit, and against each officer the finding
    holds substantiated (the finding as a whole where it names no officer one by one)."""
    if task.case_kind != CaseKind.COMPLAINT or finding.follow_up:
        return
    matter = await session.get(MatterSnapshot, task.case_id)
    if matter is None:
        return
    per_officer = {str(o.get("badge_no") or "").strip(): str(o.get("outcome")) for o in finding.per_officer}
    per_officer.pop("", None)
    named = _badges(matter.officers)
    badges = [b for b in named if per_officer.get(b, finding.outcome) in SUBSTANTIATED]
    badges += [b for b, outcome in per_officer.items() if outcome in SUBSTANTIATED and b not in named]
    county = matter.county_code
    subjects = [_Subject("officer", b, county) for b in badges]
    if finding.outcome in SUBSTANTIATED and matter.accused_unit:
        subjects.append(_Subject("unit", matter.accused_unit, county))
    if not subjects:
        return
    threshold = (await _thresholds_of_transaction(session))["substantiated"]
    await _count(session, subjects, measure="substantiated", case_id=task.case_id, at=at, threshold=threshold)


async def warnings(*, session: AsyncSession, county: str | None) -> list[dict[str, Any]]:
    """The warnings raised, newest first, each with the matters behind it (no complainant identity)."""
    query = select(EarlyWarning).order_by(col(EarlyWarning.raised_at).desc(), col(EarlyWarning.id).desc())
    if county:
        query = query.where(EarlyWarning.county_code == county)
    rows = list(await session.exec(query))
    case_ids = {c for w in rows for c in w.case_ids}
    matters = (
        {
            m.case_id: m
            for m in await session.exec(
                select(MatterSnapshot).where(col(MatterSnapshot.case_id).in_(case_ids))
            )
        }
        if case_ids
        else {}
    )
    tasks: dict[str, Task] = {}
    if case_ids:
        for task in await session.exec(
            select(Task).where(col(Task.case_id).in_(case_ids)).order_by(col(Task.created_at))
        ):
            tasks[task.case_id] = task
    defaults = default_thresholds()
    return [
        {
            "id": w.id,
            "subject_kind": w.subject_kind,
            "subject_label": SUBJECT_LABELS.get(w.subject_kind, w.subject_kind),
            "subject_key": w.subject_key,
            "measure": w.measure,
            "measure_label": defaults[w.measure].label if w.measure in defaults else w.measure,
            "county_code": w.county_code,
            "count": w.count,
            "threshold": w.threshold,
            "window_months": w.window_months,
            "raised_at": w.raised_at.isoformat(),
            "case_id": w.crossing_case_id,
            "matters": [_matter_entry(c, matters.get(c), tasks.get(c)) for c in w.case_ids],
        }
        for w in rows
    ]


def _matter_entry(case_id: str, matter: MatterSnapshot | None, task: Task | None) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "tracking_code": matter.tracking_code if matter else None,
        "title": matter.title if matter else None,
        "received_at": matter.received_at.isoformat() if matter else None,
        "task_id": task.id if task else None,
        "status": task.status if task else None,
    }
