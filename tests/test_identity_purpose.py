"""Reading a complainant's identity needs a purpose from a list and the reader's own words (issue 14).

Before, the purpose defaulted to "核查需要", so nobody had to say why.  Now both are required,
a missing or unlisted one is refused naming the field in Chinese, and both are recorded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.feedback.sending import CONTACT_PURPOSE
from shared.reference import load_identity_purposes
from tests.support import System
from tests.test_pipeline import create_complaint

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_purposes_are_data_and_feedback_gives_one_of_them(tmp_path: Path) -> None:
    assert load_identity_purposes() == ("核查需要", "答复送达", "回访", "复查", "依法移送")
    assert CONTACT_PURPOSE in load_identity_purposes()
    own = tmp_path / "purposes.json"
    own.write_text(json.dumps({"purposes": ["核查需要", "信访复核"]}, ensure_ascii=False), encoding="utf-8")
    assert load_identity_purposes(own) == ("核查需要", "信访复核")
    own.write_text(json.dumps({"purposes": []}), encoding="utf-8")
    with pytest.raises(ValueError):
        load_identity_purposes(own)


async def test_an_identity_read_needs_a_listed_purpose_and_a_reason_and_records_both(system: System) -> None:
    created = await create_complaint(system)
    path = f"/api/v1/complaints/{created['id']}/identity"

    listed = await system.call("intake", "GET", "/api/v1/identity-purposes", as_user="operator1")
    assert listed.status_code == 200, listed.text
    assert listed.json() == list(load_identity_purposes())

    refused = {
        "nothing": ({}, {"purpose", "reason"}),
        "no reason": ({"purpose": "回访"}, {"reason"}),
        "no purpose": ({"reason": "回访核实身份"}, {"purpose"}),
        "unlisted purpose": ({"purpose": "好奇", "reason": "想看看"}, {"purpose"}),
        "blank reason": ({"purpose": "回访", "reason": "  "}, {"reason"}),
    }
    for case, (params, fields) in refused.items():
        response = await system.call("intake", "GET", path, as_user="operator1", params=params)
        assert response.status_code == 422, (case, response.text)
        detail = {item["field"]: item["message"] for item in response.json()["detail"]}
        assert set(detail) == fields, (case, detail)
        assert all(CJK.search(message) for message in detail.values()), detail
        if "purpose" in detail:
            assert "查阅事由" in detail["purpose"] and "核查需要" in detail["purpose"]
        if "reason" in detail:
            assert "查阅说明" in detail["reason"]
        assert "王建国" not in response.text

    read = await system.call(
        "intake", "GET", path, as_user="operator1", params={"purpose": "回访", "reason": "回访核实满意度"}
    )
    assert read.status_code == 200, read.text
    assert read.json()["name"] == "王建国"

    accesses = await system.call(
        "intake", "GET", f"/api/v1/complaints/{created['id']}/identity-accesses", as_user="supervisor1"
    )
    assert [(a["accessor"], a["purpose"], a["reason"]) for a in accesses.json()] == [
        ("operator1", "回访", "回访核实满意度")
    ]
