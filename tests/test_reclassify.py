"""A matter filed as the wrong kind is moved to the right track, and nothing is lost."""

from __future__ import annotations

from services.feedback.models import CaseStatus, CaseView
from tests import fixtures
from tests.support import System, eventually
from tests.test_pipeline import create_complaint, current_assignment, public_status, task_for


async def projected(system: System, case_id: str, status: CaseStatus | None = None) -> None:
    """Wait until feedback has projected the matter (and, given ``status``, brought it there).

    Read in feedback's own tables, not through the public query: where its limiter is on, each
    unknown code counts as a failed attempt against the caller's address, and polling it before the
    projection arrives would earn a 429.  The test then makes one public query, and checks it.
    """
    sessions = system.apps["feedback"].state.runtime.session_factory

    async def arrived() -> bool:
        async with sessions() as session:
            case = await session.get(CaseView, case_id)
        return case is not None and (status is None or case.status == status)

    # The projection follows the bus, whose redeliveries back off; a loaded machine needs the margin.
    await eventually(arrived, timeout=30.0, what=f"feedback's projection of {case_id} ({status or 'any'})")


async def test_citizen_suggestion_filed_as_complaint_leaves_inspection(system: System) -> None:
    created = await create_complaint(
        system,
        accused={"unit": "商水县公安局", "county_code": "411623", "officer_name": None, "badge_no": None},
        category="其他违法违纪",
        account="建议商水县公安局办事大厅增加周末窗口，上班族办证太难了。",
    )
    await current_assignment(system, created["id"])
    task = await task_for(system, created["id"], "inspector-411623")

    refused = await system.call(
        "intake",
        "POST",
        f"/api/v1/complaints/{created['id']}/reclassify",
        as_user="operator1",
        json={"to_kind": "citizen_suggestion", "reason": "内容为工作建议"},
    )
    assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "forwarded_to"
    response = await system.call(
        "intake",
        "POST",
        f"/api/v1/complaints/{created['id']}/reclassify",
        as_user="operator1",
        json={
            "to_kind": "citizen_suggestion",
            "reason": "内容为改进工作的建议，不涉及民警违法违纪",
            "forwarded_to": "商水县公安局",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "reclassified"

    async def withdrawn() -> bool:
        tasks = await system.call(
            "verification", "GET", "/api/v1/tasks", as_user="supervisor1", params={"case_id": created["id"]}
        )
        return any(t["id"] == task["id"] and t["status"] == "withdrawn" for t in tasks.json())

    await eventually(withdrawn, what="task withdrawn")

    await projected(system, created["id"], CaseStatus.CLOSED)
    result = await public_status(system, created)
    assert result["status"] == "closed"
    assert "群众建议" in result["timeline"][-1]["label"]

    again = await system.call(
        "intake",
        "POST",
        f"/api/v1/complaints/{created['id']}/reclassify",
        as_user="operator1",
        json={"to_kind": "citizen_suggestion", "reason": "重复操作", "forwarded_to": "商水县公安局"},
    )
    assert again.status_code == 409


async def test_complaint_refiled_as_deputy_suggestion(system: System) -> None:
    created = await create_complaint(system)
    await current_assignment(system, created["id"])
    response = await system.call(
        "intake",
        "POST",
        f"/api/v1/complaints/{created['id']}/reclassify",
        as_user="operator1",
        json={
            "to_kind": "suggestion",
            "reason": "来件为人大代表建议，误登记为投诉",
            "suggestion": fixtures.suggestion(),
        },
    )
    assert response.status_code == 200, response.text
    moved = response.json()
    assert moved["new_case_id"] and moved["tracking_code"].startswith("S") and moved["query_secret"]

    async def deputy_sees_it() -> bool:
        rows = await system.call("feedback", "GET", "/api/v1/deputy/suggestions", as_user="deputy1")
        return any(r["case_id"] == moved["new_case_id"] for r in rows.json())

    await eventually(deputy_sees_it, what="deputy view of the refiled suggestion")
    only_operators = await system.call(
        "intake",
        "POST",
        f"/api/v1/complaints/{created['id']}/reclassify",
        as_user="supervisor1",
        json={"to_kind": "citizen_suggestion", "reason": "x" * 5, "forwarded_to": "商水县公安局"},
    )
    assert only_operators.status_code == 403


async def test_a_suggestion_can_be_followed_on_the_public_query(system: System) -> None:
    response = await system.call(
        "intake", "POST", "/api/v1/suggestions", as_user="operator1", json=fixtures.suggestion()
    )
    assert response.status_code == 201, response.text
    created = response.json()

    await projected(system, created["id"])
    result = await public_status(system, created)
    assert result["kind"] == "suggestion" and "马刚" not in str(result)
