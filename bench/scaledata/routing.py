"""Routing's rows: each matter's facts (routed case) and its assignments, one per round, audited."""

from __future__ import annotations

from typing import Any

from services.routing.models import Assignment, RoutedCase

from .common import ASSIGNMENT, AuditChain, Rows, sub_id
from .intake import intake_status
from .plan import Matter

ACTOR = "routing"


def clocks_json(round_: Any) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json") for c in round_.clocks]


def build(matters: list[Matter], *, rows: Rows, chain: AuditChain) -> list[dict[str, Any]]:
    audit: list[dict[str, Any]] = []
    for matter in matters:
        if not matter.rounds:
            continue  # a linked repeat call: never routed on its own
        rows.add(
            RoutedCase,
            {
                "case_id": matter.id,
                "case_kind": matter.kind,
                "tracking_code": matter.tracking_code,
                "county_code": matter.county_code,
                "accused_unit": matter.accused_unit,
                "facts": matter.facts + (["reopened"] if len(matter.rounds) > 1 else []),
                "lead_unit": matter.lead_unit or None,
                "co_units": matter.co_units,
                "named_complainant": not matter.anonymous,
                "complex_matter": matter.complex_matter,
                "received_at": matter.received_at,
                "round": len(matter.rounds),
                "return_count": 0,
                "previous_team_codes": [r.decision.team_code for r in matter.rounds[:-1]],
                "open": intake_status(matter) != "closed",
            },
        )
        for index, rnd in enumerate(matter.rounds):
            current = index == len(matter.rounds) - 1
            rnd.assignment_id = sub_id(matter.id, ASSIGNMENT + index)
            decision = rnd.decision
            rows.add(
                Assignment,
                {
                    "id": rnd.assignment_id,
                    "case_id": matter.id,
                    "case_kind": matter.kind,
                    "team_code": decision.team_code,
                    "kind": decision.kind,
                    "rule": decision.rule,
                    "reasons": decision.reasons,
                    "participants": decision.participants,
                    "review_required": decision.review_required,
                    "review_team_code": decision.review_team_code,
                    "key_clue": decision.key_clue,
                    "needs_supervisor": decision.needs_supervisor,
                    "round": rnd.number,
                    "clocks": clocks_json(rnd),
                    "current": current,
                    "open": current and rnd.concluded_at is None,
                    "assigned_by": ACTOR,
                    "created_at": rnd.assigned_at,
                },
            )
            audit.append(
                chain.entry(
                    case_id=matter.id,
                    action="assigned",
                    actor=ACTOR,
                    at=rnd.assigned_at,
                    reason="；".join(decision.reasons),
                    detail={"team_code": decision.team_code, "kind": decision.kind, "rule": decision.rule},
                )
            )
    return audit
