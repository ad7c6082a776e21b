"""``Idempotency-Key`` on creates: a retry with the same key and body gets the first answer.

The stored answer is written in the same transaction as the record it
describes, so "created" and "remembered as created" cannot disagree.  The same
key with a different body is a client bug and gets 409.

An answer may hold a secret shown once (intake's query secret): the caller names
those fields and a ``SecretSealer``, and they are stored encrypted, bound to the
key, the account and the endpoint, so a retry still gets the same secret while
the table never holds it in clear.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from fastapi import HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete
from sqlmodel import Column, Field, SQLModel, Text, col
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import UTCDateTime, built_once, new_row, table_of, utcnow
from shared.slice_rows import pending_rows

MAX_KEY_LENGTH = 128
# Where a stored answer keeps its sealed fields: {field: ciphertext}.
SEALED_FIELDS = "_sealed"
# In a replayed answer, beside a secret that can no longer be opened (``<field>_withheld``).
WITHHELD = "已在首次答复中告知；出于安全原因，重试的答复中不再显示"


class SecretSealer(Protocol):
    def seal_text(self, value: str, *, context: str) -> str: ...

    def open_text(self, sealed: str, *, context: str) -> str:
        """The value; ValueError when it does not open (another key, another context)."""
        ...


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency"

    key: str = Field(primary_key=True, max_length=MAX_KEY_LENGTH)
    username: str = Field(primary_key=True, max_length=64)
    endpoint: str = Field(max_length=100)
    request_hash: str = Field(max_length=64)
    status_code: int
    response_body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


def request_fingerprint(body: BaseModel) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@built_once
def _stored_answer_query() -> sa.Select[Any]:
    records = table_of(IdempotencyRecord)
    return sa.select(
        records.c.endpoint, records.c.request_hash, records.c.status_code, records.c.response_body
    ).where(records.c.key == sa.bindparam("key"), records.c.username == sa.bindparam("username"))


def _seal_context(*, key: str, username: str, endpoint: str) -> str:
    # A sealed field copied into another row does not open there.
    return f"idempotency\x1f{endpoint}\x1f{username}\x1f{key}"


def _conceal(body: Any, *, secret_fields: tuple[str, ...], sealer: SecretSealer | None, context: str) -> Any:
    if not secret_fields:
        return body
    if sealer is None or not isinstance(body, dict):
        raise ValueError("secret fields need a sealer and an answer that is an object")
    sealed = {
        name: sealer.seal_text(str(body.pop(name)), context=context)
        for name in secret_fields
        if body.get(name) is not None
    }
    if sealed:
        body[SEALED_FIELDS] = sealed
    return body


def _reveal(body: Any, *, sealer: SecretSealer | None, context: str) -> Any:
    if not isinstance(body, dict) or SEALED_FIELDS not in body:
        return body
    if sealer is None:
        raise ValueError("the stored answer has sealed fields and no sealer was given")
    for name, sealed in body.pop(SEALED_FIELDS).items():
        try:
            body[name] = sealer.open_text(sealed, context=context)
        except ValueError:
            # The key it was sealed with is gone (replaced): the retry is answered without it.
            body[f"{name}_withheld"] = WITHHELD
    return body


async def replay(
    session: AsyncSession,
    *,
    key: str | None,
    username: str,
    endpoint: str,
    fingerprint: str,
    sealer: SecretSealer | None = None,
) -> JSONResponse | None:
    """The stored answer for a repeated key, or None when the request is new.

    ``sealer`` opens the fields ``remember`` stored sealed.
    """
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise HTTPException(
            status_code=422, detail=[{"field": "Idempotency-Key", "message": "幂等键无效（1-128个字符）"}]
        )
    # An earlier request of the same group commit may have used the key and not be flushed yet.
    found: Any = next(
        (r for r in pending_rows(session, IdempotencyRecord) if r.key == key and r.username == username),
        None,
    )
    if found is None:
        # A Core query on the session's connection: the ORM's costs several times the CPU for
        # one row, and nothing of this request is pending that it would have to flush.
        connection = await session.connection()
        found = (await connection.execute(_stored_answer_query(), {"key": key, "username": username})).first()
    if found is None:
        return None
    if found.endpoint != endpoint or found.request_hash != fingerprint:
        raise HTTPException(
            status_code=409,
            detail="同一幂等键（Idempotency-Key）已用于内容不同的请求 / the key was used for a different request",
        )
    content = _reveal(
        json.loads(found.response_body),
        sealer=sealer,
        context=_seal_context(key=key, username=username, endpoint=endpoint),
    )
    return JSONResponse(
        status_code=found.status_code,
        content=content,
        headers={"Idempotent-Replayed": "true"},
    )


def remember(
    session: AsyncSession,
    *,
    key: str | None,
    username: str,
    endpoint: str,
    fingerprint: str,
    status_code: int,
    body: Any,
    secret_fields: tuple[str, ...] = (),
    sealer: SecretSealer | None = None,
) -> None:
    """Store the answer under ``key``; ``secret_fields`` of it are stored sealed by ``sealer``."""
    if key is None:
        return
    # A model (every create's answer) dumps itself as JSON types in one call; jsonable_encoder
    # gives the same dict by walking it again in Python: a complaint's answer took about ten
    # times as long that way (timeit), 1 to 1.4 % of intake's CPU samples (py-spy).
    plain = (
        body.model_dump(mode="json", by_alias=True) if isinstance(body, BaseModel) else jsonable_encoder(body)
    )
    stored = _conceal(
        plain,
        secret_fields=secret_fields,
        sealer=sealer,
        context=_seal_context(key=key, username=username, endpoint=endpoint),
    )
    session.add(
        new_row(
            IdempotencyRecord,
            key=key,
            username=username,
            endpoint=endpoint,
            request_hash=fingerprint,
            status_code=status_code,
            response_body=json.dumps(stored, ensure_ascii=False),
        )
    )


async def purge_expired(session: AsyncSession, *, older_than: datetime) -> int:
    """Forget answers older than the retry window: a client retries in minutes, not months."""
    statement = delete(IdempotencyRecord).where(col(IdempotencyRecord.created_at) < older_than)
    result = await session.exec(statement)
    return int(result.rowcount or 0)
