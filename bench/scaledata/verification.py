"""Verification's rows: the matter snapshot, a task per round with its clocks and their ladder steps,
the history, findings, early-warning hits, ratings per round, repeat calls and ledger marks; the
evidence, extensions and rectifications are records.py's."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.verification.ladder import STEP_LABELS, STEP_REACHES
from services.verification.models import (
    MAIN_CLOCKS,
    Finding,
    LadderStep,
    LedgerMark,
    MatterSnapshot,
    RepeatCall,
    RoundRating,
    Task,
    TaskClock,
    TaskEvent,
    TaskParticipant,
    WarningHit,
)
from shared.events import ClockSet
from shared.ladder import STANDARD_STEPS

from .common import FINDING, TASK, AuditChain, Rows, World, sub_id
from .plan import SUBSTANTIATED, Matter, Round
from .records import round_records

SUPERVISOR = "supervisor1"


def inspector(team_code: str) -> str:
    return f"inspector-{team_code}"


def steps_until(world: World, due_at: datetime, end: datetime) -> list[tuple[str, datetime]]:
    """The ladder steps a clock took before ``end`` (its stop, or now), with when each was taken."""
    policy = world.policy
    taken = []
    for step in STANDARD_STEPS:
        at = world.step_time(policy, step, due_at)
        if at > end:
            break
        taken.append((step, at))
    return taken


class Builder:
    def __init__(self, world: World, rows: Rows, chain: AuditChain) -> None:
        self.world, self.rows, self.chain = world, rows, chain
        self.audit: list[dict[str, Any]] = []
        # Ladder steps of open matters, for feedback's 待办 (task id, clock, step, due, at, team).
        self.steps: list[tuple[Matter, Round, str, str, datetime, datetime]] = []

    def event(self, task_id: str, action: str, actor: str, at: datetime, note: str | None = None) -> None:
        self.rows.add(
            TaskEvent, {"task_id": task_id, "action": action, "actor": actor, "note": note, "at": at}
        )

    def matter(self, matter: Matter) -> None:
        if matter.linked_repeat:
            original = matter.repeat_of
            assert original is not None
            self.rows.add(
                RepeatCall,
                {
                    "repeat_case_id": matter.id,
                    "case_id": original.id,
                    "tracking_code": matter.tracking_code,
                    "channel": matter.channel,
                    "received_at": matter.received_at,
                    "recorded_by": "operator1",
                },
            )
            return
        self.rows.add(
            MatterSnapshot,
            {
                "case_id": matter.id,
                "case_kind": matter.kind,
                "tracking_code": matter.tracking_code,
                "received_at": matter.received_at,
                "title": matter.title
                if matter.kind == "suggestion"
                else f"{matter.accused_unit}：{'、'.join(c for c, _ in matter.categories)}",
                "accused_unit": matter.accused_unit or None,
                "county_code": matter.county_code,
                "officers": matter.officers,
                "allegations": [{"category": c, "serious": s} for c, s in matter.categories],
                "incident_at": matter.received_at - timedelta(days=2) if matter.kind == "complaint" else None,
                "place": None,
                "text": matter.text,
                "anonymous": matter.anonymous,
            },
        )
        if matter.kind == "complaint":
            self.warning_hits(matter)
        for index, rnd in enumerate(matter.rounds):
            self.task(matter, rnd, index)
        if matter.marked:
            self.rows.add(
                LedgerMark,
                {
                    "case_id": matter.id,
                    "mark": matter.marked,
                    "leader": "分管副局长" if matter.marked == "leader_assigned" else None,
                    "note": "超期未办结，列为督办件",
                    "marked_by": SUPERVISOR,
                    "marked_at": self.world.now - timedelta(days=3),
                },
            )
            self.audit.append(
                self.chain.entry(
                    case_id=matter.id,
                    action=f"ledger_{matter.marked}",
                    actor=SUPERVISOR,
                    at=self.world.now - timedelta(days=3),
                    reason="超期未办结，列为督办件",
                )
            )

    def warning_hits(self, matter: Matter) -> None:
        subjects = [("unit", matter.accused_unit)] + [
            ("officer", o["badge_no"]) for o in matter.officers if o.get("badge_no")
        ]
        measures = ["complaints"]
        if matter.rounds and matter.rounds[0].outcome in SUBSTANTIATED and matter.rounds[0].concluded_at:
            measures.append("substantiated")
        for kind, key in subjects:
            for measure in measures:
                self.rows.add(
                    WarningHit,
                    {
                        "subject_kind": kind,
                        "subject_key": key,
                        "measure": measure,
                        "case_id": matter.id,
                        "county_code": matter.county_code,
                        "at": matter.received_at,
                    },
                )

    def task(self, matter: Matter, rnd: Round, index: int) -> None:
        world, rows = self.world, self.rows
        rnd.task_id = sub_id(matter.id, TASK + index)
        decision = rnd.decision
        team = decision.team_code
        main = next((c for c in rnd.clocks if c.name in MAIN_CLOCKS), None)
        clocks = [c.model_dump(mode="json") for c in rnd.clocks]
        rows.add(
            Task,
            {
                "id": rnd.task_id,
                "case_id": matter.id,
                "case_kind": matter.kind,
                "assignment_id": rnd.assignment_id,
                "team_code": team,
                "team_name": world.organisation.team_name(team),
                "assignment_kind": decision.kind,
                "participants": decision.participants,
                "reasons": decision.reasons,
                "review_required": decision.review_required,
                "review_team_code": decision.review_team_code,
                "key_clue": decision.key_clue,
                "round": rnd.number,
                "status": rnd.task_status,
                "claimed_by": inspector(team) if rnd.claimed_at else None,
                "claimed_at": rnd.claimed_at,
                "due_at": main.due_at if main else None,
                "clocks": clocks,
                "created_at": rnd.assigned_at + timedelta(seconds=2),
                "concluded_at": rnd.concluded_at,
                "classification": rnd.classification,
            },
        )
        for participant in dict.fromkeys(decision.participants):
            rows.add(TaskParticipant, {"team_code": participant, "task_id": rnd.task_id})
        self.event(rnd.task_id, "assigned", "routing", rnd.assigned_at, "；".join(decision.reasons))
        if rnd.claimed_at:
            self.event(rnd.task_id, "claimed", inspector(team), rnd.claimed_at)
            self.audit.append(
                self.chain.entry(
                    case_id=matter.id,
                    action="task_claimed",
                    actor=inspector(team),
                    at=rnd.claimed_at,
                    detail={"task_id": rnd.task_id},
                )
            )
        for clock in rnd.clocks:
            self.clock(matter, rnd, clock)
        if rnd.outcome and (rnd.concluded_at or rnd.task_status == "in_review"):
            self.finding(matter, rnd, index)
        if rnd.classification == "B" and rnd.concluded_at:
            self.b_follow_up(matter, rnd, index)
        round_records(self, matter, rnd, index)

    def b_follow_up(self, matter: Matter, rnd: Round, index: int) -> None:
        """A B-class reply's clock (three months to the follow-up reply) and that reply, if given."""
        assert rnd.concluded_at is not None
        clock = self.world.deadlines.later_clock(
            "b_follow_up", calendar=self.world.calendar, start=rnd.concluded_at
        )
        stop = rnd.b_reply_at or (rnd.rated_at if rnd.rating == "unsatisfied" else None)
        self.clock(matter, rnd, clock, stop=(stop,))
        if rnd.b_reply_at is None:
            return
        actor = inspector(rnd.decision.team_code)
        self.rows.add(
            Finding,
            {
                "id": sub_id(matter.id, FINDING + 8 + index),
                "task_id": rnd.task_id,
                "outcome": "no_finding",
                "summary": "相关措施已落实到位。",
                "facts": None,
                "no_finding_reason": "后续答复",
                "classification": "A",
                "accountability": [],
                "per_allegation": [],
                "per_officer": [],
                "evidence_ids": [],
                "follow_up": True,
                "recorded_by": actor,
                "recorded_at": rnd.b_reply_at,
                "review_status": "none",
                "reviewed_by": None,
                "review_reasons": [],
                "reviewed_at": None,
            },
        )
        self.event(rnd.task_id, "follow_up_reply", actor, rnd.b_reply_at, "A")
        self.audit.append(
            self.chain.entry(case_id=matter.id, action="follow_up_reply", actor=actor, at=rnd.b_reply_at)
        )

    def clock(
        self, matter: Matter, rnd: Round, clock: ClockSet, stop: tuple[datetime | None] | None = None
    ) -> None:
        """One clock of the task; it stops at the conclusion (the acceptance notice's at the claim)
        unless ``stop`` says when (``(None,)``: still running)."""
        world, rows = self.world, self.rows
        stopped_at = rnd.concluded_at
        if clock.name == "acceptance_notice" and rnd.claimed_at is not None:
            stopped_at = rnd.claimed_at
        if stop is not None:
            stopped_at = stop[0]
        end = stopped_at or world.now
        taken = steps_until(world, clock.due_at, end)
        plan = rnd.extension
        extended = plan if plan and plan.approved and plan.clock == clock.name else None
        clock_id = rows.new_id(TaskClock)
        row = {
            "id": clock_id,
            "task_id": rnd.task_id,
            "case_id": matter.id,
            "team_code": rnd.decision.team_code,
            "name": clock.name,
            "label": clock.label,
            "rule": clock.rule,
            "source": clock.source,
            "due_at": clock.due_at,
            "original_due_at": extended.original_due_at if extended else clock.due_at,
            "extended": extended is not None,
            "status": "stopped" if stopped_at else "running",
            "stopped_at": stopped_at,
            "next_step": None,
            "next_step_at": None,
        }
        if stopped_at is None and len(taken) < len(STANDARD_STEPS):
            step = STANDARD_STEPS[len(taken)]
            row["next_step"], row["next_step_at"] = step, world.step_time(world.policy, step, clock.due_at)
        rows.add(TaskClock, row)
        for step, at in taken:
            rows.add(
                LadderStep,
                {
                    "clock_id": clock_id,
                    "task_id": rnd.task_id,
                    "case_id": matter.id,
                    "step": step,
                    "due_at": clock.due_at,
                    "at": at,
                    "notified": STEP_REACHES[step],
                },
            )
            self.audit.append(
                self.chain.entry(
                    case_id=matter.id,
                    action=f"ladder_{step}",
                    actor="scheduler",
                    at=at,
                    reason=f"{clock.label}：{STEP_LABELS[step]}，送达{STEP_REACHES[step]}",
                    detail={"task_id": rnd.task_id, "clock": clock.name, "due_at": clock.due_at.isoformat()},
                )
            )
            self.steps.append((matter, rnd, clock.name, step, clock.due_at, at))

    def finding(self, matter: Matter, rnd: Round, index: int) -> None:
        team = rnd.decision.team_code
        at = rnd.concluded_at or (rnd.claimed_at or rnd.assigned_at) + timedelta(days=5)
        outcome = rnd.outcome or "unsubstantiated"
        per_officer = [
            {
                "name": o["name"],
                "badge_no": o["badge_no"],
                "outcome": outcome,
                "accountability": rnd.accountability,
            }
            for o in matter.officers
        ]
        confirmed = rnd.decision.review_required and rnd.concluded_at is not None
        self.rows.add(
            Finding,
            {
                "id": sub_id(matter.id, FINDING + index),
                "task_id": rnd.task_id,
                "outcome": outcome,
                "summary": "经核查，"
                + ("反映的问题属实，已责成整改。" if outcome != "unsubstantiated" else "反映的问题不属实。"),
                "facts": None,
                "no_finding_reason": "投诉人撤回投诉" if outcome == "no_finding" else None,
                "classification": rnd.classification,
                "accountability": rnd.accountability,
                "per_allegation": [],
                "per_officer": per_officer,
                "evidence_ids": [],
                "follow_up": False,
                "recorded_by": inspector(team),
                "recorded_at": at,
                "review_status": "confirmed"
                if confirmed
                else ("pending" if rnd.decision.review_required else "none"),
                "reviewed_by": inspector(rnd.decision.review_team_code or team) if confirmed else None,
                "review_reasons": [],
                "reviewed_at": at if confirmed else None,
            },
        )
        self.event(rnd.task_id, "finding_recorded", inspector(team), at, outcome)
        self.audit.append(
            self.chain.entry(
                case_id=matter.id,
                action="finding_recorded",
                actor=inspector(team),
                at=at,
                detail={"task_id": rnd.task_id, "outcome": outcome, "review": rnd.task_status == "in_review"},
            )
        )
        if rnd.rating and rnd.rated_at:
            self.rows.add(
                RoundRating,
                {"case_id": matter.id, "round": rnd.number, "rating": rnd.rating, "at": rnd.rated_at},
            )


def build(matters: list[Matter], *, world: World, rows: Rows, chain: AuditChain) -> Builder:
    builder = Builder(world, rows, chain)
    for matter in matters:
        builder.matter(matter)
    return builder
