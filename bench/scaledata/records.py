"""Verification's working records of a round: evidence (rows only, references to where the
originals are kept, no files), the deadline extension asked for (延期: requested, approved or
refused), and the rectification items (整改) of a substantiated finding, each with its own clock
until it is checked, as ``findings._add_rectifications`` and ``later_clocks`` start them.

Evidence and rectifications are drawn from a generator seeded by the matter's id, so they add rows
without changing any other plan; the extension is in the plan (it moves the due date)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from services.verification.later_clocks import RECTIFICATION, rectification_clock_name
from services.verification.models import Evidence, Extension, Rectification
from shared.events import ClockSet

from .common import pick
from .plan import SUBSTANTIATED, Matter, Round

if TYPE_CHECKING:
    from .verification import Builder

# Salts of the derived row ids (``common.sub_id``), clear of the ones common.py names.
EVIDENCE, RECTIFICATION_ITEM, EXTENSION = 0x80, 0x90, 0xA0
# Items of evidence per round that got as far as a claim: most keep two or three.
EVIDENCE_COUNT = [(0, 15), (1, 25), (2, 35), (3, 25)]
EVIDENCE_KINDS = [
    ("recording", "执法记录仪视频", "执法记录仪管理系统"),
    ("document", "接处警记录、案卷材料", "卷宗"),
    ("interview", "当事民警询问笔录", "督察支队档案室"),
    ("photo", "现场照片", "督察支队档案室"),
    ("other", "证人证言", "督察支队档案室"),
]
# A substantiated complaint's finding orders rectification in three cases of five, one or two items.
RECTIFICATION_SHARE = 0.6
RECTIFICATION_ITEMS = [
    ("规范执法行为，组织全员执法规范化培训", "所属派出所"),
    ("整改窗口服务态度，落实首问负责制", "所属单位"),
    ("补齐案件办理程序，依法及时处理", "案件主办单位"),
    ("开展警示教育，建立长效监督机制", "所属分局"),
]
CHECKER = "supervisor1"  # not the team whose work is being put right


def item_id(matter_id: str, salt: int) -> str:
    return str(UUID(int=UUID(matter_id).int ^ salt))


def round_records(builder: Builder, matter: Matter, rnd: Round, index: int) -> None:
    rng = random.Random(f"{matter.id}:{index}")
    if rnd.extension is not None:
        extension(builder, matter, rnd, index)
    if rnd.claimed_at is not None and matter.kind == "complaint":
        evidence(builder, matter, rnd, index, rng)
    substantiated = rnd.outcome in SUBSTANTIATED and rnd.concluded_at is not None
    if matter.kind == "complaint" and substantiated and rng.random() < RECTIFICATION_SHARE:
        rectifications(builder, matter, rnd, index, rng)


def evidence(builder: Builder, matter: Matter, rnd: Round, index: int, rng: random.Random) -> None:
    assert rnd.claimed_at is not None
    actor = f"inspector-{rnd.decision.team_code}"
    end = rnd.concluded_at or builder.world.now - timedelta(hours=1)
    for n in range(pick(rng, EVIDENCE_COUNT)):
        kind, description, where = EVIDENCE_KINDS[rng.randrange(len(EVIDENCE_KINDS))]
        at = rnd.claimed_at + (end - rnd.claimed_at) * rng.uniform(0.05, 0.9)
        evidence_id = item_id(matter.id, EVIDENCE + index * 4 + n)
        builder.rows.add(
            Evidence,
            {
                "id": evidence_id,
                "task_id": rnd.task_id,
                "kind": kind,
                "description": description,
                "reference": f"{where}（{matter.tracking_code}-{n + 1}）",
                "filename": None,
                "content_type": None,
                "size_bytes": None,
                "sha256": None,
                "added_by": actor,
                "added_at": at,
            },
        )
        builder.event(rnd.task_id, "evidence_added", actor, at, f"{kind}：{description}")
        builder.audit.append(
            builder.chain.entry(
                case_id=matter.id,
                action="evidence_added",
                actor=actor,
                at=at,
                detail={"evidence_id": evidence_id, "sha256": None, "kind": kind},
            )
        )


def extension(builder: Builder, matter: Matter, rnd: Round, index: int) -> None:
    plan = rnd.extension
    assert plan is not None
    actor = f"inspector-{rnd.decision.team_code}"
    reason = "涉及人员较多，需调取执法记录仪视频并询问相关证人"
    status = "pending" if plan.approved is None else ("approved" if plan.approved else "refused")
    note = None if plan.approved is None else ("同意延期" if plan.approved else "期限内可以办结，不予延期")
    builder.rows.add(
        Extension,
        {
            "id": item_id(matter.id, EXTENSION + index),
            "task_id": rnd.task_id,
            "case_id": matter.id,
            "clock": plan.clock,
            "days": plan.days,
            "reason": reason,
            "requested_by": actor,
            "requested_at": plan.requested_at,
            "status": status,
            "decided_by": "supervisor1" if plan.decided_at else None,
            "decided_at": plan.decided_at,
            "decision_note": note,
            "new_due_at": plan.new_due_at,
        },
    )
    builder.event(rnd.task_id, "extension_requested", actor, plan.requested_at, f"{plan.days}日：{reason}")
    builder.audit.append(
        builder.chain.entry(
            case_id=matter.id, action="extension_requested", actor=actor, at=plan.requested_at, reason=reason
        )
    )
    if plan.decided_at is None:
        return
    if plan.approved:
        assert plan.new_due_at is not None
        builder.event(
            rnd.task_id,
            "extension_approved",
            "supervisor1",
            plan.decided_at,
            f"期限延至{plan.new_due_at.isoformat()}",
        )
        detail = {"clock": plan.clock, "new_due_at": plan.new_due_at.isoformat(), "days": plan.days}
        entry = builder.chain.entry(
            case_id=matter.id,
            action="extension_approved",
            actor="supervisor1",
            at=plan.decided_at,
            reason=reason,
            detail=detail,
        )
    else:
        builder.event(rnd.task_id, "extension_refused", "supervisor1", plan.decided_at, note)
        entry = builder.chain.entry(
            case_id=matter.id,
            action="extension_refused",
            actor="supervisor1",
            at=plan.decided_at,
            reason=note,
        )
    builder.audit.append(entry)


def rectifications(builder: Builder, matter: Matter, rnd: Round, index: int, rng: random.Random) -> None:
    """One or two items, due thirty days after the conclusion; most checked done before then."""
    assert rnd.concluded_at is not None
    world = builder.world
    label, _period, rule, source = world.deadlines.later[RECTIFICATION]
    due = world.deadlines.later_clock(RECTIFICATION, calendar=world.calendar, start=rnd.concluded_at).due_at
    actor = f"inspector-{rnd.decision.team_code}"
    for n in range(1 + (rng.random() < 0.3)):
        text, owner = RECTIFICATION_ITEMS[rng.randrange(len(RECTIFICATION_ITEMS))]
        rid = item_id(matter.id, RECTIFICATION_ITEM + index * 2 + n)
        draw = rng.random()
        if draw < 0.85:
            status, checked = "done", rnd.concluded_at + (due - rnd.concluded_at) * rng.uniform(0.3, 0.95)
        elif draw < 0.95:
            status, checked = "done", due + timedelta(days=rng.uniform(1, 15))
        else:
            status, checked = "not_done", due + timedelta(days=rng.uniform(0, 3))
        checked_at: datetime | None = checked if checked < world.now - timedelta(hours=1) else None
        builder.rows.add(
            Rectification,
            {
                "id": rid,
                "task_id": rnd.task_id,
                "case_id": matter.id,
                "item": text,
                "owner": owner,
                "due_date": due,
                "status": status if checked_at else "open",
                "checked_by": CHECKER if checked_at else None,
                "checked_at": checked_at,
                "check_note": ("已整改到位" if status == "done" else "未按期整改") if checked_at else None,
                "added_by": actor,
                "added_at": rnd.concluded_at,
            },
        )
        clock = ClockSet(
            name=rectification_clock_name(rid),
            label=f"{label}：{text[:20]}",
            rule=rule,
            source=source,
            due_at=due,
        )
        builder.clock(matter, rnd, clock, stop=(checked_at,))
        if checked_at is not None:
            builder.audit.append(
                builder.chain.entry(
                    case_id=matter.id,
                    action=f"rectification_{status}",
                    actor=CHECKER,
                    at=checked_at,
                    reason="已整改到位" if status == "done" else "未按期整改",
                )
            )
