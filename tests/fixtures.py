"""Sample matters in the API's own shape (fictional people, real place names)."""

from __future__ import annotations

import itertools
from typing import Any

_counter = itertools.count(1)


def unique_mobile() -> str:
    # 139 + 8 digits: a syntactically valid, made-up mainland mobile number per call.
    return f"139{next(_counter) + 10_000_000 + __import__('os').getpid() % 1000 * 10_000:08d}"[:11]


def complaint(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": "phone",
        "received_at": "2026-11-02T09:14:00+08:00",
        "complainant": {"name": "王建国", "phone": unique_mobile(), "anonymous": False},
        "accused": {
            "unit": "项城市公安局花园派出所",
            "county_code": "411681",
            "officer_name": "李某",
            "badge_no": "041234",
        },
        "category": "态度粗暴",
        "incident_at": "2026-10-30T20:30:00+08:00",
        "place": "项城市莲花大道与交通路交叉口",
        "account": "10月30日晚我骑电动车被拦下检查，一名民警态度恶劣，言语辱骂，还推搡我。我要求查看执法记录仪，被拒绝。",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def suggestion(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "npc_suggestion",
        "session": "周口市第五届人民代表大会第三次会议",
        "number": f"{next(_counter):04d}",
        "title": "关于完善民警执法权力制约机制的建议",
        "text": "建议厘清执法权责边界、强化执法全程管控、运用科技手段强化智能监管、统筹内外监督资源。",
        "deputy": {"name": "马刚", "delegation": "川汇区代表团", "phone": "13800000101"},
        "co_signers": ["张某", "李某"],
        "lead_unit": "周口市公安局",
        "co_units": [],
        "received_at": "2026-02-20T09:00:00+08:00",
    }
    body.update(overrides)
    return body
