"""The rule table: seeded once from the bundled rules, edited by supervisors with a history, cached."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.routing.context import RoutingContext
from services.routing.models import RoutingRule, RuleChange
from services.routing.rules import Rule
from shared.audit import audit
from shared.auth import Principal
from shared.db import insert_missing, utcnow
from shared.pagination import Key, Page

DEFAULT_RULES_FILE = Path(__file__).resolve().parent / "default_rules.json"
# The audit trail's "matter" of the rule changes (a rule's name may fill a case id alone).
RULES_AUDIT_CASE_ID = "routing-rules"


async def seed_rules(*, session: AsyncSession, rules_file: Path) -> None:
    """The bundled (or configured) rules on first start; a database that has rules is left as it is.

    Rules already stored are skipped rather than failing the start-up (see ``seed_organisation``).
    """
    if (await session.exec(select(func.count()).select_from(RoutingRule))).one() != 0:
        return
    # Read once at first start-up, before the service takes traffic.
    data = json.loads(rules_file.read_text(encoding="utf-8"))  # noqa: ASYNC240
    rules = [
        RoutingRule(
            name=raw["name"],
            priority=raw["priority"],
            case_kinds=raw["case_kinds"],
            when=raw["when"],
            assign=raw["assign"],
            review=raw.get("review", False),
            description=raw["description"],
            enabled=raw.get("enabled", True),
        )
        for raw in data["rules"]
    ]
    await insert_missing(session, RoutingRule, rules)


async def rules_from_db(*, session: AsyncSession, ctx: RoutingContext) -> list[Rule]:
    cached = ctx.cached_rules()
    if cached is not None:
        return cached
    rows = await session.exec(select(RoutingRule))
    rules = [
        Rule(
            name=r.name,
            priority=r.priority,
            case_kinds=tuple(r.case_kinds),
            when=tuple(r.when),
            assign=r.assign,
            review=r.review,
            description=r.description,
            enabled=r.enabled,
        )
        for r in rows
    ]
    ctx.remember_rules(rules)
    return rules


async def list_rules(*, session: AsyncSession) -> list[RoutingRule]:
    return list(await session.exec(select(RoutingRule).order_by(col(RoutingRule.priority))))


async def rule_changes(*, session: AsyncSession, page: Page) -> list[RuleChange]:
    query = select(RuleChange)
    keys = (Key(col(RuleChange.changed_at), descending=True), Key(col(RuleChange.id), descending=True))
    return await page.rows(session, query, keys)


async def update_rule(
    *,
    session: AsyncSession,
    name: str,
    values: dict[str, Any],
    reason: str,
    actor: Principal,
) -> RoutingRule:
    """Creates or edits a rule and records the change; the caller forgets the cache after its commit."""
    rule = await session.get(RoutingRule, name)
    before = rule.model_dump(mode="json", exclude={"updated_at", "updated_by"}) if rule else None
    if rule is None:
        rule = RoutingRule(name=name, **values)
    else:
        for key, value in values.items():
            setattr(rule, key, value)
    rule.updated_at = utcnow()
    rule.updated_by = actor.username
    session.add(rule)
    after = rule.model_dump(mode="json", exclude={"updated_at", "updated_by"})
    session.add(
        RuleChange(rule_name=name, changed_by=actor.username, reason=reason, before=before, after=after)
    )
    # The rule history is an ordinary table; the audit trail is what proves the change.
    await audit(
        session,
        case_id=RULES_AUDIT_CASE_ID,
        action="rule_changed",
        actor=actor.username,
        reason=reason,
        detail={"rule": name, "before": before, "after": after},
    )
    return rule
