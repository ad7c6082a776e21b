"""Schemathesis against the four running services (issue 14, "Schemathesis in CI").

Every operation of the four OpenAPI documents is called with generated requests, as a supervisor
and as an operator (and as an inspector and a deputy on their own operations), with valid data
(positive), with data the schema forbids (negative), and with path parameters that name objects
built beforehand (a task, an extension, an answer ...), so that the code behind the 404 runs too.
The run fails on any 5xx and on any answer whose body or media type does not match what the
OpenAPI declares for its status code (the 422 body included). It is bounded: a few examples per
operation, a fixed Hypothesis seed (derandomize) so CI sees the same requests every time, no
shrinking. Every finding is collected before the test fails, one line each with a curl command.

The services run inside the test's event loop (tests/support.py), so schemathesis, which calls
them through ``requests``, runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.access_world import AccessWorld
from tests.support import SERVICE_NAMES, System

# Generated calls write teams, units, rules and accounts of every shape: a system of its own.
pytestmark = pytest.mark.private_system

# schemathesis's generic types, with the parameters this module does not narrow.
Operation = schemathesis.APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Operation]

ROLES = ("supervisor1", "operator1")
# Two more callers, each only on the operations that are its job (every other operation answers
# them 403, which the access matrix checks): the inspector of the team that owns the built tasks,
# and the deputy whose suggestion was answered.
SCOPED_ROLES = {
    "inspector": ("/api/v1/tasks/", "/api/v1/evidence/", "/api/v1/extensions", "/api/v1/rectifications/"),
    "deputy1": ("/api/v1/deputy/",),
}
EXAMPLES = {GenerationMode.POSITIVE: 5, GenerationMode.NEGATIVE: 3}
# With the path parameters naming objects that exist (built first, through the APIs).
KNOWN_OBJECT_EXAMPLES = 5
# A 5xx; a body that does not match the schema declared for its status code; a media type other
# than the declared one (a file declared as JSON). Status codes the OpenAPI does not declare (most
# operations' 401/403/404/409) are not checked: status_code_conformance is off.
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
# The calls take about 55 s on SQLite on a 2-core machine (building the objects before them about
# 20 s more; the report is printed with -s); the limit leaves room for PostgreSQL and a loaded CI
# machine.
TIME_LIMIT_SECONDS = 240
REQUEST_TIMEOUT_SECONDS = 20

# Operations not called, each with the reason. A test below fails when one of them is no longer
# in the OpenAPI, so this list cannot go stale silently.
EXCLUDED: dict[tuple[str, str, str], str] = {
    ("intake", "POST", "/api/v1/auth/token"): (
        "sign-in: generated wrong passwords for the demo accounts would throttle the test's own address "
        "and lock the accounts whose tokens the run uses (tests/test_sign_in_security.py covers it)"
    ),
    ("intake", "POST", "/api/v1/auth/logout"): "revokes the token the run is using",
}


@dataclass(frozen=True)
class Finding:
    service: str
    operation: str
    role: str
    mode: str
    title: str
    detail: str

    def line(self) -> str:
        return (
            f"{self.service} {self.operation} as {self.role} ({self.mode}): {self.title}\n    {self.detail}"
        )


@dataclass
class Tally:
    operations: int = 0
    calls: int = 0
    statuses: Counter[int] = field(default_factory=Counter)  # by hundreds: 2, 4, 5
    labels: set[str] = field(default_factory=set)
    answered_2xx: set[str] = field(default_factory=set)
    not_generated: list[str] = field(default_factory=list)
    without_known_objects: list[str] = field(default_factory=list)


def _summary(failure: Exception, case: Case) -> str:
    text = " ".join(str(failure).split())
    curl = case.as_curl_command(headers={"Authorization": "Bearer <token>"})
    return f"{text[:800]}\n    {curl[:800]}"


# Which built object fills an operation's path parameters: by the whole path, else by its first
# segment after /api/v1 (the parameter names alone are ambiguous: routing's {code} is a team or a
# unit).
OBJECT_FOR_PATH = {
    # A letter exists for a suggestion's answer only.
    "/api/v1/answers/{answer_id}/letter": "answered_suggestion",
    "/api/v1/deputy/suggestions/{case_id}/letter": "answered_suggestion",
    "/api/v1/deputy/suggestions/{case_id}/rating": "answered_suggestion",
}
OBJECT_FOR_PREFIX = {
    "audit": "answered",
    "complaints": "answered",
    "suggestions": "suggestion",
    # inspector-411622, an account this module never signs in with: deactivating it costs nothing.
    "users": "deactivate",
    "assignments": "answered",
    "rules": "rule",
    "teams": "team",
    "units": "unit",
    "tasks": "evidence",
    "extensions": "extension",
    "evidence": "evidence",
    "rectifications": "joint_rectification",
    "ledger": "answered",
    "cases": "answered",
    "answers": "pending_answer",
    "deliveries": "answered",
}
WORLD_OBJECTS = sorted(set(OBJECT_FOR_PREFIX.values()) | set(OBJECT_FOR_PATH.values()))


def known_path_parameters(operation: Operation, world: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Values naming existing objects for every path parameter, or None (no such object built:
    dead letters, or an operation without path parameters, which needs none)."""
    names = [parameter.name for parameter in operation.path_parameters]
    if not names:
        return None
    prefix = operation.path.removeprefix("/api/v1/").split("/")[0]
    obj = world.get(OBJECT_FOR_PATH.get(operation.path) or OBJECT_FOR_PREFIX.get(prefix, ""), {})
    if not all(obj.get(name) is not None for name in names):
        return None
    return {name: obj[name] for name in names}


def _exercise(
    operation: Operation,
    *,
    target: Target,
    role: str,
    mode: GenerationMode,
    known: dict[str, Any] | None = None,
) -> None:
    """Call one operation a few times; record the first finding of each kind.

    With ``known``, the path parameters name objects that exist (the rest is generated), so the
    call gets past the 404 to the code behind it.
    """
    label = f"{mode.value}, known objects" if known else mode.value
    headers = {"Authorization": f"Bearer {target.tokens[role]}"}
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=known)

    @given(case=strategy)
    @settings(
        max_examples=KNOWN_OBJECT_EXAMPLES if known else EXAMPLES[mode],
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case) -> None:
        target.tally.calls += 1
        try:
            response = case.call(
                base_url=target.base_url,
                session=target.session,
                headers=headers,
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except requests.RequestException as exc:
            target.record(operation, role, label, "no answer", _summary(exc, case))
            return
        target.tally.statuses[response.status_code // 100] += 1
        if response.status_code < 300:
            target.tally.answered_2xx.add(f"{target.service} {operation.label}")
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                target.record(operation, role, label, failure.title, _summary(failure, case))

    try:
        run()
    except Unsatisfiable:
        # A negative example needs something to break: an operation without parameters or body
        # (or whose only parameters are fixed to known objects) has none.
        target.tally.not_generated.append(f"{target.service} {operation.label} ({label})")


@dataclass
class Target:
    """One service under test and what the run collects about it."""

    service: str
    base_url: str
    tokens: dict[str, str]
    session: requests.Session
    tally: Tally
    findings: dict[tuple[str, str, str, str], Finding]

    def record(self, operation: Operation, role: str, label: str, title: str, detail: str) -> None:
        key = (self.service, operation.label, role, title)
        self.findings.setdefault(key, Finding(self.service, operation.label, role, label, title, detail))


def _run_all(
    documents: dict[str, dict[str, Any]],
    urls: dict[str, str],
    tokens: dict[str, str],
    world: dict[str, dict[str, Any]],
) -> tuple[list[Finding], Tally]:
    findings: dict[tuple[str, str, str, str], Finding] = {}
    tally = Tally()
    with requests.Session() as session:
        for service, document in documents.items():
            target = Target(service, urls[service], tokens, session, tally, findings)
            schema = schemathesis.openapi.from_dict(document)
            for result in schema.get_all_operations():
                if isinstance(result, Err):
                    raise AssertionError(f"{service}: an operation schemathesis cannot read: {result.err()}")
                operation = result.ok()
                if (service, operation.method.upper(), operation.path) in EXCLUDED:
                    continue
                tally.operations += 1
                tally.labels.add(f"{service} {operation.label}")
                known = known_path_parameters(operation, world)
                scoped = [role for role, paths in SCOPED_ROLES.items() if operation.path.startswith(paths)]
                for role in [*ROLES, *(role for role in scoped if role in tokens)]:
                    for mode in EXAMPLES:
                        _exercise(operation, target=target, role=role, mode=mode)
                    if known:
                        _exercise(
                            operation, target=target, role=role, mode=GenerationMode.POSITIVE, known=known
                        )
                if known is None and operation.path_parameters:
                    tally.without_known_objects.append(f"{service} {operation.label}")
    return list(findings.values()), tally


async def _documents(system: System) -> dict[str, dict[str, Any]]:
    documents = {}
    for service in SERVICE_NAMES:
        response = await system.client(service).get("/api/openapi.json")
        response.raise_for_status()
        documents[service] = response.json()
    return documents


def _operations(documents: dict[str, dict[str, Any]]) -> set[tuple[str, str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return {
        (service, method.upper(), path)
        for service, document in documents.items()
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }


async def test_every_exclusion_names_an_operation_that_exists(system: System) -> None:
    stale = set(EXCLUDED) - _operations(await _documents(system))
    assert not stale, f"excluded operations no longer in the OpenAPI: {sorted(stale)}"


@pytest.fixture(scope="module")
async def world(system: System) -> dict[str, dict[str, Any]]:
    """The objects the known-object calls name, built through the services' own APIs."""
    access = AccessWorld(system)
    built = {name: await access.get(name, scope="schemathesis") for name in WORLD_OBJECTS}
    deliveries = await system.call(
        "feedback",
        "GET",
        "/api/v1/deliveries",
        as_user="supervisor1",
        params={"case_id": built["answered"]["case_id"]},
    )
    assert deliveries.status_code == 200, deliveries.text
    if deliveries.json():
        built["answered"] = built["answered"] | {"delivery_id": deliveries.json()[0]["id"]}
    return built


async def test_the_checks_catch_a_wrong_declaration(system: System) -> None:
    """The run can fail: /healthz declared with a field it never sends is a finding."""
    document = copy.deepcopy((await _documents(system))["intake"])
    healthz = document["paths"]["/healthz"]
    healthz["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "type": "object",
        "required": ["no_such_field"],
    }
    document["paths"] = {"/healthz": healthz}
    findings, _ = await asyncio.to_thread(
        _run_all, {"intake": document}, system.urls, dict.fromkeys(ROLES, "none"), {}
    )
    assert [(f.operation, f.title) for f in findings] == [("GET /healthz", "Response violates schema")] * len(
        ROLES
    ), findings


async def test_no_server_error_and_every_answer_matches_its_schema(
    system: System, world: dict[str, dict[str, Any]]
) -> None:
    documents = await _documents(system)
    # One sign-in per account (system.token keeps the token): sign-in is throttled per address.
    accounts = {role: role for role in ROLES} | {
        "inspector": f"inspector-{world['evidence']['owner']}",
        "deputy1": "deputy1",
    }
    tokens = {role: await system.token(account) for role, account in accounts.items()}
    started = time.monotonic()
    findings, tally = await asyncio.to_thread(_run_all, documents, system.urls, tokens, world)
    elapsed = time.monotonic() - started
    report = (
        f"schemathesis: {tally.operations} operations ({len(EXCLUDED)} excluded), {tally.calls} calls "
        f"as {', '.join(ROLES)} (and {', '.join(SCOPED_ROLES)} on their own operations) in {elapsed:.0f} s; "
        f"answers 2xx/4xx/5xx: {tally.statuses[2]}/{tally.statuses[4]}/{tally.statuses[5]}; "
        f"{len(tally.answered_2xx)} operations answered 2xx at least once; "
        f"no negative example possible for {len(tally.not_generated)} runs; "
        f"no known objects for: {', '.join(tally.without_known_objects) or 'none'}"
    )
    print(report)
    print("never answered 2xx:", ", ".join(sorted(tally.labels - tally.answered_2xx)))
    print("no negative example possible:", ", ".join(tally.not_generated))
    assert not findings, report + "\n" + "\n".join(f.line() for f in findings)
    assert elapsed < TIME_LIMIT_SECONDS, report
