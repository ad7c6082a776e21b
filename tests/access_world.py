"""The objects and callers the access matrix (tests/access_matrix.yaml) is driven with.

Every object is made through the services' own APIs, as a client would, and described by a flat
dict: the path parameters it fills (``case_id``, ``task_id`` ...), the teams related to it
(``owner``, ``reviewer``, ``participant``) and the public query's ``tracking_code`` and
``query_secret``. A caller is a role and, for an inspector, a relation to that object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from services.routing.schemas import RuleUpdate, TeamUpdate, UnitUpsert
from shared.auth import (
    BUREAU_CONTACT_AUDIENCE,
    CONTACT_AUDIENCE,
    Principal,
    Role,
    TokenSigner,
    issue_token,
    service_token,
)
from shared.db import utcnow
from tests import fixtures
from tests.support import TOKEN_KEYS_ENVIRONMENT, System, eventually, token_signer_for_tests
from tests.test_pipeline import current_assignment, task_for

Obj = dict[str, Any]

# A team no object of the matrix is ever routed to, reviewed by or shared with.
UNRELATED_TEAM = "411627"
# Accounts with one job each in the matrix, so that job cannot disturb any other row.
SIGN_IN_ACCOUNT = "inspector-411621"
LOGOUT_ACCOUNT = "inspector-411628"
DEACTIVATED_ACCOUNT = "inspector-411622"
# A county bureau's 分管领导 (沈丘): no object of the matrix is about their county.
LEADER_ACCOUNT = "leader-411624"
WRONG_SECRET = "AAAAA-BBBBB"
SUMMARY = "经调取执法记录仪视频并询问在场人员，民警言语不文明属实，已对其批评教育。"
REPLY = "一是厘清执法权责边界，制定执法权力清单。\n二是推进执法记录仪全程使用，纳入日常督察。"
# A deputy who exists nowhere but in a well-signed token: they must see none of 马刚's suggestions.
OTHER_DEPUTY = Principal(
    username="deputy-other", role=Role.DEPUTY, deputy_name="李桂英", deputy_delegation="郸城县代表团"
)

SHANGSHUI_CROSS_CHECK = {
    "accused": {
        "unit": "商水县公安局交警大队",
        "county_code": "411623",
        "officer_name": None,
        "badge_no": None,
    },
    "category": "吃拿卡要",
}
DANCHENG_JOINT_CHECK = {
    "accused": {
        "unit": "郸城县公安局城关派出所",
        "county_code": "411625",
        "officer_name": "李某",
        "badge_no": None,
    },
    "category": "吃拿卡要",
}


class AccessWorld:
    """Builds the matrix's objects on demand; ``get`` keeps one per (name, scope)."""

    def __init__(self, system: System) -> None:
        self.system = system
        self._cache: dict[tuple[str, str], Obj] = {}
        self._builders: dict[str, Callable[[], Awaitable[Obj]]] = {
            "none": self._none,
            "complaint": self.complaint,
            "claimed": self.claimed,
            "suggestion": self.suggestion,
            "pending_review": self.pending_review,
            "in_review": self.in_review,
            "joint_open": self.joint_open,
            "joint_claimed": self.joint_claimed,
            "joint_rectification": self.joint_rectification,
            "co_task": self.co_task,
            "b_class": self.b_class,
            "extension": self.extension,
            "evidence": self.evidence,
            "pending_answer": self.pending_answer,
            "answered": self.answered,
            "failed_delivery": self.failed_delivery,
            "answered_suggestion": self.answered_suggestion,
            "rule": self.rule,
            "team": self.team,
            "unit": self.unit,
            "sign_in": self._sign_in,
            "unlock": self._unlock,
            "deactivate": self._deactivate,
            "no_dead_letter": self._no_dead_letter,
            "no_notification": self._no_notification,
            "no_import": self._no_import,
            "no_report": self._no_report,
            "bureau": self._bureau,
        }

    def known(self, name: str) -> bool:
        return name in self._builders

    async def get(self, name: str, *, scope: str) -> Obj:
        key = (name, scope)
        if key not in self._cache:
            self._cache[key] = await self._builders[name]()
        return self._cache[key]

    # --- callers ---------------------------------------------------------------------------------

    async def headers(self, caller: str, obj: Obj) -> dict[str, str]:
        """The Authorization header of ``caller`` for a row about ``obj`` (none for the public)."""
        if caller in ("anonymous", "public", "public_wrong_secret"):
            return {}
        if caller == "other_deputy":
            return bearer(
                issue_token(
                    principal=OTHER_DEPUTY, signer=token_signer_for_tests(), ttl=timedelta(minutes=30)
                )
            )
        if caller == "feedback_service":
            signer = TokenSigner.from_pem(
                TOKEN_KEYS_ENVIRONMENT["CALLER_PRIVATE_KEY"], key_id=TOKEN_KEYS_ENVIRONMENT["CALLER_KEY_ID"]
            )
            return bearer(service_token(service="feedback", signer=signer, audience=CONTACT_AUDIENCE))
        if caller == "feedback_contacts_service":
            signer = TokenSigner.from_pem(
                TOKEN_KEYS_ENVIRONMENT["CALLER_PRIVATE_KEY"], key_id=TOKEN_KEYS_ENVIRONMENT["CALLER_KEY_ID"]
            )
            return bearer(service_token(service="feedback", signer=signer, audience=BUREAU_CONTACT_AUDIENCE))
        if caller == "fresh_sign_in":
            # Its own sign-in, never cached: the row signs this token out.
            return bearer(await self._signed_in(LOGOUT_ACCOUNT))
        return await self.system.auth(self.username(caller, obj))

    @staticmethod
    def username(caller: str, obj: Obj) -> str:
        accounts = {
            "operator": "operator1",
            "supervisor": "supervisor1",
            "deputy": "deputy1",
            "leader": LEADER_ACCOUNT,
        }
        if caller in accounts:
            return accounts[caller]
        teams = {
            "owner_team": obj.get("owner"),
            "reviewing_team": obj.get("reviewer"),
            "participant_team": obj.get("participant"),
            "other_team": UNRELATED_TEAM,
        }
        team = teams.get(caller)
        if not team:
            raise AssertionError(f"caller {caller!r} has no account for this object: {obj}")
        return f"inspector-{team}"

    async def _signed_in(self, username: str) -> str:
        response = await self.system.call(
            "intake", "POST", "/api/v1/auth/token", data={"username": username, "password": "demo"}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    # --- objects ---------------------------------------------------------------------------------

    async def _none(self) -> Obj:
        return {}

    async def _sign_in(self) -> Obj:
        return {"username": SIGN_IN_ACCOUNT}

    async def _unlock(self) -> Obj:
        return {"username": SIGN_IN_ACCOUNT}

    async def _deactivate(self) -> Obj:
        return {"username": DEACTIVATED_ACCOUNT}

    async def _no_dead_letter(self) -> Obj:
        # Making a real dead letter takes a poison event on the bus; an unknown sequence shows the
        # caller got past the access check (404) or not (401/403).
        return {"letter_id": 999_999}

    async def _bureau(self) -> Obj:
        # A bureau no object of the matrix concerns; the PUT writes a leader's contact there.
        return {"code": UNRELATED_TEAM}

    async def _no_import(self) -> Obj:
        # An unknown bulk import: 404 shows the caller got past the access check, 401/403 not.
        # tests/test_imports.py reads real ones.
        return {"import_id": "no-such-import"}

    async def _no_report(self) -> Obj:
        # An unknown 督察工作通报: 404 shows the caller got past the role check, 401/403 not.
        # tests/test_reports.py reads real ones, as a supervisor and as leaders of two counties.
        return {"report_id": "no-such-report"}

    async def _no_notification(self) -> Obj:
        # A notification is someone's; an unknown id answers like another person's (404), so the
        # caller got past the access check (404) or not (401).  tests/test_notifications.py reads
        # a real one as its recipient and as others.
        return {"notification_id": "no-such-notification"}

    async def _created(self, path: str, body: dict[str, Any]) -> Obj:
        response = await self.system.call("intake", "POST", path, as_user="operator1", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def _routed(self, created: Obj, *, id_key: str) -> Obj:
        """The matter once routing placed it and verification opened its task."""
        case_id = created["id"]
        assignment = await current_assignment(self.system, case_id)
        owner = assignment["team_code"]
        task = await task_for(self.system, case_id, f"inspector-{owner}")
        participants = assignment.get("participants") or []
        return {
            id_key: case_id,
            "case_id": case_id,
            "task_id": task["id"],
            "owner": owner,
            "reviewer": assignment.get("review_team_code"),
            "participant": participants[0] if participants else None,
            "tracking_code": created["tracking_code"],
            "query_secret": created.get("query_secret"),
        }

    async def complaint(self, **overrides: Any) -> Obj:
        """A complaint routed to the accused county's team (项城, 411681), its task open, known to
        intake's team view and to the public query."""
        body = fixtures.complaint(**({"received_at": received_now()} | overrides))
        obj = await self._routed(await self._created("/api/v1/complaints", body), id_key="complaint_id")
        await self._visible_in_intake(obj)
        await self._in_public_query(obj)
        return obj

    async def _visible_in_intake(self, obj: Obj) -> None:
        async def probe() -> bool:
            response = await self.system.call(
                "intake", "GET", f"/api/v1/complaints/{obj['case_id']}", as_user="supervisor1"
            )
            return response.status_code == 200 and response.json()["assigned_team_code"] == obj["owner"]

        await eventually(probe, what="intake knows the complaint's team")

    async def _in_public_query(self, obj: Obj, status: str | None = None) -> None:
        async def probe() -> bool:
            response = await self.system.call(
                "feedback",
                "POST",
                "/api/v1/public/lookup",
                json={"tracking_code": obj["tracking_code"], "query_secret": obj["query_secret"]},
            )
            return response.status_code == 200 and (status is None or response.json()["status"] == status)

        await eventually(probe, what=f"public query {status or 'known'}")

    async def claimed(self) -> Obj:
        obj = await self.complaint()
        await self._claim(obj)
        return obj

    async def _claim(self, obj: Obj) -> None:
        response = await self.system.call(
            "verification",
            "POST",
            f"/api/v1/tasks/{obj['task_id']}/claim",
            as_user=f"inspector-{obj['owner']}",
        )
        assert response.status_code == 200, response.text

    async def _finding(self, obj: Obj, body: dict[str, Any]) -> Obj:
        response = await self.system.call(
            "verification",
            "POST",
            f"/api/v1/tasks/{obj['task_id']}/finding",
            as_user=f"inspector-{obj['owner']}",
            json=body,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def suggestion(self) -> Obj:
        """马刚's suggestion, routed to the city team and its task open."""
        return await self._routed(
            await self._created("/api/v1/suggestions", fixtures.suggestion(received_at=received_now())),
            id_key="suggestion_id",
        )

    async def pending_review(self) -> Obj:
        """A matter that must be cross-checked, before its finding: the reviewer cannot see it yet."""
        obj = await self.complaint(**SHANGSHUI_CROSS_CHECK)
        assert obj["reviewer"] and obj["reviewer"] != obj["owner"], obj
        return obj

    async def in_review(self) -> Obj:
        obj = await self.pending_review()
        await self._claim(obj)
        found = await self._finding(obj, {"outcome": "unsubstantiated", "summary": "未发现违规收费。"})
        assert found["review_status"] == "pending", found
        return obj

    async def joint_open(self) -> Obj:
        """A joint check: the city team leads, the accused county (郸城, 411625) takes part."""
        obj = await self.complaint(**DANCHENG_JOINT_CHECK)
        assert (obj["owner"], obj["participant"]) == ("411600", "411625"), obj
        return obj

    async def joint_claimed(self) -> Obj:
        obj = await self.joint_open()
        await self._claim(obj)
        return obj

    async def joint_rectification(self) -> Obj:
        """The joint check's finding with a rectification item to certify (``item_id``)."""
        obj = await self.joint_claimed()
        await self._finding(
            obj,
            {
                "outcome": "substantiated",
                "summary": SUMMARY,
                "accountability": ["诫勉谈话"],
                "rectifications": [
                    {
                        "item": "退还所收财物并公开道歉",
                        "owner": "城关派出所所长",
                        "due_date": "2026-12-20T17:30:00+08:00",
                    }
                ],
            },
        )
        items = await self.system.call(
            "verification", "GET", f"/api/v1/tasks/{obj['task_id']}/rectifications", as_user="supervisor1"
        )
        assert items.status_code == 200, items.text
        return obj | {"item_id": items.json()[0]["id"]}

    async def co_task(self) -> Obj:
        """A suggestion the city team handles with 郸城's bureau as co-handling unit (participant)."""
        obj = await self._routed(
            await self._created(
                "/api/v1/suggestions",
                fixtures.suggestion(co_units=["郸城县公安局"], received_at=received_now()),
            ),
            id_key="suggestion_id",
        )
        assert obj["participant"] == "411625", obj
        return obj

    async def b_class(self) -> Obj:
        """A suggestion answered B-class (in hand): a follow-up reply is due."""
        obj = await self.suggestion()
        await self._claim(obj)
        await self._finding(
            obj,
            {
                "outcome": "no_finding",
                "no_finding_reason": "建议答复",
                "classification": "B",
                "summary": REPLY,
            },
        )
        return obj

    async def extension(self) -> Obj:
        obj = await self.claimed()
        response = await self.system.call(
            "verification",
            "POST",
            f"/api/v1/tasks/{obj['task_id']}/extensions",
            as_user=f"inspector-{obj['owner']}",
            json={"clock": "verification", "days": 10, "reason": "需调取外地监控录像"},
        )
        assert response.status_code == 201, response.text
        return obj | {"extension_id": response.json()["id"]}

    async def evidence(self) -> Obj:
        obj = await self.claimed()
        response = await self.system.call(
            "verification",
            "POST",
            f"/api/v1/tasks/{obj['task_id']}/evidence",
            as_user=f"inspector-{obj['owner']}",
            data={"kind": "recording", "description": "执法记录仪视频"},
            files={"file": ("bodycam.mp4", b"body-camera-export" * 64, "video/mp4")},
        )
        assert response.status_code == 201, response.text
        return obj | {"evidence_id": response.json()["id"]}

    async def _answer_of(self, obj: Obj, status: str) -> str:
        async def probe() -> str | None:
            response = await self.system.call(
                "feedback",
                "GET",
                "/api/v1/answers",
                as_user="supervisor1",
                params={"case_id": obj["case_id"]},
            )
            assert response.status_code == 200, response.text
            found = [a["id"] for a in response.json() if a["status"] == status]
            return found[-1] if found else None

        return str(await eventually(probe, what=f"answer {status}"))

    async def pending_answer(self) -> Obj:
        """A complaint concluded by its team, the answer drafted and waiting for approval."""
        obj = await self.claimed()
        await self._finding(obj, {"outcome": "partly_substantiated", "summary": SUMMARY})
        return obj | {"answer_id": await self._answer_of(obj, "pending_approval")}

    async def _approve(self, obj: Obj) -> None:
        response = await self.system.call(
            "feedback", "POST", f"/api/v1/answers/{obj['answer_id']}/approve", as_user="supervisor1"
        )
        assert response.status_code == 200, response.text

    async def answered(self) -> Obj:
        obj = await self.pending_answer()
        await self._approve(obj)
        await self._in_public_query(obj, "answered")
        return obj

    async def failed_delivery(self) -> Obj:
        """An answered complaint whose text message failed every attempt (the gateway is down)."""
        obj = await self.answered()

        async def probe() -> str | None:
            response = await self.system.call(
                "feedback",
                "GET",
                "/api/v1/deliveries",
                as_user="supervisor1",
                params={"case_id": obj["case_id"]},
            )
            assert response.status_code == 200, response.text
            failed = [d["id"] for d in response.json() if d["status"] == "failed" and d["mode"] == "auto"]
            return failed[0] if failed else None

        return obj | {"delivery_id": await eventually(probe, what="failed delivery")}

    async def answered_suggestion(self) -> Obj:
        """马刚's suggestion answered C-class, the reply letter approved."""
        obj = await self.suggestion()
        await self._claim(obj)
        await self._finding(
            obj,
            {"outcome": "substantiated", "summary": REPLY, "classification": "C"},
        )
        obj |= {"answer_id": await self._answer_of(obj, "pending_approval")}
        await self._approve(obj)

        async def probe() -> bool:
            response = await self.system.call(
                "feedback", "GET", "/api/v1/deputy/suggestions", as_user="deputy1"
            )
            return any(r["case_id"] == obj["case_id"] and r["can_rate"] for r in response.json())

        await eventually(probe, what="the deputy sees the answer")
        return obj

    async def _current(self, path: str, key: str, value: str, model: type[Any]) -> dict[str, Any]:
        response = await self.system.call("routing", "GET", path, as_user="supervisor1")
        assert response.status_code == 200, response.text
        row = next(r for r in response.json() if r[key] == value)
        return {name: row[name] for name in model.model_fields if name in row}

    async def rule(self) -> Obj:
        """A rule and its current values: the PUT changes nothing but is recorded."""
        body = await self._current("/api/v1/rules", "name", "ordinary_county", RuleUpdate)
        return {"name": "ordinary_county", "body": body | {"reason": "访问权限核对，内容不变"}}

    async def team(self) -> Obj:
        return {
            "code": UNRELATED_TEAM,
            "body": await self._current("/api/v1/teams", "code", UNRELATED_TEAM, TeamUpdate),
        }

    async def unit(self) -> Obj:
        response = await self.system.call("routing", "GET", "/api/v1/units", as_user="supervisor1")
        assert response.status_code == 200, response.text
        code = response.json()[0]["code"]
        return {"code": code, "body": await self._current("/api/v1/units", "code", code, UnitUpsert)}


def received_now() -> str:
    """Received a moment ago: the matrix's matters are within every deadline (an extension can
    only be asked before its clock runs out)."""
    return (utcnow() - timedelta(minutes=5)).isoformat()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
