"""Intake's rows: complaints with their sealed identity and match keys, suggestions, the audit chain."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from services.intake.identity import Identity
from services.intake.models import ComplainantKey, Complaint, Suggestion
from shared.masking import mask_name, mask_phone

from .common import AuditChain, Rows, World
from .plan import Matter
from .shares import GIVEN, SURNAMES

OPERATOR = "operator1"


def phone_number(index: int) -> str:
    prefixes = ("138", "139", "137", "136", "135", "150", "151", "158", "187", "188")
    return f"{prefixes[index % len(prefixes)]}{(index * 7919 + 3301) % 10**8:08d}"


class Identities:
    """Each distinct caller is sealed once: the ciphertext and the match key are reused."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.cache: dict[int, tuple[str, str, str, str]] = {}

    def of(self, index: int) -> tuple[str, str, str, str]:
        found = self.cache.get(index)
        if found is None:
            rng = random.Random(index)
            name = (
                rng.choice(SURNAMES) + rng.choice(GIVEN) + (rng.choice(GIVEN) if rng.random() < 0.6 else "")
            )
            phone = phone_number(index)
            vault = self.world.vault
            assert vault is not None
            sealed = vault.seal(Identity(name=name, phone=phone, id_number=None, email=None, address=None))
            found = (sealed, mask_name(name) or "", mask_phone(phone) or "", vault.phone_key(phone))
            self.cache[index] = found
        return found


def intake_status(matter: Matter) -> str:
    if matter.linked_repeat:
        return "received"
    last = matter.last
    if last.concluded_at is None:
        return "routed" if len(matter.rounds) == 1 else "reopened"
    if last.approved_at is None or (last.b_reply_at and last.b_approved_at is None):
        return "concluded"
    if last.awaiting_b_reply or (last.b_approved_at and last.b_rated_at is None):
        return "answered"
    return "closed" if last.rating in ("satisfied", "basically_satisfied") else "answered"


def build(
    matters: list[Matter], *, world: World, rows: Rows, chain: AuditChain, identities: Identities
) -> list[dict[str, Any]]:
    audit: list[dict[str, Any]] = []
    for matter in matters:
        created_at = matter.received_at + timedelta(seconds=40)
        if matter.kind == "suggestion":
            rows.add(Suggestion, suggestion_row(matter, created_at))
            audit.append(
                chain.entry(case_id=matter.id, action="suggestion_received", actor=OPERATOR, at=created_at)
            )
            continue
        sealed = name_masked = phone_masked = None
        if not matter.anonymous:
            sealed, name_masked, phone_masked, key = identities.of(matter.phone)
            rows.add(ComplainantKey, {"complaint_id": matter.id, "match_key": key})
        row = complaint_row(matter, created_at)
        row.update(identity_sealed=sealed, name_masked=name_masked, phone_masked=phone_masked)
        rows.add(Complaint, row)
        audit.append(
            chain.entry(
                case_id=matter.id,
                action="complaint_received",
                actor=OPERATOR,
                at=created_at,
                detail={
                    "tracking_code": matter.tracking_code,
                    "channel": matter.channel,
                    "repeat_of": row["repeat_of"],
                    "linked_repeat": matter.linked_repeat,
                    "new_matter": False,
                },
            )
        )
    return audit


def suggestion_row(matter: Matter, created_at: datetime) -> dict[str, Any]:
    account, name, delegation = matter.deputy
    return {
        "id": matter.id,
        "tracking_code": matter.tracking_code,
        "query_secret_hash": matter.secret_hash,
        "kind": matter.suggestion_kind,
        "session": matter.session,
        "number": matter.number,
        "title": matter.title,
        "text": matter.text,
        "deputy_name": name,
        "deputy_delegation": delegation,
        "deputy_account": account,
        "deputy_phone": None,
        "co_signers": [],
        "lead_unit": matter.lead_unit,
        "co_units": matter.co_units,
        "received_at": matter.received_at,
        "complex_matter": matter.complex_matter,
        "status": intake_status(matter),
        "assigned_team_code": matter.last.decision.team_code if matter.rounds else None,
        "created_by": OPERATOR,
        "created_at": created_at,
    }


def complaint_row(matter: Matter, created_at: datetime) -> dict[str, Any]:
    """The complaint without its identity (the caller adds it)."""
    ratings = [r.rating for r in matter.rounds if r.rating]
    answered = [r.served_at for r in matter.rounds if r.served_at]
    return {
        "id": matter.id,
        "tracking_code": matter.tracking_code,
        "query_secret_hash": matter.secret_hash,
        "channel": matter.channel,
        "platform_ticket_no": None,
        "received_at": matter.received_at,
        "anonymous": matter.anonymous,
        "accused_unit": matter.accused_unit,
        "accused_unit_code": matter.county_code,
        "county_code": matter.county_code,
        "accused_is_inspection_team": False,
        "officers": matter.officers,
        "allegations": [{"category": c, "description": None, "serious": s} for c, s in matter.categories],
        "attachments": [],
        "incident_at": matter.received_at - timedelta(days=2),
        "place": None,
        "account": matter.text,
        "injury_or_death": matter.injury,
        "supervisor_flag": False,
        "repeat_of": matter.repeat_of.id if matter.repeat_of else None,
        "repeat_after_rejection": matter.repeat_after_rejection,
        "linked_repeat": matter.linked_repeat,
        "new_matter_reason": None,
        "status": intake_status(matter),
        "assigned_team_code": matter.last.decision.team_code if matter.rounds else None,
        "last_rating": ratings[-1] if ratings else None,
        "answered_at": answered[-1] if answered else None,
        "created_by": OPERATOR,
        "created_at": created_at,
    }
