"""The running services: every state change is in the trail, and each chain is anchored on NATS."""

from __future__ import annotations

from typing import Any

import nats

from services.cli.audit import verify_services
from services.routing.rulebook import RULES_AUDIT_CASE_ID
from shared.audit_anchor import all_checkpoints
from tests.support import System, eventually
from tests.test_feedback_support import concluded_complaint
from tests.test_routing_api import put_rule, rule_named


async def audit_trail(system: System, service: str, case_id: str) -> dict[str, Any]:
    response = await system.call(service, "GET", f"/api/v1/audit/{case_id}", as_user="supervisor1")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_an_answer_edit_is_in_the_trail(system: System) -> None:
    created, draft = await concluded_complaint(system)
    text = "经核查，您反映的问题属实，已责令整改并对相关民警批评教育。"
    edited = await system.call(
        "feedback", "PUT", f"/api/v1/answers/{draft['id']}", as_user="supervisor1", json={"text": text}
    )
    assert edited.status_code == 200, edited.text
    trail = await audit_trail(system, "feedback", created["id"])
    assert trail["chain_intact"]
    entry = next(e for e in trail["entries"] if e["action"] == "answer_edited")
    assert entry["actor"] == "supervisor1"
    assert '"after": "' + text in entry["detail"] and draft["text"][:10] in entry["detail"]


async def test_a_rule_edit_is_in_the_trail(system: System) -> None:
    rule = await rule_named(system, "ordinary_county")
    unchanged = {key: rule[key] for key in rule if key not in {"name", "updated_at", "updated_by"}}
    reason = "测试：复核规则，内容不变"
    changed = await put_rule(system, "ordinary_county", unchanged | {"reason": reason})
    assert changed.status_code == 200, changed.text
    trail = await audit_trail(system, "routing", RULES_AUDIT_CASE_ID)
    assert trail["chain_intact"]
    entry = next(e for e in trail["entries"] if e["reason"] == reason)
    assert entry["action"] == "rule_changed" and entry["actor"] == "supervisor1"
    assert '"rule": "ordinary_county"' in entry["detail"]


async def test_every_service_anchors_its_chain_and_verify_passes(system: System) -> None:
    nc = await nats.connect(system.nats_url)
    try:
        js = nc.jetstream()

        async def anchored() -> bool:
            return all([await all_checkpoints(js, name) for name in system.urls])

        await eventually(anchored, what="a checkpoint of every service's chain")
    finally:
        await nc.close()
    databases = {name: system.env[f"{name.upper()}_DATABASE_URL"] for name in system.urls}
    lines: list[str] = []
    assert await verify_services(databases, nats_url=system.nats_url, report=lines.append), lines
    assert [line.split(":")[0] for line in lines] == list(databases)
