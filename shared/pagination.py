"""Paging of the list endpoints: a limit, an offset where clients already use one, and a keyset
cursor (``after``) for the long lists, with the total in the response headers.

Bodies stay plain JSON lists (earlier contracts read them as lists); the page's facts travel in
headers: ``X-Total-Count`` (the filtered total), ``X-Next-Cursor`` (absent on the last page) and an
RFC 8288 ``Link: <…&after=…>; rel="next"``.  A cursor is opaque to clients: base64url of the last
row's sort key, so the next page starts after that row however many rows arrived meanwhile.  An
offset walks ever slower on a long list (the database reads and drops the skipped rows); a
cursor seeks through the index of the sort key.

This module deliberately does not use ``from __future__ import annotations``: the dependency's
signature is built per endpoint (its own default and maximum) and FastAPI reads it at run time.
"""

import base64
import binascii
import json
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar, cast

from fastapi import Query, Request, Response
from sqlalchemy import ColumnElement, and_, func, or_, select, tuple_
from sqlalchemy.engine import Row
from sqlalchemy.sql import Select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.errors import FieldProblems
from shared.validation import MAX_OFFSET

TOTAL_HEADER = "X-Total-Count"
NEXT_HEADER = "X-Next-Cursor"
# Exposed to the sibling services' pages through CORS (shared.web).
PAGE_HEADERS = (TOTAL_HEADER, NEXT_HEADER, "Link")
MAX_CURSOR_LENGTH = 1024

_T = TypeVar("_T")
_Q = TypeVar("_Q")


class BadCursor(ValueError):
    pass


def encode_cursor(values: Sequence[object]) -> str:
    """The cursor of a row's sort key: each value tagged with its type, so it decodes to the same."""
    tagged: list[list[object]] = []
    for value in values:
        if isinstance(value, datetime):
            tagged.append(["d", value.isoformat()])
        elif isinstance(value, bool) or value is None:
            tagged.append(["b", value])
        elif isinstance(value, int):
            tagged.append(["i", value])
        else:
            tagged.append(["s", str(value)])
    raw = json.dumps(tagged, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[object, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        tagged = json.loads(raw)
        if not isinstance(tagged, list) or not tagged:
            raise BadCursor("not a list")
        return tuple(_untag(item) for item in tagged)
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError) as exc:
        raise BadCursor(str(exc)) from exc


def _untag(item: object) -> object:
    if not isinstance(item, list) or len(item) != 2:
        raise BadCursor("not a tagged value")
    kind, value = item
    if kind == "d" and isinstance(value, str):
        return datetime.fromisoformat(value)
    if kind == "i" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "s" and isinstance(value, str):
        return value
    if kind == "b" and (value is None or isinstance(value, bool)):
        return value
    raise BadCursor(f"unknown value {kind!r}")


@dataclass(frozen=True)
class Key:
    """One column of a list's sort key; the columns together must be unique and never NULL."""

    column: Any
    descending: bool = False

    @property
    def ordered(self) -> Any:
        return self.column.desc() if self.descending else self.column.asc()


def after_condition(keys: Sequence[Key], values: Sequence[object]) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``keys``.

    One direction throughout: a row-value comparison, which both PostgreSQL and SQLite answer
    from an index on the key.  Mixed directions: the expanded OR of its prefixes.
    """
    if len(keys) != len(values):
        raise BadCursor("cursor of another list")
    if len({k.descending for k in keys}) == 1:
        left = tuple_(*(k.column for k in keys))
        right = tuple_(*values)
        return left < right if keys[0].descending else left > right
    alternatives = []
    for index, key in enumerate(keys):
        equal = [k.column == v for k, v in zip(keys[:index], values[:index], strict=True)]
        beyond = key.column < values[index] if key.descending else key.column > values[index]
        alternatives.append(and_(*equal, beyond))
    return or_(*alternatives)


@dataclass
class Page:
    """One request's paging: what it asked for, and the response whose headers say the rest."""

    limit: int
    offset: int = 0
    after: tuple[object, ...] | None = None
    request: Request | None = None
    response: Response | None = None
    total: int | None = None
    next_cursor: str | None = None
    next_offset: int | None = None

    def keyset(self, selected: _Q, keys: Sequence[Key]) -> _Q:
        """``query`` ordered by ``keys``, after the cursor, one row beyond the page (to know if there is a next)."""
        query: Any = selected
        if self.after is not None:
            try:
                query = query.where(after_condition(keys, self.after))
            except BadCursor as exc:
                raise cursor_problem() from exc
        query = query.order_by(*(k.ordered for k in keys)).limit(self.limit + 1)
        return cast(_Q, query.offset(self.offset) if self.offset else query)

    def window(self, selected: _Q) -> _Q:
        """``query`` (already ordered) cut to the page by offset: for the lists without a cursor."""
        query: Any = selected.limit(self.limit + 1)  # type: ignore[attr-defined]
        return cast(_Q, query.offset(self.offset) if self.offset else query)

    def cut(self, rows: Sequence[_T], key_of: Callable[[_T], Sequence[object]] | None = None) -> list[_T]:
        """The page's rows of the ``limit + 1`` fetched; a next cursor when there were more."""
        page = list(rows[: self.limit])
        if len(rows) > self.limit and page and key_of is not None:
            self.next_cursor = encode_cursor(key_of(page[-1]))
        elif len(rows) > self.limit:
            self.next_offset = self.offset + self.limit
        self._write_headers()
        return page

    async def rows(
        self, session: AsyncSession, query: Any, keys: Sequence[Key], *, counted: Any = None
    ) -> list[Any]:
        """The page of ``query`` by keyset on ``keys``, its next cursor and the total of ``counted``
        (``query`` itself by default).  The cursor's values are read off each row's attributes of
        the keys' names: the row itself, or the first entity of a row of several."""
        names = [key.column.key for key in keys]

        def key_of(row: Any) -> tuple[object, ...]:
            entity = row[0] if isinstance(row, Row) else row
            return tuple(getattr(entity, name) for name in names)

        found = self.cut(list(await session.exec(self.keyset(query, keys))), key_of=key_of)
        await self.count(session, query if counted is None else counted)
        return found

    def counted(self, total: int) -> None:
        """The total when the page's own query counted it (a window over the filtered rows)."""
        self.total = total
        self._write_headers()

    async def count(self, session: AsyncSession, query: Any) -> int:
        """The total of ``query`` as filtered, without its order or paging."""
        self.total = await count_rows(session, query)
        self._write_headers()
        return self.total

    def _write_headers(self) -> None:
        if self.response is None:
            return
        if self.total is not None:
            self.response.headers[TOTAL_HEADER] = str(self.total)
        if self.next_cursor is not None:
            self.response.headers[NEXT_HEADER] = self.next_cursor
            self.response.headers["Link"] = f'<{self._next_url(after=self.next_cursor)}>; rel="next"'
        elif self.next_offset is not None:
            self.response.headers["Link"] = f'<{self._next_url(offset=str(self.next_offset))}>; rel="next"'

    def _next_url(self, **params: str) -> str:
        if self.request is None:
            return "?" + "&".join(f"{k}={v}" for k, v in params.items())
        url = self.request.url.remove_query_params(["after", "offset"])
        return str(url.include_query_params(**params))


async def count_rows(session: AsyncSession, selected: Any) -> int:
    """How many rows ``selected`` gives, its order and paging dropped."""
    query: Select[Any] = selected
    counted = select(func.count()).select_from(query.order_by(None).limit(None).offset(None).subquery())
    return int(await session.scalar(counted) or 0)


def cursor_problem() -> FieldProblems:
    return FieldProblems(
        [("after", "翻页标记无效，请从第一页重新查询", "the cursor is not one of this list's")]
    )


def paging(*, default: int, maximum: int, offset: bool = True) -> Callable[..., Coroutine[Any, Any, Page]]:
    """A dependency for ``limit`` (this endpoint's default and maximum), ``after`` and, where the
    endpoint already took one, ``offset``."""
    limit_type = Annotated[int, Query(ge=1, le=maximum, description="rows to return at most")]
    after_type = Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_LENGTH,
            pattern=r"^[A-Za-z0-9_-]+$",
            description="the X-Next-Cursor of the previous page",
        ),
    ]
    offset_type = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")]

    def decoded(after: str | None) -> tuple[object, ...] | None:
        if after is None:
            return None
        try:
            return decode_cursor(after)
        except BadCursor as exc:
            raise cursor_problem() from exc

    if offset:

        async def with_offset(
            request: Request,
            response: Response,
            limit: limit_type = default,
            after: after_type = None,
            offset: offset_type = 0,
        ) -> Page:
            return Page(limit=limit, offset=offset, after=decoded(after), request=request, response=response)

        return with_offset

    async def without_offset(
        request: Request,
        response: Response,
        limit: limit_type = default,
        after: after_type = None,
    ) -> Page:
        return Page(limit=limit, after=decoded(after), request=request, response=response)

    return without_offset


def page_headers(description: str = "the page") -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a paged list: its headers in the OpenAPI document."""
    return {
        200: {
            "description": description,
            "headers": {
                TOTAL_HEADER: {
                    "description": "how many rows the filters select, over all pages",
                    "schema": {"type": "integer", "minimum": 0},
                },
                NEXT_HEADER: {
                    "description": "pass as `after` for the next page; absent on the last page",
                    "schema": {"type": "string"},
                },
                "Link": {
                    "description": 'RFC 8288 link to the next page (rel="next"); absent on the last page',
                    "schema": {"type": "string"},
                },
            },
        }
    }


def whole(response: Response, rows: list[_T]) -> list[_T]:
    """A short list answered whole (a task's evidence, the teams): only its total in the header."""
    response.headers[TOTAL_HEADER] = str(len(rows))
    return rows
