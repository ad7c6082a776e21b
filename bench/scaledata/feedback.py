"""Feedback's rows: the public projection, its timeline, answers and their deliveries, ratings, the
answer-approval and follow-up (回访) clocks, and the 待办 items the ladders left."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.feedback.clocks import REMINDER_AT_START_WORKING_DAYS
from services.feedback.clocks import STEPS as CLOCK_STEPS
from services.feedback.models import (
    Answer,
    CaseView,
    Delivery,
    RatingRow,
    TimelineEntry,
)
from shared.ladder import LadderPolicy

from .common import ANSWER, DELIVERY, FOLLOW_UP_ANSWER, AuditChain, Rows, World, sub_id
from .intake import Identities
from .plan import Matter, Round
from .todo import TodoItems

SERVICE = "service:feedback"
RATING_LABELS = {"satisfied": "满意", "basically_satisfied": "基本满意", "unsatisfied": "不满意"}
OUTCOME_WORDS = {
    "substantiated": "反映问题属实",
    "mostly_substantiated": "反映问题基本属实",
    "partly_substantiated": "反映问题部分属实",
    "unsubstantiated": "反映问题不属实",
    "unverifiable": "反映问题无法查实",
    "no_finding": "未作结论",
}
SIGNATURE = "周口市公安局督察支队"


def case_status(matter: Matter) -> str:
    if matter.linked_repeat:
        return "received"
    last = matter.last
    if last.concluded_at is None:
        return {"open": "routed", "claimed": "verifying", "in_review": "reviewing"}[last.task_status]
    if last.approved_at is None or (last.b_reply_at and last.b_approved_at is None):
        return "concluded"
    if last.awaiting_b_reply or (last.b_approved_at and last.b_rated_at is None):
        return "answered"
    return "closed" if last.rating in ("satisfied", "basically_satisfied") else "answered"


class Builder(TodoItems):
    def __init__(self, world: World, rows: Rows, chain: AuditChain, identities: Identities) -> None:
        self.world, self.rows, self.chain, self.identities = world, rows, chain, identities
        self.audit: list[dict[str, Any]] = []
        self.policy = LadderPolicy(
            calendar=world.calendar,
            steps=CLOCK_STEPS,
            reminder_working_days_before=REMINDER_AT_START_WORKING_DAYS,
        )
        self.counter = 0

    def timeline(self, case_id: str, stage: str, label: str, at: datetime) -> None:
        self.rows.add(TimelineEntry, {"case_id": case_id, "stage": stage, "label": label, "at": at})

    def matter(self, matter: Matter) -> None:
        status = case_status(matter)
        last = matter.last if matter.rounds else None
        account, name, delegation = matter.deputy
        team = last.decision.team_code if last else None
        self.rows.add(
            CaseView,
            {
                "case_id": matter.id,
                "case_kind": matter.kind,
                "tracking_code": matter.tracking_code,
                "query_secret_hash": matter.secret_hash,
                "status": status,
                "received_at": matter.received_at,
                "anonymous": matter.anonymous,
                "accused_unit": matter.accused_unit or None,
                "county_code": matter.county_code if matter.kind == "complaint" else None,
                "categories": [c for c, _ in matter.categories],
                "title": matter.title or None,
                "session": matter.session or None,
                "number": matter.number or None,
                "suggestion_kind": matter.suggestion_kind or None,
                "deputy_name": name or None,
                "deputy_delegation": delegation or None,
                "deputy_account": account or None,
                "lead_unit": matter.lead_unit or None,
                "team_code": team,
                "team_name": self.world.organisation.team_name(team) if team else None,
                "teams_so_far": [r.decision.team_code for r in matter.rounds],
                "clocks": view_clocks(last) if last else [],
                "round": len(matter.rounds) or 1,
                "reopen_count": max(0, len(matter.rounds) - 1),
                "outcome": last.outcome if last and last.concluded_at else None,
                "classification": last.classification if last else None,
                "awaiting_follow_up": bool(last and last.awaiting_b_reply),
                "closed_note": f"评价{RATING_LABELS[last.rating]}"
                if last and status == "closed" and last.rating
                else None,
                "repeat_of": matter.repeat_of.id if matter.linked_repeat and matter.repeat_of else None,
                "updated_at": self.world.now - timedelta(hours=1),
            },
        )
        received = "建议（提案）已登记" if matter.kind == "suggestion" else "投诉已受理"
        if matter.linked_repeat:
            received += "。您反映的问题此前已受理并正在办理，本次来电已合并办理（重复件），办理结果将一并告知"
            assert matter.repeat_of is not None
            self.timeline(matter.repeat_of.id, "repeat_call", "重复来电，已合并本件办理", matter.received_at)
        self.timeline(matter.id, "received", received, matter.received_at)
        for index, rnd in enumerate(matter.rounds):
            self.round(matter, rnd, index)

    def round(self, matter: Matter, rnd: Round, index: int) -> None:
        case_id = matter.id
        routed = "已交承办单位办理" if matter.kind == "suggestion" else "已分派督察部门核查"
        if index > 0:
            routed = "已重新分派，提级核查"
        self.timeline(case_id, "routed", routed, rnd.assigned_at)
        if rnd.claimed_at:
            self.timeline(case_id, "verifying", "核查（办理）中", rnd.claimed_at)
            if index == 0 and matter.kind == "complaint" and not matter.anonymous:
                self.acceptance_notice(matter, rnd.claimed_at)
        if rnd.task_status == "in_review":
            self.timeline(case_id, "reviewing", "核查结论复核中", rnd.claimed_at or rnd.assigned_at)
        if rnd.concluded_at is not None:
            self.answer(matter, rnd, index)

    def answer(self, matter: Matter, rnd: Round, index: int) -> None:
        """The round's answer: drafted at the conclusion, approved, delivered, followed up, rated."""
        assert rnd.concluded_at is not None
        case_id = matter.id
        self.timeline(case_id, "concluded", "已办结，待答复", rnd.concluded_at)
        answer_id = rnd.answer_id = sub_id(case_id, ANSWER + index)
        sms = matter.kind == "complaint" and not matter.anonymous
        text = (
            f"您好！您于{self.local(matter.received_at)}反映的问题，督察部门已依法依规进行核查。"
            f"核查结论：{OUTCOME_WORDS.get(rnd.outcome or '', '')}。\n查询码：{matter.tracking_code}\n{SIGNATURE}"
        )
        self.rows.add(
            Answer,
            {
                "id": answer_id,
                "case_id": case_id,
                "round": rnd.number,
                "source_event_id": sub_id(case_id, ANSWER + 8 + index),
                "follow_up": False,
                "status": "delivered" if rnd.approved_at else "pending_approval",
                "text": text,
                "outcome": rnd.outcome or "unsubstantiated",
                "classification": rnd.classification,
                "channel": ("sms" if sms else "none") if rnd.approved_at else None,
                "approved_by": "supervisor1" if rnd.approved_at else None,
                "approved_at": rnd.approved_at,
                "delivered_at": rnd.approved_at,
                "served_at": rnd.served_at,
                "created_at": rnd.concluded_at,
            },
        )
        approval = self.world.deadlines.later_clock(
            "answer_approval", calendar=self.world.calendar, start=rnd.concluded_at
        )
        self.clock(
            matter, "answer_approval", answer_id, approval, rnd.concluded_at, rnd.approved_at, "已审核发布"
        )
        if rnd.approved_at is None:
            return
        self.timeline(case_id, "answered", "已答复", rnd.approved_at)
        delivery_id = None
        if sms:
            delivery_id = self.delivery(
                matter,
                kind="answer",
                key=DELIVERY + 1 + index,
                answer_id=answer_id,
                subject=f"答复（查询码：{matter.tracking_code}）",
                text=text,
                at=rnd.approved_at,
                sent_at=rnd.served_at,
            )
            self.timeline(case_id, "delivered", "答复已通过短信送达", rnd.served_at or rnd.approved_at)
        self.audit.append(
            self.chain.entry(
                case_id=case_id,
                action="answer_approved",
                actor="supervisor1",
                at=rnd.approved_at,
                detail={"answer_id": answer_id, "delivery_id": delivery_id},
            )
        )
        if matter.kind == "complaint" and rnd.served_at:
            follow = self.world.deadlines.later_clock(
                "follow_up", calendar=self.world.calendar, start=rnd.served_at
            )
            self.clock(
                matter, "follow_up", answer_id, follow, rnd.served_at, rnd.follow_up_done_at, "已评价或已结案"
            )
        if rnd.rating and rnd.rated_at:
            self.rating(matter, rnd, answer_id)
        if rnd.b_reply_at:
            self.b_reply(matter, rnd, index)

    def b_reply(self, matter: Matter, rnd: Round, index: int) -> None:
        """The follow-up reply of a B-class suggestion: drafted, approved, rated by the deputy."""
        assert rnd.b_reply_at is not None
        case_id, answer_id = matter.id, sub_id(matter.id, FOLLOW_UP_ANSWER + index)
        self.timeline(case_id, "concluded", "已办结，待答复", rnd.b_reply_at)
        self.rows.add(
            Answer,
            {
                "id": answer_id,
                "case_id": case_id,
                "round": rnd.number,
                "source_event_id": sub_id(case_id, FOLLOW_UP_ANSWER + 8 + index),
                "follow_up": True,
                "status": "delivered" if rnd.b_approved_at else "pending_approval",
                "text": f"关于{matter.title}的后续办理情况：相关措施已落实到位。\n{SIGNATURE}",
                "outcome": "no_finding",
                "classification": "A",
                "channel": "none" if rnd.b_approved_at else None,
                "approved_by": "supervisor1" if rnd.b_approved_at else None,
                "approved_at": rnd.b_approved_at,
                "delivered_at": rnd.b_approved_at,
                "served_at": rnd.b_approved_at,
                "created_at": rnd.b_reply_at,
            },
        )
        approval = self.world.deadlines.later_clock(
            "answer_approval", calendar=self.world.calendar, start=rnd.b_reply_at
        )
        self.clock(
            matter, "answer_approval", answer_id, approval, rnd.b_reply_at, rnd.b_approved_at, "已审核发布"
        )
        if rnd.b_approved_at is None:
            return
        self.timeline(case_id, "answered", "已答复", rnd.b_approved_at)
        self.audit.append(
            self.chain.entry(
                case_id=case_id,
                action="answer_approved",
                actor="supervisor1",
                at=rnd.b_approved_at,
                detail={"answer_id": answer_id, "delivery_id": None},
            )
        )
        if rnd.b_rated_at is None:
            return
        account = matter.deputy[0]
        self.rows.add(
            RatingRow,
            {
                "case_id": case_id,
                "answer_id": answer_id,
                "round": rnd.number,
                "rating": "satisfied",
                "reason": None,
                "source": "deputy",
                "recorded_by": account,
                "at": rnd.b_rated_at,
            },
        )
        self.timeline(case_id, "rated", "评价：满意", rnd.b_rated_at)
        self.timeline(case_id, "closed", "已结案（评价满意）", rnd.b_rated_at)
        self.audit.append(
            self.chain.entry(
                case_id=case_id,
                action="rated",
                actor=account,
                at=rnd.b_rated_at,
                detail={"rating": "satisfied", "source": "deputy", "answer_id": answer_id},
            )
        )

    def rating(self, matter: Matter, rnd: Round, answer_id: str) -> None:
        source = "deputy" if matter.kind == "suggestion" else "operator"
        actor = matter.deputy[0] if matter.kind == "suggestion" else "operator1"
        assert rnd.rated_at is not None and rnd.rating is not None
        self.rows.add(
            RatingRow,
            {
                "case_id": matter.id,
                "answer_id": answer_id,
                "round": rnd.number,
                "rating": rnd.rating,
                "reason": "办理不到位" if rnd.rating == "unsatisfied" else None,
                "source": source,
                "recorded_by": actor,
                "at": rnd.rated_at,
            },
        )
        self.timeline(matter.id, "rated", f"评价：{RATING_LABELS[rnd.rating]}", rnd.rated_at)
        if rnd.rating == "unsatisfied" and rnd is not matter.last:
            self.timeline(matter.id, "reopened", "不满意，已提级重新办理", rnd.rated_at)
        elif rnd.classification == "B" and rnd.rating != "unsatisfied":
            self.timeline(matter.id, "follow_up", "B类事项，待承办单位落实后再次答复", rnd.rated_at)
        elif rnd.rating != "unsatisfied":
            self.timeline(matter.id, "closed", f"已结案（评价{RATING_LABELS[rnd.rating]}）", rnd.rated_at)
        self.audit.append(
            self.chain.entry(
                case_id=matter.id,
                action="rated",
                actor=actor,
                at=rnd.rated_at,
                detail={"rating": rnd.rating, "source": source, "answer_id": answer_id},
            )
        )

    def delivery(
        self,
        matter: Matter,
        *,
        kind: str,
        key: int,
        answer_id: str | None,
        subject: str,
        text: str,
        at: datetime,
        sent_at: datetime | None,
    ) -> str:
        delivery_id = sub_id(matter.id, key)
        phone_masked = self.identities.of(matter.phone)[2]
        self.rows.add(
            Delivery,
            {
                "id": delivery_id,
                "case_id": matter.id,
                "answer_id": answer_id,
                "kind": kind,
                "mode": "auto",
                "channel": "sms",
                "status": "sent",
                "subject": subject,
                "text": text,
                "idempotency_key": f"sv-delivery-{delivery_id}",
                "attempts": 0,
                "next_attempt_at": None,
                "lease_until": None,
                "last_error": None,
                "sent_at": sent_at or at,
                "recorded_by": None,
                "note": None,
                "correlation_id": None,
                "recipient": None,
                "sent_to_masked": phone_masked,
                "created_at": at,
                "updated_at": sent_at or at,
            },
        )
        self.audit.append(
            self.chain.entry(
                case_id=matter.id,
                action="delivery_sent",
                actor=SERVICE,
                at=sent_at or at,
                detail={"channel": "sms", "delivery_id": delivery_id, "kind": kind, "mode": "auto"},
            )
        )
        return delivery_id

    def acceptance_notice(self, matter: Matter, at: datetime) -> None:
        text = (
            f"您好！您于{self.local(matter.received_at)}反映的问题已受理，督察部门正在依法依规核查办理，办理结果将及时告知您。"
            f"您可凭查询码和查询密码在“阳光警务查询”中查看办理进度。\n查询码：{matter.tracking_code}\n{SIGNATURE}"
        )
        delivery_id = sub_id(matter.id, DELIVERY)
        self.audit.append(
            self.chain.entry(
                case_id=matter.id,
                action="acceptance_notice_queued",
                actor=SERVICE,
                at=at,
                reason="核查任务已认领",
                detail={"delivery_id": delivery_id},
            )
        )
        self.delivery(
            matter,
            kind="notice",
            key=DELIVERY,
            answer_id=None,
            subject=f"投诉受理告知（查询码：{matter.tracking_code}）",
            text=text,
            at=at,
            sent_at=at + timedelta(seconds=5),
        )
        # The delivery's own key is fixed by the acceptance rule, not by its id.
        self.rows.by_model[Delivery][-1]["idempotency_key"] = f"sv-acceptance-{matter.id}"


def build(
    matters: list[Matter],
    steps: list[Any],
    *,
    world: World,
    rows: Rows,
    chain: AuditChain,
    identities: Identities,
) -> list[dict[str, Any]]:
    builder = Builder(world, rows, chain, identities)
    for matter in matters:
        builder.matter(matter)
    builder.ladder_steps(steps)
    return builder.audit


def view_clocks(rnd: Round) -> list[dict[str, Any]]:
    """The round's clocks as the view keeps them; an approved extension marks its clock extended
    (``projection._extended_clocks``)."""
    plan = rnd.extension
    clocks = []
    for clock in rnd.clocks:
        row = clock.model_dump(mode="json")
        if plan is not None and plan.approved and plan.clock == clock.name:
            row["extended"] = True
        clocks.append(row)
    return clocks
