"""``Idempotency-Key`` on creates: a retry with the same key and body gets the first answer.

The stored answer is written in the same transaction as the record it
describes, so "created" and "remembered as created" cannot disagree.  The same
key with a different body is a client bug and gets 409.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from fastapi import HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete
from sqlmodel import Column, Field, SQLModel, Text, col
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import UTCDateTime, built_once, new_row, pending_rows, table_of, utcnow

MAX_KEY_LENGTH = 128


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


async def replay(
    session: AsyncSession, *, key: str | None, username: str, endpoint: str, fingerprint: str
) -> JSONResponse | None:
    """The stored answer for a repeated key, or None when the request is new."""
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
    return JSONResponse(
        status_code=found.status_code,
        content=json.loads(found.response_body),
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
) -> None:
    if key is None:
        return
    session.add(
        new_row(
            IdempotencyRecord,
            key=key,
            username=username,
            endpoint=endpoint,
            request_hash=fingerprint,
            status_code=status_code,
            response_body=json.dumps(jsonable_encoder(body), ensure_ascii=False),
        )
    )


async def purge_expired(session: AsyncSession, *, older_than: datetime) -> int:
    """Forget answers older than the retry window: a client retries in minutes, not months."""
    statement = delete(IdempotencyRecord).where(col(IdempotencyRecord.created_at) < older_than)
    result = await session.exec(statement)
    return int(result.rowcount or 0)
