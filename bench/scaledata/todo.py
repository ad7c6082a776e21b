"""Feedback's clocks (answer approval, 回访) with their ladders, and the 待办 items (notifications)
that those and verification's ladders left: a part of the feedback builder, kept apart for size."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.feedback.clocks import STEP_LABELS as CLOCK_STEP_LABELS
from services.feedback.clocks import STEPS as CLOCK_STEPS
from services.feedback.models import FeedbackClock, FeedbackClockStep, Notification
from services.feedback.notifications import LADDER_KINDS, ladder_title
from shared.ladder import LadderPolicy

from .common import NOTICE, AuditChain, Rows, World, sub_id
from .plan import Matter, Round


class TodoItems:
    """The feedback builder's clocks and notifications (``feedback.Builder`` inherits them)."""

    world: World
    rows: Rows
    chain: AuditChain
    audit: list[dict[str, Any]]
    policy: LadderPolicy
    counter: int

    def local(self, moment: datetime) -> str:
        return f"{moment.astimezone(self.world.calendar.tz):%Y年%m月%d日}"

    def clock(
        self,
        matter: Matter,
        name: str,
        subject: str,
        clock: Any,
        started: datetime,
        stopped: datetime | None,
        note: str,
    ) -> None:
        rows = self.rows
        clock_id = rows.new_id(FeedbackClock)
        end = stopped or self.world.now
        taken = []
        for step in CLOCK_STEPS:
            at = max(self.world.step_time(self.policy, step, clock.due_at), started)
            if at > end:
                break
            taken.append((step, at))
        row = {
            "id": clock_id,
            "case_id": matter.id,
            "name": name,
            "subject_id": subject,
            "label": clock.label,
            "rule": clock.rule,
            "source": clock.source,
            "started_at": started,
            "due_at": clock.due_at,
            "status": "stopped" if stopped else "running",
            "stopped_at": stopped,
            "stop_note": note if stopped else None,
            "next_step": None,
            "next_step_at": None,
            "attempts": 0,
        }
        if stopped is None and len(taken) < len(CLOCK_STEPS):
            step = CLOCK_STEPS[len(taken)]
            row["next_step"], row["next_step_at"] = (
                step,
                self.world.step_time(self.policy, step, clock.due_at),
            )
        rows.add(FeedbackClock, row)
        kind, audience, link = (
            ("approval_due", "role:supervisor", "verification:/approvals")
            if name == "answer_approval"
            else ("follow_up_due", "role:operator", "feedback:/follow-ups")
        )
        for step, at in taken:
            rows.add(
                FeedbackClockStep,
                {"clock_id": clock_id, "case_id": matter.id, "step": step, "due_at": clock.due_at, "at": at},
            )
            self.notification(
                matter,
                kind=kind,
                audience=audience,
                dedupe=f"clock:{clock_id}:{step}",
                link=link,
                title=f"【{CLOCK_STEP_LABELS[step]}】{matter.tracking_code} {clock.label}待办理，{self.local(clock.due_at)}到期",
                due_at=clock.due_at,
                at=at,
                handled=stopped,
                team=matter.last.decision.team_code,
            )
            self.audit.append(
                self.chain.entry(
                    case_id=matter.id,
                    action=f"clock_{step}",
                    actor="scheduler",
                    at=at,
                    reason=f"{clock.label}：{CLOCK_STEP_LABELS[step]}",
                    detail={"clock": name, "due_at": clock.due_at.isoformat()},
                )
            )

    def notification(
        self,
        matter: Matter,
        *,
        kind: str,
        audience: str,
        dedupe: str,
        link: str,
        title: str,
        due_at: datetime,
        at: datetime,
        handled: datetime | None,
        team: str,
    ) -> None:
        self.counter += 1
        self.rows.add(
            Notification,
            {
                "id": sub_id(matter.id, (NOTICE << 16) + self.counter),
                "kind": kind,
                "audience": audience,
                "dedupe_key": dedupe,
                "case_id": matter.id,
                "tracking_code": matter.tracking_code,
                "county_code": matter.county_code if matter.kind == "complaint" else None,
                "team_code": team,
                "title": title[:300],
                "link": link,
                "due_at": due_at,
                "created_at": at,
                "handled_at": handled,
                "handled_by": "supervisor1" if handled else None,
                # As notifications.notify sets them: unread counts from one working day on, and
                # an item handled was read by then at the latest.
                "read_deadline": self.world.calendar.add_working_days(at, 1),
                "first_read_at": handled,
            },
        )

    def ladder_steps(self, steps: list[tuple[Matter, Round, str, str, datetime, datetime]]) -> None:
        """The 待办 items verification's ladder steps left (``notifications.ladder_step``)."""
        labels: dict[str, str] = {c.name: c.label for c in self.world.deadlines.clocks}
        for matter, rnd, clock, step, due_at, at in steps:
            if clock == "b_follow_up":
                # A helper clock: every step is a reminder to the team that must follow up (整改).
                title = ladder_title(
                    step=step,
                    tracking_code=matter.tracking_code,
                    label="B类后续答复",
                    due_text=self.local(due_at),
                    tag="整改",
                )
                self.notification(
                    matter,
                    kind="rectification_due",
                    audience=f"team:{rnd.decision.team_code}",
                    dedupe=f"ladder:{rnd.task_id}:{clock}:{step}",
                    link=f"verification:/tasks/{rnd.task_id}",
                    title=title,
                    due_at=due_at,
                    at=at,
                    handled=rnd.b_reply_at,
                    team=rnd.decision.team_code,
                )
                continue
            kind = LADDER_KINDS[step]
            title = ladder_title(
                step=step,
                tracking_code=matter.tracking_code,
                label=labels.get(clock, "办理"),
                due_text=self.local(due_at),
            )
            team = rnd.decision.team_code
            link = f"verification:/tasks/{rnd.task_id}"
            handled = rnd.concluded_at
            audiences = [f"team:{team}"] if kind in ("reminder", "chase") else ["role:supervisor"]
            for audience in audiences:
                self.notification(
                    matter,
                    kind=kind,
                    audience=audience,
                    dedupe=f"ladder:{rnd.task_id}:{clock}:{step}",
                    link=link,
                    title=title,
                    due_at=due_at,
                    at=at,
                    handled=handled,
                    team=team,
                )
            if kind == "rebuke" and matter.kind == "complaint":
                self.notification(
                    matter,
                    kind=kind,
                    audience=f"leader:{matter.county_code}",
                    dedupe=f"ladder:{rnd.task_id}:{clock}:{step}",
                    link="verification:/ledger",
                    title=title,
                    due_at=due_at,
                    at=at,
                    handled=handled,
                    team=team,
                )
