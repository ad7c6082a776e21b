"""The access matrix (tests/access_matrix.yaml): every operation of the four OpenAPI documents has
rows, and every row's caller gets the answer class the matrix says (issue 14)."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests import fixtures
from tests.access_world import WRONG_SECRET, AccessWorld, Obj
from tests.support import SERVICE_NAMES, NatsServer, System, free_port, running_system
from tests.test_feedback_support import outside_world_env

MATRIX_FILE = Path(__file__).with_name("access_matrix.yaml")
CALLERS = {
    "anonymous",
    "operator",
    "supervisor",
    "owner_team",
    "other_team",
    "reviewing_team",
    "participant_team",
    "deputy",
    "other_deputy",
    "feedback_service",
    "feedback_contacts_service",
    "leader",
    "fresh_sign_in",
    "public",
    "public_wrong_secret",
}
ANSWERS = {"2xx", 401, 403, 404, 409, 422}
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
NEW_MATTERS = {"$complaint": fixtures.complaint, "$suggestion": fixtures.suggestion}
_fresh = itertools.count(1)


def load_matrix() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(MATRIX_FILE.read_text(encoding="utf-8"))["operations"])


MATRIX = load_matrix()


@pytest.fixture(scope="module")
async def system(
    backend: str, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    # A gateway nobody listens on: text messages fail, so deliveries wait for a person to retry
    # or resolve them.
    dead_gateway = outside_world_env(gateway=None, mailbox=None) | {
        "SMS_GATEWAY_URL": f"http://127.0.0.1:{free_port()}/sms"
    }
    async with running_system(
        backend=backend,
        root=tmp_path_factory.mktemp(f"access-matrix-{backend}"),
        nats_url=nats_server.url,
        extra_env=dead_gateway,
    ) as running:
        yield running


def test_the_matrix_is_well_formed() -> None:
    problems = []
    world = AccessWorld(System(urls={}, env={}, nats_url=""))
    for key, operation in MATRIX.items():
        if len(key.split(" ")) != 3 or key.split(" ")[0] not in SERVICE_NAMES:
            problems.append(f"{key}: not '<service> <METHOD> <path>'")
        for row in operation["rows"]:
            if row["as"] not in CALLERS:
                problems.append(f"{key}: unknown caller {row['as']!r}")
            if row["expect"] not in ANSWERS:
                problems.append(f"{key}: unknown answer class {row['expect']!r}")
            if not world.known(row.get("object", operation.get("object", "none"))):
                problems.append(f"{key}: unknown object in {row}")
        if not any(row["as"] in ("anonymous", "public_wrong_secret") for row in operation["rows"]):
            problems.append(f"{key}: no row for a caller without the right to it")
    assert not problems, "\n".join(problems)


async def test_every_operation_of_the_openapi_documents_has_rows(system: System) -> None:
    documented = set()
    for service in SERVICE_NAMES:
        response = await system.client(service).get("/api/openapi.json")
        assert response.status_code == 200, response.text
        for path, operations in response.json()["paths"].items():
            documented |= {f"{service} {method.upper()} {path}" for method in operations}
    missing, stale = sorted(documented - set(MATRIX)), sorted(set(MATRIX) - documented)
    assert not missing, "operations without rows in access_matrix.yaml:\n" + "\n".join(missing)
    assert not stale, "rows for operations no OpenAPI document has:\n" + "\n".join(stale)


async def test_every_caller_gets_the_answer_the_matrix_gives(system: System) -> None:
    """Drives every row; collects every wrong answer so one run shows all of them."""
    world = AccessWorld(system)
    ordered = sorted(MATRIX.items(), key=lambda item: bool(item[1].get("last")))
    wrong: list[str] = []
    for key, operation in ordered:
        for number, row in enumerate(operation["rows"], start=1):
            label = f"{key} row {number} ({row['as']}{', issue ' + row['issue'] if 'issue' in row else ''})"
            try:
                response = await drive(world, key, operation, row)
            except Exception as error:  # a row whose objects could not be made is a wrong row too
                wrong.append(f"{label}: could not be driven: {error!r}")
                continue
            if not answers_as(response.status_code, row["expect"]):
                wrong.append(
                    f"{label}: expected {row['expect']}, got {response.status_code} {response.text[:300]}"
                )
    assert not wrong, f"{len(wrong)} rows answered otherwise:\n" + "\n".join(wrong)


def answers_as(status: int, expected: str | int) -> bool:
    return 200 <= status < 300 if expected == "2xx" else status == expected


async def drive(
    world: AccessWorld, key: str, operation: dict[str, Any], row: dict[str, Any]
) -> httpx.Response:
    service, method, path = key.split(" ")
    name = row.get("object", operation.get("object", "none"))
    # GETs change nothing and share their objects; a state change gets objects of its own.
    scope = f"fresh-{next(_fresh)}" if row.get("fresh") else ("shared" if method == "GET" else key)
    obj = await world.get(name, scope=scope)
    values: Obj = obj | ({"query_secret": WRONG_SECRET} if row["as"] == "public_wrong_secret" else {})
    request: dict[str, Any] = {"headers": await world.headers(row["as"], obj)}
    for part, option in (("body", "json"), ("form", "data"), ("multipart", "files"), ("params", "params")):
        template = row.get(part, operation.get(part))
        if template is None:
            continue
        filled = fill(template, values)
        if option == "files":
            # Form fields sent as multipart parts, as a browser's form with a file input does.
            filled = {field: (None, str(value)) for field, value in filled.items()}
        request[option] = filled
    url = PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), path.replace("{", "${"))
    return await world.system.client(service).request(method, url, **request)


def fill(template: Any, values: Obj) -> Any:
    """The template with every ``${name}`` taken from the row's object, and ``$complaint`` or
    ``$suggestion`` made a new matter's body (tests/fixtures.py)."""
    if isinstance(template, dict):
        return {key: fill(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [fill(value, values) for value in template]
    if isinstance(template, str) and template in NEW_MATTERS:
        return NEW_MATTERS[template]()
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        if whole:
            return values[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)
    return template
