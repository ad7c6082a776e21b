"""The query secret is shown once and never stored in clear (issue 14, item 7).

A create with an ``Idempotency-Key`` remembers its answer for a retry; the answer holds the
query secret.  It is stored sealed with the identity key, so a retry still gets the same secret
while no table, and on SQLite no byte of the database files, holds it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.identity import IdentityVault
from shared import idempotency
from shared.idempotency import SEALED_FIELDS, WITHHELD
from shared.migrations import upgrade
from tests import fixtures
from tests.support import System


def _every_value(connection: Connection) -> list[tuple[str, str]]:
    """(table, value as text) for every column of every row of every table of the database."""
    metadata = sa.MetaData()
    metadata.reflect(bind=connection)
    values: list[tuple[str, str]] = []
    for table in metadata.sorted_tables:
        for row in connection.execute(sa.select(table)):
            values.extend((table.name, str(value)) for value in row if value is not None)
    return values


async def _stored_texts(system: System) -> list[tuple[str, str]]:
    engine: AsyncEngine = system.apps["intake"].state.runtime.engine
    async with engine.connect() as connection:
        return await connection.run_sync(_every_value)


def _database_files(system: System) -> list[Path]:
    url = system.apps["intake"].state.runtime.engine.url
    if url.get_backend_name() != "sqlite" or not url.database:
        return []
    base = Path(url.database)
    return [path for path in (base, base.with_name(base.name + "-wal")) if path.exists()]


async def _created_twice(system: System, path: str, body: dict[str, Any]) -> dict[str, Any]:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await system.call("intake", "POST", path, as_user="operator1", json=body, headers=key)
    again = await system.call("intake", "POST", path, as_user="operator1", json=body, headers=key)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.headers.get("Idempotent-Replayed") == "true"
    # The retry (a network blip lost the first answer) still shows the secret, the same one.
    assert again.json() == first.json()
    assert again.json()["query_secret"] == first.json()["query_secret"]
    return dict(first.json())


async def test_no_intake_table_holds_a_query_secret_in_clear_and_a_retry_still_gets_it(
    system: System,
) -> None:
    created = [
        await _created_twice(system, "/api/v1/complaints", fixtures.complaint()),
        await _created_twice(system, "/api/v1/suggestions", fixtures.suggestion()),
    ]
    secrets = [c["query_secret"] for c in created]
    assert all(secrets)

    stored = await _stored_texts(system)
    answers = [json.loads(text) for table, text in stored if table == "idempotency" and text.startswith("{")]
    assert {a["id"] for a in answers} >= {c["id"] for c in created}
    for answer in answers:
        assert "query_secret" not in answer and answer[SEALED_FIELDS]["query_secret"]
    for secret in secrets:
        for needle in (secret, secret.replace("-", "")):
            leaks = [table for table, text in stored if needle in text]
            assert not leaks, f"query secret stored in clear in {leaks}"
            for path in _database_files(system):
                assert needle.encode() not in path.read_bytes(), f"query secret in {path.name}"


def test_answers_stored_before_the_fix_lose_their_clear_secret(tmp_path: Path) -> None:
    database = tmp_path / "intake.db"
    url = f"sqlite:///{database}"
    upgrade("intake", url, "0005")
    before = {
        "id": "c1",
        "tracking_code": "C261130ABCDEF",
        "query_secret": "AB2CD-EF3GH",
        "status": "received",
    }
    with sqlite3.connect(database) as connection:
        connection.execute(
            "INSERT INTO idempotency (key, username, endpoint, request_hash, status_code, response_body,"
            " created_at) VALUES ('k1', 'operator1', 'complaints', 'h', 201, ?, '2026-11-30 10:00:00')",
            (json.dumps(before),),
        )
    upgrade("intake", url)
    with sqlite3.connect(database) as connection:
        (text,) = connection.execute("SELECT response_body FROM idempotency").fetchone()
    after = json.loads(text)
    assert "AB2CD-EF3GH" not in text and "query_secret" not in after
    assert after["query_secret_withheld"] == WITHHELD
    assert {k: v for k, v in after.items() if k != "query_secret_withheld"} == {
        k: v for k, v in before.items() if k != "query_secret"
    }


def test_a_sealed_secret_opens_only_with_its_key_and_for_its_own_row() -> None:
    vault = IdentityVault(os.urandom(32))
    answer = {"id": "c1", "query_secret": "AB2CD-EF3GH"}
    context = "idempotency\x1fcomplaints\x1foperator1\x1fk1"
    stored = idempotency._conceal(
        dict(answer), secret_fields=("query_secret",), sealer=vault, context=context
    )
    assert "AB2CD" not in json.dumps(stored)
    assert idempotency._reveal(json.loads(json.dumps(stored)), sealer=vault, context=context) == answer
    for other_vault, other_context in ((IdentityVault(os.urandom(32)), context), (vault, context + "2")):
        opened = idempotency._reveal(
            json.loads(json.dumps(stored)), sealer=other_vault, context=other_context
        )
        assert opened == {"id": "c1", "query_secret_withheld": WITHHELD}
